// Command pause is the sandbox ("infra") container of the local cluster's real node: it holds a
// pod's namespaces and does nothing else until it is told to stop. Kubernetes' own pause image
// cannot be pulled here (no registry), so the node runs this one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	// As PID 1 of its namespace it gets no default signal handling: exit on these explicitly.
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
