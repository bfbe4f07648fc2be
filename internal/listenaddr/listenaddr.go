// Package listenaddr checks the "host:port" addresses of the config files,
// so that every section refuses a bad one with the same message.
package listenaddr

import (
	"fmt"
	"net"
	"strconv"
)

// Check accepts "host:port" with a port from 0 to 65535 (the host may be
// empty: every interface).
func Check(a string) error {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", a, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port %q", a, port)
	}
	return nil
}
