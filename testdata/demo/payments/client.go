package payments

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// ErrUnavailable wraps every failure to reach the payments server or to
// get its answer, as opposed to a *RefusedError, which is an answer.
var ErrUnavailable = errors.New("payments unavailable")

// Client pays orders over the line protocol, one connection per payment.
// That is the simplest correct client (a reused connection the server
// closed while idle would need a retry, and PAY is not idempotent), and it
// gives the mesh a steady stream of short TCP connections to count. The
// zero value is not usable; Addr is required. Safe for concurrent use.
type Client struct {
	// Addr is the server, e.g. "payments:7070".
	Addr string
	// Timeout bounds one payment when ctx has no earlier deadline; zero
	// means five seconds.
	Timeout time.Duration
}

// Pay charges cents for orderID and returns the transaction id. Errors are
// a *RefusedError when the server said ERR, and wrap ErrUnavailable when it
// could not be reached or answered nonsense.
func (c *Client) Pay(ctx context.Context, orderID string, cents int64) (string, error) {
	req := Request{OrderID: orderID, Cents: cents}
	if err := req.Validate(); err != nil {
		return "", fmt.Errorf("payments: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.Timeout, 5*time.Second))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer conn.Close()
	// The deadline makes reads and writes honor ctx; AfterFunc covers a
	// cancel before it.
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := io.WriteString(conn, req.Format()); err != nil {
		return "", fmt.Errorf("%w: send: %w", ErrUnavailable, ctxErr(ctx, err))
	}
	line, err := bufio.NewReaderSize(conn, MaxLineLen).ReadSlice('\n')
	if err != nil {
		return "", fmt.Errorf("%w: read answer: %w", ErrUnavailable, ctxErr(ctx, err))
	}
	txid, err := ParseResponse(line)
	if errors.Is(err, ErrBadResponse) {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return txid, err
}

// ctxErr returns ctx's error in place of the i/o error it caused. The
// connection's deadline can fire a moment before ctx's own timer, so an
// i/o timeout past ctx's deadline counts as ctx's.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}
