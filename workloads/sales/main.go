// Command sales is the reference Go HTTP service of the memory-limit lab (`make lab`), a
// stand-in for the service of the published experiment: a JSON API over a database.
//
// The "database" is in memory, so that the lab measures the Go runtime and not a
// database's latency: a few MiB of sales rows held as Go structs (strings, slices and a
// map, so the GC has pointers to mark, as in any service with a cache). Each request to
// POST /v1/sales/search decodes a JSON query, reads the customer's rows the way a
// database driver does (each row encoded to bytes and decoded into a fresh struct),
// aggregates them, and encodes a response of about 0.5 KB. A load of a few thousand
// requests leaves a live heap of a few MiB and Sys in the tens of MiB under Go's defaults.
//
// Runtime memory metrics are on GET /debug/vars (the standard library's expvar: memstats
// with HeapAlloc, HeapSys, Sys and NumGC), plus the memory limit and GC percent the
// runtime took from GOMEMLIMIT and GOGC.
//
// Standard library only. Built by hack/build-image.sh go workloads/sales REF.
package main

import (
	"encoding/json"
	"expvar"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"sort"
	"time"
)

// Sale is one row of the database.
type Sale struct {
	ID        string   `json:"id"`
	Customer  string   `json:"customer"`
	Region    string   `json:"region"`
	Product   string   `json:"product"`
	SKU       string   `json:"sku"`
	Quantity  int      `json:"quantity"`
	UnitCents int64    `json:"unitCents"`
	Date      string   `json:"date"`
	Status    string   `json:"status"`
	Tags      []string `json:"tags"`
}

// Customer is what the database knows about a customer.
type Customer struct {
	ID     string
	Name   string
	Region string
	Sales  []*Sale
}

type database struct {
	customers []*Customer
	byID      map[string]*Customer
}

var (
	regions  = []string{"emea", "amer", "apac", "latam"}
	statuses = []string{"paid", "shipped", "delivered", "returned"}
	products = []string{"Keyboard", "Mouse", "Monitor 27in", "Laptop stand", "USB-C dock",
		"Webcam", "Headset", "Desk lamp", "Chair mat", "Cable kit", "SSD 1TB", "Router"}
	tagWords = []string{"promo", "b2b", "gift", "express", "bulk", "renewal", "web", "phone"}
)

// newDatabase fills a database with rows sales spread over customers, deterministically.
func newDatabase(customers, rows int) *database {
	rng := rand.New(rand.NewSource(42))
	db := &database{byID: make(map[string]*Customer, customers)}
	for i := 0; i < customers; i++ {
		c := &Customer{
			ID:     fmt.Sprintf("c-%05d", i),
			Name:   fmt.Sprintf("Customer %d Ltd", i),
			Region: regions[i%len(regions)],
		}
		db.customers = append(db.customers, c)
		db.byID[c.ID] = c
	}
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < rows; i++ {
		c := db.customers[rng.Intn(customers)]
		p := rng.Intn(len(products))
		tags := make([]string, 1+rng.Intn(3))
		for t := range tags {
			tags[t] = tagWords[rng.Intn(len(tagWords))]
		}
		c.Sales = append(c.Sales, &Sale{
			ID:        fmt.Sprintf("s-%08d", i),
			Customer:  c.ID,
			Region:    c.Region,
			Product:   products[p],
			SKU:       fmt.Sprintf("SKU-%03d-%04d", p, rng.Intn(10000)),
			Quantity:  1 + rng.Intn(20),
			UnitCents: int64(500 + rng.Intn(50000)),
			Date:      start.AddDate(0, 0, rng.Intn(730)).Format("2006-01-02"),
			Status:    statuses[rng.Intn(len(statuses))],
			Tags:      tags,
		})
	}
	return db
}

// Query is the body of POST /v1/sales/search. CustomerID is reduced modulo the number of
// customers, so a load generator can send any number.
type Query struct {
	CustomerID int    `json:"customerId"`
	From       string `json:"from"`
	To         string `json:"to"`
	Limit      int    `json:"limit"`
}

// Line is one sale in a result.
type Line struct {
	ID          string `json:"id"`
	Product     string `json:"product"`
	Date        string `json:"date"`
	Quantity    int    `json:"quantity"`
	AmountCents int64  `json:"amountCents"`
}

// Result is the response of POST /v1/sales/search, about 0.5 KB of JSON.
type Result struct {
	Customer   string         `json:"customer"`
	Name       string         `json:"name"`
	Region     string         `json:"region"`
	Orders     int            `json:"orders"`
	Units      int            `json:"units"`
	TotalCents int64          `json:"totalCents"`
	ByStatus   map[string]int `json:"byStatus"`
	Top        []Line         `json:"top"`
}

// search reads the customer's rows as a database driver would hand them over (encoded
// bytes, decoded into fresh structs), keeps those in the date range and aggregates them.
func (db *database) search(q Query) (Result, error) {
	if q.CustomerID < 0 {
		q.CustomerID = -q.CustomerID
	}
	c := db.customers[q.CustomerID%len(db.customers)]
	if q.Limit <= 0 || q.Limit > 10 {
		q.Limit = 3
	}
	res := Result{Customer: c.ID, Name: c.Name, Region: c.Region, ByStatus: map[string]int{}}
	var lines []Line
	for _, stored := range c.Sales {
		row, err := json.Marshal(stored)
		if err != nil {
			return res, err
		}
		var s Sale
		if err := json.Unmarshal(row, &s); err != nil {
			return res, err
		}
		if (q.From != "" && s.Date < q.From) || (q.To != "" && s.Date > q.To) {
			continue
		}
		amount := int64(s.Quantity) * s.UnitCents
		res.Orders++
		res.Units += s.Quantity
		res.TotalCents += amount
		res.ByStatus[s.Status]++
		lines = append(lines, Line{ID: s.ID, Product: s.Product, Date: s.Date,
			Quantity: s.Quantity, AmountCents: amount})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].AmountCents > lines[j].AmountCents })
	if len(lines) > q.Limit {
		lines = lines[:q.Limit]
	}
	res.Top = lines
	return res, nil
}

var requests = expvar.NewInt("requests")

func (db *database) handleSearch(w http.ResponseWriter, r *http.Request) {
	requests.Add(1)
	var q Query
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&q); err != nil {
		http.Error(w, "bad query: "+err.Error(), http.StatusBadRequest)
		return
	}
	res, err := db.search(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(res); err != nil {
		log.Printf("encode: %v", err)
	}
}

func (db *database) handleCustomer(w http.ResponseWriter, r *http.Request) {
	requests.Add(1)
	c, ok := db.byID[r.PathValue("id")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": c.ID, "name": c.Name, "region": c.Region, "sales": len(c.Sales),
	})
}

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	customers := flag.Int("customers", 100, "customers in the database")
	rows := flag.Int("rows", 20000, "sales rows in the database")
	flag.Parse()

	db := newDatabase(*customers, *rows)
	// What the runtime made of GOMEMLIMIT and GOGC, next to expvar's memstats.
	expvar.Publish("runtime", expvar.Func(func() any {
		return map[string]any{
			"goVersion":   runtime.Version(),
			"GOMAXPROCS":  runtime.GOMAXPROCS(0),
			"GOMEMLIMIT":  os.Getenv("GOMEMLIMIT"),
			"GOGC":        os.Getenv("GOGC"),
			"memoryLimit": readMetric("/gc/gomemlimit:bytes"),
			"gcPercent":   readMetric("/gc/gogc:percent"),
		}
	}))
	expvar.Publish("database", expvar.Func(func() any {
		return map[string]int{"customers": *customers, "rows": *rows}
	}))

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sales/search", db.handleSearch)
	mux.HandleFunc("GET /v1/customers/{id}", db.handleCustomer)
	mux.Handle("GET /debug/vars", expvar.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	log.Printf("sales: %d customers, %d rows, listening on %s", *customers, *rows, *addr)
	log.Fatal(srv.ListenAndServe())
}

// readMetric reads one runtime/metrics value (debug.SetGCPercent would change the GC's
// state to read it); -1 when the runtime does not know it.
func readMetric(name string) int64 {
	sample := []metrics.Sample{{Name: name}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return -1
	}
	return int64(sample[0].Value.Uint64())
}
