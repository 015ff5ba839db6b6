package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// apacheTime is the combined log format's %t.
const apacheTime = "02/Jan/2006:15:04:05 -0700"

// appendHTTPApache writes r as the combined log format's fields (%h %l %u
// %t "%r" %>s %b, the body bytes sent, "-" for none) and then the mesh's
// as key="value" pairs, every client-controlled one quoted and escaped.
func appendHTTPApache(b []byte, r *HTTP) []byte {
	b = appendApacheHead(b, r.Client, r.Start)
	b = append(b, '"')
	b = appendApacheEscaped(b, r.Method)
	b = append(b, ' ')
	b = appendApacheEscaped(b, r.Path)
	b = append(b, ' ')
	b = appendApacheEscaped(b, r.Proto)
	b = append(b, "\" "...)
	if r.Status == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	b = append(b, ' ')
	if r.ResponseBytes == 0 {
		b = append(b, '-') // as %b
	} else {
		b = strconv.AppendInt(b, r.ResponseBytes, 10)
	}
	b = append(b, " direction="...)
	b = append(b, r.Direction...)
	b = appendApachePair(b, "authority", r.Authority)
	b = appendApachePair(b, "client_identity", r.ClientID)
	b = appendApachePair(b, "server_identity", r.ServerID)
	b = appendApachePair(b, "route", routeString(r))
	b = appendApachePair(b, "upstream", r.Upstream)
	b = append(b, " grpc_status="...)
	if r.GRPCStatus < 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendInt(b, int64(r.GRPCStatus), 10)
	}
	b = append(b, " duration_ms="...)
	b = appendMillis(b, r.Duration)
	b = append(b, " request_bytes="...)
	b = strconv.AppendInt(b, r.RequestBytes, 10)
	b = append(b, " retries="...)
	b = strconv.AppendInt(b, int64(r.Retries), 10)
	if r.TraceID != "" {
		b = appendApachePair(b, "trace_id", r.TraceID)
	}
	return b
}

// routeString is kind/namespace/name/rule, "" for no route.
func routeString(r *HTTP) string {
	rt := r.Route
	if rt.Kind == "" {
		return ""
	}
	return rt.Kind + "/" + rt.Namespace + "/" + rt.Name + "/" + rt.Rule
}

// appendTCPApache writes c like an HTTP line whose request is
// "TCP destination", with no status.
func appendTCPApache(b []byte, c *TCP) []byte {
	b = appendApacheHead(b, c.Client, c.Start)
	b = append(b, "\"TCP "...)
	b = appendApacheEscaped(b, c.Destination)
	b = append(b, "\" - "...)
	b = strconv.AppendInt(b, c.ToClient, 10)
	b = append(b, " direction="...)
	b = append(b, c.Direction...)
	b = appendApachePair(b, "client_identity", c.ClientID)
	b = appendApachePair(b, "server_identity", c.ServerID)
	b = append(b, " duration_ms="...)
	b = appendMillis(b, c.Duration)
	b = append(b, " bytes_from_client="...)
	b = strconv.AppendInt(b, c.FromClient, 10)
	b = append(b, " bytes_to_client="...)
	b = strconv.AppendInt(b, c.ToClient, 10)
	return b
}

// appendApacheHead writes %h %l %u %t and a space.
func appendApacheHead(b []byte, client string, t time.Time) []byte {
	if client == "" {
		client = "-"
	}
	b = appendApacheEscaped(b, client)
	b = append(b, " - - ["...)
	b = t.AppendFormat(b, apacheTime)
	return append(b, "] "...)
}

// appendApachePair writes ` key="value"`, "-" for an empty value.
func appendApachePair(b []byte, key, v string) []byte {
	b = append(b, ' ')
	b = append(b, key...)
	b = append(b, "=\""...)
	if v == "" {
		b = append(b, '-')
	} else {
		b = appendApacheEscaped(b, v)
	}
	return append(b, '"')
}

// appendApacheEscaped writes s as Apache's mod_log_config does a request
// line: '"' and '\' behind a backslash, control bytes and any byte past
// ASCII as \xhh, so that a line holds no byte a client chose to end it.
func appendApacheEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendMillis writes d in milliseconds with three decimals.
func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
}

// appendHTTPJSON writes r as one JSON object.
func appendHTTPJSON(b []byte, r *HTTP) []byte {
	b = append(b, `{"time":"`...)
	b = r.Start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"http","direction":`...)
	b = appendJSONString(b, string(r.Direction))
	b = append(b, `,"client":`...)
	b = appendJSONString(b, r.Client)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"authority":`...)
	b = appendJSONString(b, r.Authority)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, r.Path)
	b = append(b, `,"proto":`...)
	b = appendJSONString(b, r.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"grpc_status":`...)
	if r.GRPCStatus < 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(r.GRPCStatus), 10)
	}
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, r.Duration)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendInt(b, r.RequestBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendInt(b, r.ResponseBytes, 10)
	b = append(b, `,"client_identity":`...)
	b = appendJSONString(b, r.ClientID)
	b = append(b, `,"server_identity":`...)
	b = appendJSONString(b, r.ServerID)
	b = append(b, `,"route":`...)
	if r.Route.Kind == "" {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"kind":`...)
		b = appendJSONString(b, r.Route.Kind)
		b = append(b, `,"namespace":`...)
		b = appendJSONString(b, r.Route.Namespace)
		b = append(b, `,"name":`...)
		b = appendJSONString(b, r.Route.Name)
		b = append(b, `,"rule":`...)
		b = appendJSONString(b, r.Route.Rule)
		b = append(b, '}')
	}
	b = append(b, `,"upstream":`...)
	b = appendJSONString(b, r.Upstream)
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(r.Retries), 10)
	if r.TraceID != "" {
		b = append(b, `,"trace_id":`...)
		b = appendJSONString(b, r.TraceID)
	}
	return append(b, '}')
}

// appendTCPJSON writes c as one JSON object; its time is the connection's
// start.
func appendTCPJSON(b []byte, c *TCP) []byte {
	b = append(b, `{"time":"`...)
	b = c.Start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"tcp","direction":`...)
	b = appendJSONString(b, string(c.Direction))
	b = append(b, `,"client":`...)
	b = appendJSONString(b, c.Client)
	b = append(b, `,"destination":`...)
	b = appendJSONString(b, c.Destination)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, c.Duration)
	b = append(b, `,"bytes_from_client":`...)
	b = strconv.AppendInt(b, c.FromClient, 10)
	b = append(b, `,"bytes_to_client":`...)
	b = strconv.AppendInt(b, c.ToClient, 10)
	b = append(b, `,"client_identity":`...)
	b = appendJSONString(b, c.ClientID)
	b = append(b, `,"server_identity":`...)
	b = appendJSONString(b, c.ServerID)
	return append(b, '}')
}

// appendJSONString writes s as a JSON string (RFC 8259 §7): quotes,
// backslashes and control bytes escaped, bytes that are not UTF-8 as
// U+FFFD so that the line stays valid JSON, and U+2028/U+2029 escaped for
// readers that take the line for JavaScript.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
