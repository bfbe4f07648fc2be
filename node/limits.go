package node

import (
	"bytes"
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

// refuseHTTP answers a connection beyond its client's limit: it reads the
// request head first (within the refusal's 1 s deadline; a client such as
// Go's takes an answer that comes before its request for a broken
// connection), answers 429, half-closes and reads what else the client
// sent, since closing with its request unread would reset the connection
// and the client might lose the answer.
func refuseHTTP(c net.Conn) {
	head := make([]byte, 0, 4096)
	buf := make([]byte, 1024)
	for len(head) < 16<<10 && !bytes.Contains(head, []byte("\r\n\r\n")) {
		k, err := c.Read(buf)
		head = append(head, buf[:k]...)
		if err != nil {
			break
		}
	}
	io.WriteString(c, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 45\r\n\r\ntoo many connections from this client address")
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
