// Package connlimit bounds the connections one remote IP may hold open on
// a listener, and the rate at which one client may start costly work.
package connlimit

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the limit of a Listener.
type Config struct {
	// PerIP is the most connections one remote IP may hold open at once;
	// 0 or less: no limit.
	PerIP int
	// PerLoopback is the limit for loopback addresses (127.0.0.0/8, ::1):
	// local tools, a reverse proxy on the same host and tests come from
	// there. 0 or less: no limit.
	PerLoopback int
	// Refuse, when set, is given a refused connection before it is closed
	// (to write a protocol's "too many" answer); it must not block long:
	// the connection has a 1 s write deadline.
	Refuse func(net.Conn)
	// Log gets one line per refused IP a minute. Default slog.Default().
	Log *slog.Logger
	// What names the listener in the log ("http", "rtsp").
	What string
}

// Listener is a net.Listener that closes a remote IP's connections beyond
// its limit as soon as they are accepted.
type Listener struct {
	net.Listener
	cfg      Config
	mu       sync.Mutex
	open     map[string]int
	logged   *Every
	refused  atomic.Int64
	refusing atomic.Int32
}

// maxRefusing bounds the refusals being answered at once.
const maxRefusing = 256

// Wrap returns ln bounded by cfg.
func Wrap(ln net.Listener, cfg Config) *Listener {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Listener{Listener: ln, cfg: cfg, open: map[string]int{}, logged: NewEvery(time.Minute)}
}

// Refused is how many connections were closed for their IP's limit.
func (l *Listener) Refused() int64 { return l.refused.Load() }

// Open is how many connections ip holds open.
func (l *Listener) Open(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[ip]
}

// Accept returns the next connection within its IP's limit.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, limit := l.limitOf(c.RemoteAddr())
		if limit <= 0 {
			return c, nil
		}
		l.mu.Lock()
		n := l.open[ip]
		if n >= limit {
			l.mu.Unlock()
			l.refuse(c, ip, limit)
			continue
		}
		l.open[ip] = n + 1
		l.mu.Unlock()
		return &conn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *Listener) limitOf(a net.Addr) (string, int) {
	host := a.String()
	if ta, ok := a.(*net.TCPAddr); ok {
		if ta.IP.IsLoopback() {
			return ta.IP.String(), l.cfg.PerLoopback
		}
		return ta.IP.String(), l.cfg.PerIP
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return host, l.cfg.PerLoopback
	}
	return host, l.cfg.PerIP
}

func (l *Listener) refuse(c net.Conn, ip string, limit int) {
	l.refused.Add(1)
	if l.logged.Allow(ip) {
		l.cfg.Log.Warn("connection refused: too many from one address", "listener", l.cfg.What, "ip", ip, "limit", limit)
	}
	// Answer without holding up Accept; at most maxRefusing answers at
	// once, so that a flood of connections costs bounded goroutines
	// (beyond, a connection is closed unanswered).
	if l.cfg.Refuse == nil || l.refusing.Add(1) > maxRefusing {
		if l.cfg.Refuse != nil {
			l.refusing.Add(-1)
		}
		c.Close()
		return
	}
	go func() {
		defer l.refusing.Add(-1)
		c.SetDeadline(time.Now().Add(time.Second))
		l.cfg.Refuse(c)
		c.Close()
	}()
}

func (l *Listener) release(ip string) {
	l.mu.Lock()
	if l.open[ip] <= 1 {
		delete(l.open, ip)
	} else {
		l.open[ip]--
	}
	l.mu.Unlock()
}

// conn gives its IP's place back once, when closed.
type conn struct {
	net.Conn
	l    *Listener
	ip   string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}

// NetConn is the wrapped connection (for callers that look for a
// *net.TCPConn underneath).
func (c *conn) NetConn() net.Conn { return c.Conn }

// Every says yes to a key at most once per interval: a rate-limited
// log line per client.
type Every struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	last  map[string]time.Time
}

// NewEvery returns an Every of interval d.
func NewEvery(d time.Duration) *Every {
	return &Every{every: d, now: time.Now, last: map[string]time.Time{}}
}

// Allow reports whether key has not been allowed within the interval,
// and if so counts this time.
func (e *Every) Allow(key string) bool {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if t, ok := e.last[key]; ok && now.Sub(t) < e.every {
		return false
	}
	if len(e.last) >= 10000 {
		for k, t := range e.last {
			if now.Sub(t) >= e.every {
				delete(e.last, k)
			}
		}
	}
	e.last[key] = now
	return true
}

// Rate lets each key start at most N things per window (a fixed window
// per key): a client may cause that many rendition starts a minute.
type Rate struct {
	n      int
	window time.Duration
	now    func() time.Time
	mu     sync.Mutex
	keys   map[string]*bucket
}

type bucket struct {
	start time.Time
	used  int
}

// NewRate returns a Rate of n per window; n <= 0 allows everything.
func NewRate(n int, window time.Duration) *Rate {
	return &Rate{n: n, window: window, now: time.Now, keys: map[string]*bucket{}}
}

// Take counts one start for key and reports whether it is within the rate.
func (r *Rate) Take(key string) bool {
	if r.n <= 0 {
		return true
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.keys[key]
	if b == nil || now.Sub(b.start) >= r.window {
		if len(r.keys) >= 10000 {
			for k, o := range r.keys {
				if now.Sub(o.start) >= r.window {
					delete(r.keys, k)
				}
			}
		}
		b = &bucket{start: now}
		r.keys[key] = b
	}
	if b.used >= r.n {
		return false
	}
	b.used++
	return true
}
