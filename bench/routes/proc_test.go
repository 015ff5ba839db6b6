package main

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCPUTime reads this process's CPU clock the way the run reads the
// proxy's, by pid, across a busy loop, and checks it against getrusage,
// which counts the same time: a wrong clock id reads another clock (the
// wall clock, another process's) or fails. The loop runs until getrusage
// has counted 50ms of CPU, so a busy machine only makes it longer.
func TestCPUTime(t *testing.T) {
	rusage := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	r0 := rusage()
	c0, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for x := 0; rusage()-r0 < 50*time.Millisecond; x++ {
		_ = x * x
	}
	c1, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	r1 := rusage()
	clock, ru := c1-c0, r1-r0
	if clock < 40*time.Millisecond || clock > ru+20*time.Millisecond {
		t.Errorf("the CPU clock rose by %v while getrusage rose by %v, want about the same", clock, ru)
	}
}

func TestCPUTimeOfNoProcess(t *testing.T) {
	// Above the kernel's pid_max (4194304 at most): no process has it.
	if _, err := cpuTime(1 << 23); err == nil {
		t.Error("the CPU clock of a pid no process has was read without an error")
	}
}
