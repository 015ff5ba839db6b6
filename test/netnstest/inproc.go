package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread that has entered the pod's network namespace.
// Sockets f creates belong to the pod and keep working from any goroutine
// afterwards, so a test can run in-process servers and clients "inside" a
// pod. Goroutines f starts do not inherit the namespace.
func (p *Pod) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is locked for the whole call; it is only handed back
		// to the scheduler once it is in the original namespace again.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(p.NSPath())
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering pod %s: %w", p.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else the goroutine exits locked and the runtime discards the thread
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a TCP listener in the pod.
func (p *Pod) Listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := p.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// DialContext dials from inside the pod, so the connection crosses the
// pod's netfilter OUTPUT chain like an application's would. It fits
// http.Transport.DialContext.
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := p.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
