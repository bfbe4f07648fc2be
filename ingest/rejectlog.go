package ingest

import (
	"net"
	"time"

	"github.com/gradient-cdn/gradient/internal/connlimit"
)

// rejectLog lets one "publish rejected" line a minute through per
// server, client address, code and reason (SRT: and stream id): a publisher retrying with a wrong key
// or a scanner must not flood the log (refusals are counted in metrics).
var rejectLog = connlimit.NewEvery(time.Minute)

// hostOf is the host of a "host:port" address.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
