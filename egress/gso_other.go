//go:build !linux

package egress

import (
	"errors"
	"net"
)

// UDP_SEGMENT is Linux's: elsewhere every datagram is sent on its own.

var gsoCmsgSpace = 0

func gsoProbe(*net.UDPConn) error { return errors.ErrUnsupported }

func putGSOCmsg(b []byte, seg int) []byte { return nil }

func gsoRefused(error) bool { return true }
