package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/dashboard"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
)

type sseEvent struct {
	name string
	data []byte
}

// sseClient reads GET /api/v1/events into a channel of events.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

func dialEvents(t *testing.T, url string) (*sseClient, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 1024), cancel: cancel}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 8<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = []byte(strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	t.Cleanup(c.Close)
	return c, http.StatusOK
}

func (c *sseClient) Close() { c.cancel(); c.resp.Body.Close() }

// next returns the next event named name (skipping others), failing the
// test after d.
func (c *sseClient) next(t *testing.T, d time.Duration, name string, ok func([]byte) bool) []byte {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, open := <-c.events:
			if !open {
				t.Fatalf("event stream ended while waiting for %q", name)
			}
			if ev.name == name && (ok == nil || ok(ev.data)) {
				return ev.data
			}
		case <-deadline:
			t.Fatalf("no matching %q event within %v", name, d)
		}
	}
}

func TestDashboardEventsSnapshotThenPlanPushedByGossip(t *testing.T) {
	a := testOverlayNode(t, "a", "", nil)
	b := testOverlayNodeWith(t, "b", "", []string{a.Config().Gossip.Addr}, func(c *Config) {
		c.Overlay.WatchLease = time.Minute // the watch below stays demand for the whole test
		c.Dashboard.MaxClients = 2
		c.Dashboard.DemoURL = "http://127.0.0.1:9"
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 3})
	stop := testutil.PublishFile(t, a.Hub, "live/cam1", clip, false)
	defer stop()
	testutil.Eventually(t, 10*time.Second, "b sees both members alive and the stream rooted at a", func() bool {
		s, ok := b.Members.Stream("live/cam1")
		return ok && s.Root == "a" && len(b.Members.Alive()) == 2
	})
	base := "http://" + b.HTTPAddr()
	c, _ := dialEvents(t, base+"/api/v1/events")

	// The snapshot: hello, then the members (both alive).
	var hello struct {
		Node    string `json:"node"`
		DemoURL string `json:"demo_url"`
	}
	if err := json.Unmarshal(c.next(t, 5*time.Second, "hello", nil), &hello); err != nil || hello.Node != "b" || hello.DemoURL != "http://127.0.0.1:9" {
		t.Fatalf("hello: %+v %v", hello, err)
	}
	c.next(t, 5*time.Second, "members", func(d []byte) bool {
		var m dashboard.MembersEvent
		json.Unmarshal(d, &m)
		alive := 0
		for _, x := range m.Members {
			if x.State == "alive" {
				alive++
			}
		}
		return m.Self == "b" && alive == 2 && len(m.Links) == 1 && m.Links[0].Cost > 0
	})

	// A viewer on b makes demand there; a's new plan reaches b by gossip
	// and b's page by the event stream.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(base + "/watch/live/cam1?device=tv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	data := c.next(t, 15*time.Second, "plan", func(d []byte) bool {
		var p dashboard.PlanEvent
		json.Unmarshal(d, &p)
		for _, a := range p.Arcs {
			if a.From == "a" && a.To == "b" {
				return true
			}
		}
		return false
	})
	arrived := time.Now()
	var ev dashboard.PlanEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatal(err)
	}
	// Made is the root's clock, the same machine's.
	t.Logf("FIGURE plan made at a to its event at b's client: %v (brief's target: < 1 s)", arrived.Sub(ev.Made).Round(time.Millisecond))
	var api overlay.Plan
	if code := getJSON(t, base+"/api/v1/streams/live/cam1/plan", &api); code != 200 {
		t.Fatalf("plan API: HTTP %d", code)
	}
	if api.Version != ev.Version {
		t.Fatalf("event has plan version %d, the API %d", ev.Version, api.Version)
	}
	var apiArcs [][3]string
	for _, x := range api.Plan.Arcs {
		apiArcs = append(apiArcs, [3]string{x.From, x.To, strings.Join(x.Levels, ",")})
	}
	var evArcs [][3]string
	for _, x := range ev.Arcs {
		evArcs = append(evArcs, [3]string{x.From, x.To, strings.Join(x.Renditions, ",")})
		if x.Kbps <= 0 {
			t.Errorf("arc %s>%s has no bitrate", x.From, x.To)
		}
	}
	if !reflect.DeepEqual(apiArcs, evArcs) {
		t.Fatalf("event arcs %v, API arcs %v", evArcs, apiArcs)
	}
	if ev.Viewers["b"]["tv"] != 1 {
		t.Errorf("viewers %v, want one tv at b", ev.Viewers)
	}
	if ev.Cost.Plan == nil || ev.Cost.MST == nil || ev.Cost.Naive == nil || ev.Cost.SavesVsMST == nil {
		t.Fatalf("cost block incomplete: %+v", ev.Cost)
	}
	if ev.Cost.Plan.Total > ev.Cost.Naive.Total+1e-9 && ev.Cost.SameDemand {
		t.Errorf("the plan (%v) costs more than the naive baseline (%v) on the same demand", ev.Cost.Plan.Total, ev.Cost.Naive.Total)
	}

	// load: both nodes, a's stream with a bitrate.
	c.next(t, 10*time.Second, "load", func(d []byte) bool {
		var l dashboard.LoadEvent
		json.Unmarshal(d, &l)
		if len(l.Nodes) != 2 {
			return false
		}
		for _, n := range l.Nodes {
			if n.Node == "a" && n.Error == "" {
				for _, s := range n.Streams {
					if s.Path == "live/cam1" && s.KbpsIn > 0 && s.Player == "/live/cam1/" {
						return true
					}
				}
			}
		}
		return false
	})

	// The cap: b allows 2 clients; the third gets 503 until one leaves.
	c2, code := dialEvents(t, base+"/api/v1/events")
	if code != http.StatusOK {
		t.Fatalf("second client: HTTP %d", code)
	}
	if _, code := dialEvents(t, base+"/api/v1/events"); code != http.StatusServiceUnavailable {
		t.Fatalf("third client: HTTP %d, want 503", code)
	}
	c2.Close()
	testutil.Eventually(t, 5*time.Second, "a client that left frees its place", func() bool {
		c3, code := dialEvents(t, base+"/api/v1/events")
		if code == http.StatusOK {
			c3.Close()
		}
		return code == http.StatusOK
	})

	// The page itself.
	resp, err = http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&sb)
	if resp.StatusCode != 200 || !strings.Contains(sb.String(), "/_dashboard/dashboard.js") || !strings.Contains(sb.String(), `data-node="b"`) ||
		!strings.Contains(sb.String(), `data-demo-url="http://127.0.0.1:9"`) {
		t.Fatalf("page: HTTP %d %.200s", resp.StatusCode, sb.String())
	}
}

func TestDashboardEventsAreAGuardedAPIRead(t *testing.T) {
	for _, p := range []string{"/api/v1/events", "/"} {
		r, _ := http.NewRequest(http.MethodGet, p, nil)
		if httpAction(r) != "api" {
			t.Errorf("%s needs %q, want api", p, httpAction(r))
		}
	}
}

func TestDashboardConfigRefusesABadDemoURL(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dashboard.DemoURL = "javascript:alert(1)"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "dashboard.demo_url") {
		t.Fatalf("Validate: %v, want a dashboard.demo_url error", err)
	}
}

// TestDashboardREADMEExampleLoads loads the README's dashboard section.
func TestDashboardREADMEExampleLoads(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "```yaml\ndashboard:")
	if i < 0 {
		t.Fatal("README has no dashboard example")
	}
	s = s[i+len("```yaml\n"):]
	s = s[:strings.Index(s, "```")]
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file)
	if err != nil {
		t.Fatalf("README example: %v\n%s", err, s)
	}
	if cfg.Dashboard != dashboard.DefaultConfig() {
		t.Errorf("README example %+v is not the defaults %+v", cfg.Dashboard, dashboard.DefaultConfig())
	}
}

// A client of a node's event stream that stops reading is dropped once it
// lags queue_len events; the node goes on serving the others.
func TestDashboardDropsASlowEventClient(t *testing.T) {
	n := testOverlayNodeWith(t, "solo", "", nil, func(c *Config) { c.Dashboard.QueueLen = 4 })
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	slow, err := d.Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
	testutil.Eventually(t, 5*time.Second, "the slow client is connected", func() bool { return n.dash.broker.Clients() == 1 })
	// Large events fill the slow client's socket, then its queue. Publish
	// never waits for it: the loop ends.
	big := strings.Repeat("x", 64<<10)
	for i := range 400 {
		n.dash.broker.Publish(fmt.Sprintf("test%d", i), "test", map[string]any{"i": i, "pad": big})
		if n.dash.broker.Dropped() == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	testutil.Eventually(t, 10*time.Second, "the slow client is dropped", func() bool {
		return n.dash.broker.Dropped() == 1 && n.dash.broker.Clients() == 0
	})
	c, code := dialEvents(t, "http://"+n.HTTPAddr()+"/api/v1/events")
	if code != http.StatusOK {
		t.Fatalf("a new client after the drop: HTTP %d", code)
	}
	c.next(t, 5*time.Second, "members", func(d []byte) bool { return strings.Contains(string(d), `"solo"`) })
}
