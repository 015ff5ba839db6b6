package metrics

import "time"

// SetClock makes m read the time from now, for tests of expiry. Call it
// before m is used.
func SetClock(m *Metrics, now func() time.Time) {
	m.now = func() int64 { return now().UnixNano() }
}

// Caps exported for tests.
const (
	MaxLabelValues = maxLabelValues
	MaxLabelSets   = maxLabelSets
)
