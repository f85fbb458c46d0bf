// Command load is the load generator of the memory-limit lab (`make lab`): it sends a fixed
// number of HTTP requests at a fixed concurrency to one URL and prints one JSON report
// (req/s, p50, p99 and max latency, errors) on stdout.
//
//	load -url http://10.244.0.7:8080/v1/sales/search -method POST \
//	     -body '{"customerId":{i},"limit":3}' -n 5000 -c 10
//
// "{i}" in the URL or the body becomes the request's number (0 to n-1), so that requests
// differ. Each of the c workers keeps one connection alive and sends its next request as
// soon as the previous answer was read to the end. A request counts as an error when it
// fails, times out (-timeout), answers outside 2xx, or was not sent before the whole run's
// deadline (-deadline): the run is bounded even against a service that stops answering.
// req/s is successful requests over the run's wall time; latencies are those of the
// successful requests.
//
// Standard library only.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Report is what load prints.
type Report struct {
	URL          string         `json:"url"`
	Method       string         `json:"method"`
	Requests     int            `json:"requests"`
	Concurrency  int            `json:"concurrency"`
	OK           int            `json:"ok"`
	Errors       int            `json:"errors"`
	ErrorSamples []string       `json:"errorSamples"`
	Status       map[string]int `json:"status"`
	Seconds      float64        `json:"seconds"`
	RPS          float64        `json:"rps"`
	MeanMs       float64        `json:"meanMs"`
	P50Ms        float64        `json:"p50Ms"`
	P90Ms        float64        `json:"p90Ms"`
	P99Ms        float64        `json:"p99Ms"`
	MaxMs        float64        `json:"maxMs"`
	// Mean size of a successful response body.
	ResponseBytes float64 `json:"responseBytes"`
}

type result struct {
	latency time.Duration
	status  int
	bytes   int64
	err     error
}

func main() {
	url := flag.String("url", "", "URL to send the requests to (required)")
	method := flag.String("method", "GET", "HTTP method")
	body := flag.String("body", "", "request body; sent with Content-Type: application/json")
	n := flag.Int("n", 1000, "number of requests")
	c := flag.Int("c", 10, "concurrent requests")
	timeout := flag.Duration("timeout", 10*time.Second, "timeout of one request")
	deadline := flag.Duration("deadline", 2*time.Minute, "deadline of the whole run")
	flag.Parse()
	if *url == "" || *n < 1 || *c < 1 {
		fmt.Fprintln(os.Stderr, "usage: load -url URL [-method M] [-body JSON] [-n N] [-c C] [-timeout D] [-deadline D]")
		os.Exit(2)
	}
	if *c > *n {
		*c = *n
	}
	report := run(*url, strings.ToUpper(*method), *body, *n, *c, *timeout, *deadline)
	out, _ := json.Marshal(report)
	fmt.Println(string(out))
	fmt.Fprintf(os.Stderr, "load: %d requests, %d ok, %d errors in %.2fs: %.1f req/s, p50 %.2fms, p99 %.2fms, max %.2fms\n",
		report.Requests, report.OK, report.Errors, report.Seconds, report.RPS, report.P50Ms, report.P99Ms, report.MaxMs)
}

func run(url, method, body string, n, c int, timeout, deadline time.Duration) Report {
	transport := &http.Transport{
		MaxIdleConnsPerHost: c,
		MaxConnsPerHost:     c,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: timeout}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	results := make([]result, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if ctx.Err() != nil {
					results[i] = result{err: errors.New("not sent before the deadline")}
					continue
				}
				results[i] = one(ctx, client, method, url, body, i)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	transport.CloseIdleConnections()
	return summarize(url, method, n, c, elapsed, results)
}

func one(ctx context.Context, client *http.Client, method, url, body string, i int) result {
	num := strconv.Itoa(i)
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(strings.ReplaceAll(body, "{i}", num))
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.ReplaceAll(url, "{i}", num), reader)
	if err != nil {
		return result{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	t := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	read, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r := result{latency: time.Since(t), status: resp.StatusCode, bytes: read}
	if err != nil {
		r.err = err
	} else if resp.StatusCode < 200 || resp.StatusCode > 299 {
		r.err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return r
}

func summarize(url, method string, n, c int, elapsed time.Duration, results []result) Report {
	rep := Report{URL: url, Method: method, Requests: n, Concurrency: c, Status: map[string]int{},
		ErrorSamples: []string{}, Seconds: elapsed.Seconds()}
	var lat []float64
	var bytes int64
	for _, r := range results {
		if r.status != 0 {
			rep.Status[strconv.Itoa(r.status)]++
		}
		if r.err != nil {
			rep.Errors++
			if len(rep.ErrorSamples) < 3 {
				rep.ErrorSamples = append(rep.ErrorSamples, r.err.Error())
			}
			continue
		}
		rep.OK++
		bytes += r.bytes
		lat = append(lat, float64(r.latency)/float64(time.Millisecond))
	}
	if rep.Seconds > 0 {
		rep.RPS = float64(rep.OK) / rep.Seconds
	}
	if len(lat) > 0 {
		sort.Float64s(lat)
		sum := 0.0
		for _, l := range lat {
			sum += l
		}
		rep.MeanMs = sum / float64(len(lat))
		rep.P50Ms = quantile(lat, 0.50)
		rep.P90Ms = quantile(lat, 0.90)
		rep.P99Ms = quantile(lat, 0.99)
		rep.MaxMs = lat[len(lat)-1]
		rep.ResponseBytes = float64(bytes) / float64(len(lat))
	}
	return rep
}

// quantile of sorted values, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return sorted[rank]
}
