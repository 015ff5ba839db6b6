// Package origdst recovers the address a client meant to reach before an
// iptables REDIRECT rule sent its connection to the proxy.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST from linux/netfilter_ipv4.h; the IPv6
// variant (IP6T_SO_ORIGINAL_DST) has the same number at level SOL_IPV6.
const soOriginalDst = 80

// ErrNotRedirected is returned for connections netfilter did not redirect,
// for example a client that dialed the proxy's port directly.
var ErrNotRedirected = errors.New("origdst: connection was not redirected by netfilter")

// Lookup returns the original destination of a redirected TCP connection.
func Lookup(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	ipv6 := local != nil && local.IP.To4() == nil
	var dst netip.AddrPort
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		if ipv6 {
			dst, sockErr = lookup6(int(fd))
		} else {
			dst, sockErr = lookup4(int(fd))
		}
	})
	if err == nil {
		err = sockErr
	}
	if errors.Is(err, unix.ENOENT) {
		return netip.AddrPort{}, ErrNotRedirected
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt SO_ORIGINAL_DST: %w", err)
	}
	// Without NAT, conntrack reports the address the socket already has:
	// that is a client talking to the proxy port itself, never a redirect.
	if local != nil && dst == local.AddrPort() {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return dst, nil
}

func lookup4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), networkPort(sa.Port)), nil
}

func lookup6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), networkPort(sa.Port)), nil
}

// networkPort converts a port stored in network byte order in a uint16 field.
func networkPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

func getsockopt(fd, level int, val unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level),
		soOriginalDst, uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
