package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Marks at the start of each result line, as in Linkerd's output.
const (
	okMark   = "√"
	warnMark = "‼"
	failMark = "×"
)

// spinnerFrames are drawn in turn while a step runs on a terminal.
var spinnerFrames = []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

// progress prints one line per step. On a terminal a running step shows a
// spinner, what it waits for and the time so far, redrawn in place;
// elsewhere (CI logs, pipes) each change of what it waits for is a line.
// A progress is used from one goroutine; run starts and stops its own.
type progress struct {
	w   io.Writer
	tty bool
	now func() time.Time
}

func newProgress(w io.Writer, now func() time.Time) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), now: now}
}

// line prints a finished line: a mark and a message.
func (p *progress) line(mark, format string, args ...any) {
	fmt.Fprintf(p.w, "%s %s\n", mark, fmt.Sprintf(format, args...))
}

// run runs fn as the step title. fn reports what it is waiting for through
// status (safe to call from any goroutine); the text it returns ends the
// final line. The final line carries the step's duration.
func (p *progress) run(ctx context.Context, title string, fn func(ctx context.Context, status func(string)) (string, error)) error {
	start := p.now()
	var (
		mu     sync.Mutex
		detail string
	)
	status := func(s string) {
		mu.Lock()
		changed := s != detail
		detail = s
		mu.Unlock()
		if changed && !p.tty && s != "" {
			fmt.Fprintf(p.w, "  %s: %s\n", title, s)
		}
	}

	var wg sync.WaitGroup
	spinCtx, stopSpinner := context.WithCancel(ctx)
	if p.tty {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				mu.Lock()
				d := detail
				mu.Unlock()
				text := title
				if d != "" {
					text += ": " + d
				}
				fmt.Fprintf(p.w, "\r\x1b[K%c %s %s", spinnerFrames[i%len(spinnerFrames)], text, elapsed(p.now().Sub(start)))
				select {
				case <-spinCtx.Done():
					fmt.Fprint(p.w, "\r\x1b[K")
					return
				case <-tick.C:
				}
			}
		}()
	}
	result, err := fn(ctx, status)
	stopSpinner()
	wg.Wait()

	took := elapsed(p.now().Sub(start))
	switch {
	case err != nil:
		p.line(failMark, "%s %s", title, took)
	case result != "":
		p.line(okMark, "%s: %s %s", title, result, took)
	default:
		p.line(okMark, "%s %s", title, took)
	}
	return err
}

// elapsed formats a step's duration: tenths of seconds under a minute.
func elapsed(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("(%.1fs)", d.Seconds())
	}
	return "(" + d.Round(time.Second).String() + ")"
}
