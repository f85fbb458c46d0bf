// Command pause is the pod sandbox ("pause") container of the end-to-end cluster, a Go
// port of Kubernetes' build/pause/linux/pause.c: containerd starts it first in every pod
// (sandbox_image) to hold the pod's namespaces. It does nothing but wait: SIGINT or
// SIGTERM ends it with status 0, and as PID 1 of the pod's PID namespace (with
// shareProcessNamespace) it reaps orphaned children on SIGCHLD so they do not linger as
// zombies.
//
// Built statically (CGO_ENABLED=0) into an image that holds only /pause, by
// hack/build-image.sh go workloads/pause localhost/gomemlimit-e2e/pause:1 --user 65535.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is what -v prints, like upstream's VERSION.
const version = "gomemlimit-e2e-pause 1"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println(version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}

	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		default:
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
	}
}

// reap collects every child that has exited. Signals coalesce, so one SIGCHLD may stand
// for several children: loop until none is left to wait for.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: the rest are still running
		}
	}
}
