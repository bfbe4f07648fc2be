// Package dashboard is the node's live view of the cluster: an event
// broker that streams the members, every stream's delivery plan (with the
// MST and naive baselines on the same demand), demand and per-node load
// to browsers as Server-Sent Events (GET /api/v1/events), and the page
// at GET / that draws them with cytoscape.
//
// The broker keeps the last message of every kind ("members", "demand",
// "load", and "plan" per stream); a client gets them all on connect (the
// snapshot), then each change as it is made. Membership changes (a plan
// arriving by gossip, a member dying) are pushed by the membership's
// Subscribe channel, so a new plan reaches the page as soon as it reaches
// the node. Every client has a bounded queue: a client that does not keep
// up is dropped, the node never waits for it.
package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Config tunes the broker. Zero fields take DefaultConfig's values.
type Config struct {
	// MaxClients caps the concurrent event streams; more get 503.
	MaxClients int `yaml:"max_clients"`
	// QueueLen is how many events a client may lag behind before it is
	// dropped.
	QueueLen int `yaml:"queue_len"`
	// Heartbeat is the interval of the SSE comment that keeps idle
	// connections (and proxies) open.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// LoadInterval is how often the per-node load is collected while a
	// client is connected.
	LoadInterval time.Duration `yaml:"load_interval"`
	// DemoURL, when set, makes the page show a "kill" button per node
	// that POSTs DemoURL + "/kill?node=NAME" (served by `gradient demo`).
	DemoURL string `yaml:"demo_url"`
}

// DefaultConfig is the broker's default configuration.
func DefaultConfig() Config {
	return Config{MaxClients: 64, QueueLen: 256, Heartbeat: 15 * time.Second, LoadInterval: 2 * time.Second}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxClients == 0 {
		c.MaxClients = d.MaxClients
	}
	if c.QueueLen == 0 {
		c.QueueLen = d.QueueLen
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = d.Heartbeat
	}
	if c.LoadInterval == 0 {
		c.LoadInterval = d.LoadInterval
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.MaxClients < 0:
		return fmt.Errorf("max_clients: %d is negative", c.MaxClients)
	case c.QueueLen < 0:
		return fmt.Errorf("queue_len: %d is negative", c.QueueLen)
	case c.Heartbeat < 0:
		return fmt.Errorf("heartbeat: %v is negative", c.Heartbeat)
	case c.LoadInterval < 0:
		return fmt.Errorf("load_interval: %v is negative", c.LoadInterval)
	}
	if c.DemoURL != "" && !(bytes.HasPrefix([]byte(c.DemoURL), []byte("http://")) || bytes.HasPrefix([]byte(c.DemoURL), []byte("https://"))) {
		return fmt.Errorf("demo_url: %q is not an http:// or https:// URL", c.DemoURL)
	}
	return nil
}

// ErrTooManyClients is returned (as 503) beyond Config.MaxClients.
var ErrTooManyClients = errors.New("too many dashboard event clients")

// message is one SSE event, encoded once for every client.
type message struct {
	key  string // "members", "plan\x00live/x" …
	data []byte // the whole "event: …\ndata: …\n\n" frame
}

type client struct {
	ch      chan []byte
	dropped chan struct{}
	once    sync.Once
}

func (c *client) drop() { c.once.Do(func() { close(c.dropped) }) }

// Broker fans events out to SSE clients.
type Broker struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	clients map[*client]struct{}
	last    map[string][]byte // the newest frame of every key
	order   []string          // keys in first-seen order (snapshot order)
	drops   uint64
	// wake is signalled when the first client connects, so that the
	// collector publishes at once.
	wake chan struct{}
}

// NewBroker builds a broker.
func NewBroker(cfg Config, log *slog.Logger) (*Broker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Broker{cfg: cfg, log: log, clients: map[*client]struct{}{}, last: map[string][]byte{},
		wake: make(chan struct{}, 1)}, nil
}

// Clients counts the connected clients.
func (b *Broker) Clients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.clients)
}

// Dropped counts the clients dropped for lagging.
func (b *Broker) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.drops
}

func frame(event string, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString("event: ")
	buf.WriteString(event)
	buf.WriteString("\ndata: ")
	buf.Write(data) // json.Marshal never writes a newline
	buf.WriteString("\n\n")
	return buf.Bytes(), nil
}

// Publish sends event with payload v to every client, when it differs
// from the last one sent under key, and keeps it for the snapshot of the
// clients that connect later.
func (b *Broker) Publish(key, event string, v any) {
	f, err := frame(event, v)
	if err != nil {
		b.log.Warn("dashboard: event not encoded", "event", event, "err", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.last[key]; ok && bytes.Equal(old, f) {
		return
	}
	if _, ok := b.last[key]; !ok {
		b.order = append(b.order, key)
	}
	b.last[key] = f
	b.sendLocked(f)
}

// Forget sends event with payload v (a removal) and drops key from the
// snapshot.
func (b *Broker) Forget(key, event string, v any) {
	b.mu.Lock()
	_, ok := b.last[key]
	b.mu.Unlock()
	if !ok {
		return
	}
	f, err := frame(event, v)
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.last, key)
	for i, k := range b.order {
		if k == key {
			b.order = append(b.order[:i:i], b.order[i+1:]...)
			break
		}
	}
	b.sendLocked(f)
}

// Keys lists the keys kept for the snapshot with the given prefix.
func (b *Broker) Keys(prefix string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for k := range b.last {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (b *Broker) sendLocked(f []byte) {
	for c := range b.clients {
		select {
		case c.ch <- f:
		default:
			// The client lags QueueLen events behind: drop it rather
			// than wait or lose events silently.
			delete(b.clients, c)
			b.drops++
			c.drop()
			b.log.Info("dashboard: slow event client dropped", "queue", b.cfg.QueueLen)
		}
	}
}

// subscribe registers a client with its snapshot queued.
func (b *Broker) subscribe(hello []byte) (*client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.clients) >= b.cfg.MaxClients {
		return nil, ErrTooManyClients
	}
	c := &client{ch: make(chan []byte, b.cfg.QueueLen+len(b.order)+1), dropped: make(chan struct{})}
	c.ch <- hello
	for _, k := range b.order {
		c.ch <- b.last[k]
	}
	b.clients[c] = struct{}{}
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return c, nil
}

func (b *Broker) unsubscribe(c *client) {
	b.mu.Lock()
	delete(b.clients, c)
	b.mu.Unlock()
}

// ServeHTTP streams the events to one client: "hello" (this node and the
// page's settings), the snapshot, then every change, with a heartbeat
// comment every Config.Heartbeat.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.Serve(w, r, nil)
}

// Serve is ServeHTTP with the hello event's payload.
func (b *Broker) Serve(w http.ResponseWriter, r *http.Request, hello any) {
	rc := http.NewResponseController(w)
	hf, err := frame("hello", hello)
	if err != nil {
		http.Error(w, "hello not encoded", http.StatusInternalServerError)
		return
	}
	c, err := b.subscribe(hf)
	if err != nil {
		b.log.Warn("dashboard: event client refused", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer b.unsubscribe(c)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// retry: the browser reconnects after 2 s when the node goes away.
	if _, err := w.Write([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	hb := time.NewTicker(b.cfg.Heartbeat)
	defer hb.Stop()
	defer rc.SetWriteDeadline(time.Time{})
	for {
		// A write that blocks longer than this means the client does
		// not read: give up on it.
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		select {
		case <-r.Context().Done():
			return
		case <-c.dropped:
			// Drain what was queued before the drop? No: the client is
			// too slow for the stream; it reconnects and gets a fresh
			// snapshot.
			return
		case f := <-c.ch:
			if _, err := w.Write(f); err != nil {
				return
			}
			// Write what else is queued before flushing.
			for more := true; more; {
				select {
				case f := <-c.ch:
					if _, err := w.Write(f); err != nil {
						return
					}
				default:
					more = false
				}
			}
		case <-hb.C:
			if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
