//go:build race

package httpproxy

// raceEnabled: the race detector drops sync.Pool items at random, so
// tests of pooling skip.
const raceEnabled = true
