package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/mesh-dev/mesh/install/image"
)

// A cold build of Kubernetes takes about 11 minutes on 2 cores (640 s
// measured, of 684 s for a first `make demo`). buildWatch shows how far it
// is: packages compiled of those to compile, elapsed time, the package at
// hand, on a line rewritten every second on a terminal and printed every
// 10 s otherwise (a log file).
const (
	tickTerminal = time.Second
	tickLog      = 10 * time.Second
)

// runBuildWithProgress runs the go command args (a `go build`) in gb's
// setup with -v, which names each package as the go command starts to
// compile it, and reports progress to pr. It first asks `go list` which
// packages are stale, the ones the build will compile: the total. every is
// how often to report; zero means each second on a terminal, else 10 s.
func runBuildWithProgress(ctx context.Context, gb image.GoBuild, pr *progress, what string, args []string, every time.Duration) error {
	w := &buildWatch{pr: pr, what: what, start: time.Now(), terminal: isTerminal(pr.w), period: every}
	if w.period == 0 {
		w.period = tickLog
		if w.terminal {
			w.period = tickTerminal
		}
	}
	stop := w.every(func() string { return "resolving packages (a first run downloads the modules)" })
	total, err := stalePackages(ctx, gb, args)
	stop()
	if err != nil {
		return err
	}
	w.total = total
	build := append([]string{args[0], "-v"}, args[1:]...)
	cmd := gb.Command(ctx, build...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	stop = w.every(w.status)
	tail := w.read(stderr)
	err = cmd.Wait()
	stop()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(build, " "), err, strings.Join(tail, "\n"))
	}
	return nil
}

// stalePackages counts the packages the build args would compile: `go
// list -deps` with the same flags, keeping the stale ones (not in the
// build cache).
func stalePackages(ctx context.Context, gb image.GoBuild, args []string) (int, error) {
	list := []string{"list", "-deps", "-f", "{{if .Stale}}{{.ImportPath}}{{end}}"}
	var pkgs []string
	for i := 1; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o":
			i++ // the output directory: not a go list flag
		case a == "-tags" || a == "-ldflags":
			list = append(list, a, args[i+1])
			i++
		case strings.HasPrefix(a, "-"):
			list = append(list, a)
		default:
			pkgs = append(pkgs, a)
		}
	}
	out, err := gb.Command(ctx, append(list, pkgs...)...).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(interface{ Stderr() []byte }); ok {
			msg = string(ee.Stderr())
		}
		return 0, fmt.Errorf("go %s: %s", strings.Join(list, " "), msg)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// buildWatch follows a `go build -v`.
type buildWatch struct {
	pr       *progress
	what     string
	start    time.Time
	terminal bool
	period   time.Duration
	total    int

	mu      sync.Mutex
	done    int
	current string
}

// read consumes the go command's output: each line naming a package is one
// more package under way; the last lines are kept for an error message.
func (w *buildWatch) read(r io.Reader) []string {
	var tail []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		tail = append(tail, line)
		if len(tail) > 40 {
			tail = tail[1:]
		}
		if line == "" || strings.ContainsAny(line, " \t:#") {
			continue // compiler errors and their "# pkg" headers
		}
		w.mu.Lock()
		w.done++
		w.current = line
		w.mu.Unlock()
	}
	return tail
}

func (w *buildWatch) status() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done >= w.total {
		// Every package the go command named is compiled, or the build
		// cache had them all: what is left is linking.
		return fmt.Sprintf("%d/%d packages compiled; linking the binaries", w.done, w.total)
	}
	pct := 0
	if w.total > 0 {
		pct = 100 * w.done / w.total
	}
	return fmt.Sprintf("%d/%d packages (%d%%), now %s", w.done, w.total, pct, w.current)
}

// every reports msg() each w.period until stop is called: on a terminal
// by rewriting one line, else a line each time.
func (w *buildWatch) every(msg func() string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(w.period)
		defer t.Stop()
		for {
			select {
			case <-done:
				if w.terminal {
					fmt.Fprint(w.pr.w, "\r\033[K") // the step's own line follows
				}
				return
			case <-t.C:
				line := fmt.Sprintf("[%5.1fs] %s: %s, %s", time.Since(w.pr.start).Seconds(), w.what, msg(), elapsed(time.Since(w.start)))
				if w.terminal {
					if width, _, err := term.GetSize(int(w.pr.w.(*os.File).Fd())); err == nil && width > 1 && len(line) >= width {
						line = line[:width-1]
					}
					fmt.Fprint(w.pr.w, "\r\033[K"+line)
				} else {
					fmt.Fprintln(w.pr.w, line)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// elapsed is d as 4m05s.
func elapsed(d time.Duration) string {
	s := int(d.Seconds())
	return fmt.Sprintf("%dm%02ds elapsed", s/60, s%60)
}
