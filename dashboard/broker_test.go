package dashboard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testBroker(t *testing.T, cfg Config) (*Broker, *httptest.Server) {
	t.Helper()
	b, err := NewBroker(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Serve(w, r, map[string]string{"node": "test"})
	}))
	t.Cleanup(srv.Close)
	return b, srv
}

func waitFor(t *testing.T, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", d, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that stops reading is dropped once its queue is full; the
// publisher never waits for it, and a client that reads gets everything.
func TestBrokerDropsAClientThatDoesNotReadAndNeverBlocks(t *testing.T) {
	b, srv := testBroker(t, Config{QueueLen: 4, MaxClients: 8})
	// The slow client: a raw TCP connection with a tiny receive buffer
	// that sends the request and never reads.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	slow, err := d.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, 5*time.Second, "the slow client is registered", func() bool { return b.Clients() == 1 })

	// The fast client reads everything.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan int, 1)
	progress := make(chan int, 300)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n := 0
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: big") {
				n++
				progress <- n
				if n == 300 {
					got <- n
					return
				}
			}
		}
		got <- n
	}()
	waitFor(t, 5*time.Second, "both clients are registered", func() bool { return b.Clients() == 2 })

	big := strings.Repeat("x", 64<<10)
	start := time.Now()
	for i := range 300 {
		b.Publish(fmt.Sprintf("k%d", i), "big", map[string]any{"i": i, "pad": big})
		// The reading client is waited for (it must never lag QueueLen
		// events, however loaded the machine); the slow one is not.
		select {
		case <-progress:
		case <-time.After(10 * time.Second):
			t.Fatalf("the reading client did not get event %d", i)
		}
	}
	t.Logf("300 publishes of 64 KiB, each read by the fast client, took %v", time.Since(start))
	waitFor(t, 10*time.Second, "the slow client is dropped", func() bool { return b.Dropped() == 1 })
	select {
	case n := <-got:
		if n != 300 {
			t.Fatalf("the reading client got %d events, want 300", n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the reading client did not get the 300 events")
	}
	if b.Clients() != 1 {
		t.Fatalf("%d clients, want the reading one", b.Clients())
	}
}

// The snapshot: a new client gets hello and the newest event of every key,
// in the order the keys first appeared; an unchanged event is not sent
// again; a forgotten key leaves the snapshot.
func TestBrokerSnapshotThenChangesOnly(t *testing.T) {
	b, srv := testBroker(t, Config{})
	b.Publish("members", "members", map[string]int{"n": 1})
	b.Publish("plan\x00a", "plan", map[string]string{"stream": "a", "v": "1"})
	b.Publish("plan\x00b", "plan", map[string]string{"stream": "b", "v": "1"})
	b.Publish("plan\x00a", "plan", map[string]string{"stream": "a", "v": "2"})
	b.Forget("plan\x00b", "plan", map[string]any{"stream": "b", "removed": true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				lines <- strings.TrimPrefix(sc.Text(), "data: ")
			}
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
			return ""
		}
	}
	for _, want := range []string{`{"node":"test"}`, `{"n":1}`, `{"stream":"a","v":"2"}`} {
		if got := next(); got != want {
			t.Fatalf("snapshot event %s, want %s", got, want)
		}
	}
	b.Publish("members", "members", map[string]int{"n": 1}) // unchanged: not sent
	b.Publish("members", "members", map[string]int{"n": 2})
	if got := next(); got != `{"n":2}` {
		t.Fatalf("change %s, want {\"n\":2}", got)
	}
}

// The cap answers 503 beyond MaxClients.
func TestBrokerRefusesClientsBeyondTheCap(t *testing.T) {
	b, srv := testBroker(t, Config{MaxClients: 1})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "one client", func() bool { return b.Clients() == 1 })
	r2, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second client: HTTP %d, want 503", r2.StatusCode)
	}
	resp.Body.Close()
	waitFor(t, 5*time.Second, "the client left", func() bool { return b.Clients() == 0 })
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{MaxClients: -1}, {QueueLen: -1}, {Heartbeat: -time.Second}, {DemoURL: "ftp://x"}} {
		if c.withDefaults().Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (Config{DemoURL: "http://127.0.0.1:9000"}).withDefaults().Validate(); err != nil {
		t.Error(err)
	}
}

// An idle stream carries a heartbeat comment every Heartbeat.
func TestBrokerSendsHeartbeats(t *testing.T) {
	_, srv := testBroker(t, Config{Heartbeat: 50 * time.Millisecond})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("headers %v", resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	beats := 0
	for beats < 3 && sc.Scan() {
		if sc.Text() == ": heartbeat" {
			beats++
		}
	}
	if beats < 3 {
		t.Fatalf("%d heartbeats before the stream ended: %v", beats, sc.Err())
	}
}
