// Command pause is the sandbox ("infra") container of every pod in the local
// cluster: containerd starts it first to hold the pod's namespaces. It sleeps
// until SIGTERM or SIGINT, and reaps orphaned children when it is PID 1 of a
// pod that shares its PID namespace, like Kubernetes' own pause.c.
//
// It is a static Go binary so that install/image can wrap it FROM scratch;
// no registry is reachable from the test machines (shared/notes/local-cluster.md).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("pause (mesh local cluster)")
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	// From here a signal ends it cleanly; saying so lets a test (or a
	// reader of the container log) know it is past the runtime's defaults.
	fmt.Println("pause: waiting for SIGTERM or SIGINT")
	// A child that exited before Notify took effect sent its SIGCHLD to
	// nobody: collect it now or it stays a zombie until the next one.
	reap()
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		// A signal is the normal way a sandbox ends: exit 0 like pause.c.
		os.Exit(0)
	}
}

// reap collects every exited child without blocking; one SIGCHLD may stand
// for several exits.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
