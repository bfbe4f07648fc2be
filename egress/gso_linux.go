//go:build linux

package egress

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoCmsgSpace is the room one UDP_SEGMENT control message takes.
var gsoCmsgSpace = unix.CmsgSpace(2)

// gsoProbe tells whether the socket takes UDP_SEGMENT (Linux 4.18+): nil
// if it does.
func gsoProbe(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return err
	}
	return serr
}

// putGSOCmsg writes a UDP_SEGMENT control message with segment size seg
// into b, whose capacity is at least gsoCmsgSpace, and returns it.
func putGSOCmsg(b []byte, seg int) []byte {
	b = b[:gsoCmsgSpace]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(seg))
	return b
}

// gsoRefused tells whether a send error of a GSO message means the kernel,
// the socket or the route does not do UDP segmentation (EIO: no checksum
// offload on the device; EINVAL: segment too large for the route, or
// no-checksum socket; ENOPROTOOPT / EOPNOTSUPP: no UDP_SEGMENT at all).
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP)
}
