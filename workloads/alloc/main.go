// Command workload is a stand-in Go service for the memory-limit experiment: it keeps a
// live set of buffers and keeps replacing them, the allocation pattern of a service that
// builds responses while holding a cache. Under a cgroup memory limit below twice the
// live set, the default GOGC=100 lets the heap outgrow the limit and the kernel kills the
// process; with GOMEMLIMIT at the limit and GOGC=off the GC collects in time.
//
// Its defaults are the experiment the tests run under a 64 MiB limit: a 40 MiB live set
// (GOGC=100's heap target, twice that, is a quarter above the limit) and 256 MiB allocated
// at 128 MiB/s, a busy service that a 100 % GOMEMLIMIT keeps alive even when it is starved
// of CPU (faster allocation can overshoot it then: the limit is soft).
//
// It prints one JSON line with what happened, for the test to read: the GOMEMLIMIT and GOGC
// it was given, and the limit and GC percent the runtime took from them.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"
)

// How far allocation may fall behind its schedule before the schedule moves instead.
const maxLag = 10 * time.Millisecond

func main() {
	liveMiB := flag.Int("live-mib", 40, "live set, in MiB")
	allocMiB := flag.Int("alloc-mib", 256, "MiB allocated while running")
	objectKiB := flag.Int("object-kib", 64, "size of each buffer, in KiB")
	rate := flag.Int("rate-mib", 128, "allocation rate in MiB/s (0: as fast as possible)")
	wait := flag.Bool("wait", false, "after the report, wait for SIGTERM or SIGINT (a long-running service)")
	flag.Parse()

	rng := rand.New(rand.NewSource(1))
	perMiB := 1024 / *objectKiB
	live := make([][]byte, *liveMiB*perMiB)
	iterations := *allocMiB * perMiB
	start := time.Now()
	// The pacing schedule's origin: start, moved later by every stall longer than maxLag.
	paced := start
	fill := func() []byte {
		b := make([]byte, *objectKiB<<10)
		// Touch every page, so the memory is resident and the cgroup counts it.
		for i := 0; i < len(b); i += 4096 {
			b[i] = byte(i)
		}
		return b
	}
	for i := range live {
		live[i] = fill()
	}
	for i := 0; i < iterations; i++ {
		live[rng.Intn(len(live))] = fill()
		// Pace allocation like a service under steady load, not a tight loop. Time lost to
		// being descheduled is not made up afterwards: catching up would be a burst at full
		// speed, a tight loop after every stall on a busy machine.
		if *rate > 0 && i%perMiB == 0 {
			due := time.Duration(float64(i/perMiB) / float64(*rate) * float64(time.Second))
			ahead := due - time.Since(paced)
			if ahead > 0 {
				time.Sleep(ahead)
			} else if ahead < -maxLag {
				paced = paced.Add(-ahead)
			}
		}
	}
	elapsed := time.Since(start)

	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	out, _ := json.Marshal(map[string]any{
		"allocatedMiB": *allocMiB,
		"seconds":      elapsed.Seconds(),
		"numGC":        stats.NumGC,
		"sysBytes":     stats.Sys,
		"heapSysBytes": stats.HeapSys,
		"GOMEMLIMIT":   os.Getenv("GOMEMLIMIT"),
		"GOGC":         os.Getenv("GOGC"),
		"memoryLimit":  debug.SetMemoryLimit(-1),
		"gcPercent":    debug.SetGCPercent(-1),
	})
	fmt.Fprintln(os.Stdout, string(out))
	if *wait {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		<-signals
	}
}
