package payments

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    Request
		wantErr error
	}{
		{name: "plain", line: "PAY ord-1 1299\n", want: Request{OrderID: "ord-1", Cents: 1299}},
		{name: "CRLF", line: "PAY ord-1 1299\r\n", want: Request{OrderID: "ord-1", Cents: 1299}},
		{name: "no line ending", line: "PAY a 1", want: Request{OrderID: "a", Cents: 1}},
		{name: "id characters", line: "PAY A.b_c-9 5\n", want: Request{OrderID: "A.b_c-9", Cents: 5}},
		{name: "max amount", line: "PAY o 100000000000\n", want: Request{OrderID: "o", Cents: MaxCents}},
		{name: "max id", line: "PAY " + strings.Repeat("x", 64) + " 1\n", want: Request{OrderID: strings.Repeat("x", 64), Cents: 1}},

		{name: "empty", line: "\n", wantErr: ErrUnknownCommand},
		{name: "lower case", line: "pay o 1\n", wantErr: ErrUnknownCommand},
		{name: "HTTP", line: "GET / HTTP/1.1\r\n", wantErr: ErrUnknownCommand},
		{name: "missing amount", line: "PAY o\n", wantErr: ErrSyntax},
		{name: "extra field", line: "PAY o 1 2\n", wantErr: ErrSyntax},
		{name: "double space", line: "PAY  o 1\n", wantErr: ErrSyntax},
		{name: "tab", line: "PAY\to 1\n", wantErr: ErrUnknownCommand},
		{name: "id too long", line: "PAY " + strings.Repeat("x", 65) + " 1\n", wantErr: ErrBadOrderID},
		{name: "id with slash", line: "PAY a/b 1\n", wantErr: ErrBadOrderID},
		{name: "zero", line: "PAY o 0\n", wantErr: ErrBadAmount},
		{name: "leading zero", line: "PAY o 012\n", wantErr: ErrBadAmount},
		{name: "negative", line: "PAY o -5\n", wantErr: ErrBadAmount},
		{name: "plus sign", line: "PAY o +5\n", wantErr: ErrBadAmount},
		{name: "underscore digits", line: "PAY o 1_000\n", wantErr: ErrBadAmount},
		{name: "hex", line: "PAY o 0x1f\n", wantErr: ErrBadAmount},
		{name: "over max", line: "PAY o 100000000001\n", wantErr: ErrBadAmount},
		{name: "13 digits", line: "PAY o 1000000000000\n", wantErr: ErrBadAmount},
		{name: "CR inside", line: "PAY o 1\r\r\n", wantErr: ErrBadAmount},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tc.line))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ParseRequest(%q) error = %v, want %v", tc.line, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseRequest(%q) (-want +got):\n%s", tc.line, diff)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name       string
		line       string
		wantTxID   string
		wantReason string // a *RefusedError with this reason
		wantBad    bool   // ErrBadResponse
	}{
		{name: "ok", line: "OK tx-1\n", wantTxID: "tx-1"},
		{name: "ok CRLF", line: "OK tx-1\r\n", wantTxID: "tx-1"},
		{name: "err", line: "ERR unavailable\n", wantReason: "unavailable"},
		{name: "err with spaces", line: "ERR syntax: want PAY\n", wantReason: "syntax: want PAY"},
		{name: "ok without id", line: "OK \n", wantBad: true},
		{name: "ok with two ids", line: "OK a b\n", wantBad: true},
		{name: "err without reason", line: "ERR\n", wantBad: true},
		{name: "garbage", line: "HTTP/1.1 400 Bad Request\r\n", wantBad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			txid, err := ParseResponse([]byte(tc.line))
			var refused *RefusedError
			switch {
			case tc.wantBad:
				if !errors.Is(err, ErrBadResponse) {
					t.Errorf("ParseResponse(%q) = %q, %v; want ErrBadResponse", tc.line, txid, err)
				}
			case tc.wantReason != "":
				if !errors.As(err, &refused) || refused.Reason != tc.wantReason {
					t.Errorf("ParseResponse(%q) = %q, %v; want refused %q", tc.line, txid, err, tc.wantReason)
				}
			case err != nil || txid != tc.wantTxID:
				t.Errorf("ParseResponse(%q) = %q, %v; want %q", tc.line, txid, err, tc.wantTxID)
			}
		})
	}
}

// FuzzPaymentLine feeds arbitrary bytes to the request parser and to the
// server's answer for a line. Run it with
//
//	go test -run '^$' -fuzz FuzzPaymentLine ./testdata/demo/payments
//
// It checks that parsing never panics, that every valid request formats
// back to a line that parses to the same request, and that every answer is
// exactly one well-formed response line.
func FuzzPaymentLine(f *testing.F) {
	seeds := []string{
		"PAY ord-1 1299\n",           // a valid request
		"PAY ord-1 1299\r\n",         // CRLF line ending
		"PAY o 100000000000\n",       // the largest amount
		"PAY o 100000000001\n",       // one cent over it
		"PAY o 0\n",                  // zero amount
		"PAY o 007\n",                // leading zeros: a second spelling of 7
		"PAY o -1\n",                 // negative
		"PAY o 1 2\n",                // an extra field
		"PAY  o 1\n",                 // an empty field
		"PAY o\n",                    // a missing field
		"PAY \xff\xfe 1\n",           // invalid UTF-8 in the id
		"PAY o 1\x00\n",              // a NUL byte
		"GET / HTTP/1.1\r\n",         // HTTP sent to the wrong port
		"\x16\x03\x01\x00\xa5\x01\n", // the start of a TLS ClientHello
		"",                           // nothing at all
		"\n",                         // an empty line
		"\r\n",                       // a bare CRLF
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	s := newServer(Config{})
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err == nil {
			if err := req.Validate(); err != nil {
				t.Fatalf("%q parsed to %+v, which Validate rejects: %v", line, req, err)
			}
			again, err := ParseRequest([]byte(req.Format()))
			if err != nil || again != req {
				t.Fatalf("%q parsed to %+v, whose Format %q parses to %+v, %v", line, req, req.Format(), again, err)
			}
		}
		answer := s.answer(t.Context(), line, s.log)
		if strings.Count(answer, "\n") != 1 || !strings.HasSuffix(answer, "\n") {
			t.Fatalf("answer to %q is not one line: %q", line, answer)
		}
		txid, err := ParseResponse([]byte(answer))
		var refused *RefusedError
		if (err == nil) != (txid != "") || (err != nil && !errors.As(err, &refused)) {
			t.Fatalf("answer to %q = %q, which parses to %q, %v", line, answer, txid, err)
		}
	})
}
