package node

import (
	"io"
	"net"
	"time"

	"github.com/gradient-cdn/gradient/internal/connlimit"
)

// buildLimits makes the per-client rendition start budget.
func (n *Node) buildLimits() {
	if m := n.cfg.Serverlets.MaxStartsPerClient; m > 0 {
		n.starts = connlimit.NewRate(m, time.Minute)
		n.startsLogged = connlimit.NewEvery(time.Minute)
	}
}

// httpListener bounds ln's connections per client address.
func (n *Node) httpListener(ln net.Listener) net.Listener {
	cfg := n.cfg
	if cfg.HTTPMaxConnsPerIP > 0 {
		lc := connlimit.Config{PerIP: cfg.HTTPMaxConnsPerIP, Log: n.log, What: "http", Refuse: refuseHTTP}
		if cfg.LimitLoopback {
			lc.PerLoopback = cfg.HTTPMaxConnsPerIP
		}
		if cfg.HTTPTLSCert != "" {
			lc.Refuse = nil // a TLS client cannot read a plain answer
		}
		ln = connlimit.Wrap(ln, lc)
	}
	return ln
}

// refuseHTTP answers a connection beyond its client's limit.
func refuseHTTP(c net.Conn) {
	io.WriteString(c, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 45\r\n\r\ntoo many connections from this client address")
	// Half-close and read what the client sent (within the refusal's
	// deadline): closing with its request unread would reset the
	// connection, and the client might lose the answer.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

func (n *Node) httpScheme() string {
	if n.cfg.HTTPTLSCert != "" {
		return "https"
	}
	return "http"
}
