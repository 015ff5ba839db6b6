package cluster

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A descriptor inherited without close-on-exec (as flock(1) hands its lock
// to the command it runs) must not reach the components.
func TestInheritedDescriptorsAreNotPassedOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	fd, err := syscall.Open(path, syscall.O_CREAT|syscall.O_RDWR, 0o600) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	childHas := func() bool {
		return exec.Command("sh", "-c", fmt.Sprintf("test -e /proc/self/fd/%d", fd)).Run() == nil
	}
	if !childHas() {
		t.Fatalf("a child did not inherit descriptor %d before the fix: the test proves nothing", fd)
	}
	markInheritedCloseOnExec("/proc/self/fd")
	if childHas() {
		t.Errorf("a child still inherits descriptor %d", fd)
	}
}
