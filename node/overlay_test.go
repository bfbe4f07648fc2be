package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
)

// testOverlayNode starts a node on loopback with gossip on and short timers.
func testOverlayNode(t *testing.T, name, key string, join []string) *Node {
	t.Helper()
	return testOverlayNodeWith(t, name, key, join, func(*Config) {})
}

// testOverlayNodeWith is testOverlayNode with the configuration changed by
// edit first.
func testOverlayNodeWith(t *testing.T, name, key string, join []string, edit func(*Config)) *Node {
	t.Helper()
	cfg := testOverlayConfig(t, name, key, join)
	edit(&cfg)
	n, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// testOverlayConfig is the configuration of testOverlayNode.
func testOverlayConfig(t *testing.T, name, key string, join []string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.Data = t.TempDir()
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cfg.RTSP.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cfg.RTSP.UDPRTPAddr, cfg.RTSP.UDPRTCPAddr = Off, Off
	cfg.SRT.Addr = Off
	cfg.RTMP.Addr = Off
	cfg.WebRTC.ICEUDPAddr = "127.0.0.1:0"
	cfg.Gossip.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cfg.Gossip.Key = key
	cfg.Gossip.Join = join
	cfg.Overlay.WatchLease = time.Second
	cfg.Overlay.PlannerDebounce = 50 * time.Millisecond
	cfg.Overlay.ProbeInterval = 200 * time.Millisecond
	cfg.Overlay.ProbeTimeout = 100 * time.Millisecond
	return cfg
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func TestOverlayConfigValidationNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		edit  func(*Config)
		field string
	}{
		{func(c *Config) { c.Overlay.PricePerMbps = -1 }, "overlay.price_per_mbps"},
		{func(c *Config) { c.Overlay.Ladder = nil }, "overlay.ladder"},
		{func(c *Config) {
			c.Overlay.Ladder = []overlay.LadderLevel{{Name: "source", Kbps: 800}, {Name: "360p", Kbps: 900}}
		}, "overlay.ladder[1].kbps"},
		{func(c *Config) {
			c.Overlay.Ladder = []overlay.LadderLevel{{Name: "source", Kbps: 800}, {Name: "a/b", Kbps: 400}}
		}, "overlay.ladder[1].name"},
		{func(c *Config) { c.Overlay.DefaultDevice = "fridge" }, "overlay.default_device"},
		{func(c *Config) { c.Overlay.DeviceClasses = map[string]map[string]float64{"laptop": {"source": -1}} }, "overlay.device_classes.laptop.source"},
		{func(c *Config) { c.Overlay.ProbeTimeout = 2 * time.Second }, "overlay.probe_timeout"},
		{func(c *Config) { c.Overlay.WatchLease = 0 }, "overlay.watch_lease"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("got %v, want an error naming %s", err, tc.field)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

func TestNodesWithDifferentClusterKeysDoNotJoin(t *testing.T) {
	a := testOverlayNode(t, "a", base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")), nil)
	b := testOverlayNode(t, "b", base64.StdEncoding.EncodeToString([]byte("fedcba9876543210")), []string{a.Config().Gossip.Addr})
	c := testOverlayNode(t, "c", "", []string{a.Config().Gossip.Addr})
	for _, n := range []*Node{a, b, c} {
		var st overlay.ClusterStatus
		getJSON(t, "http://"+n.HTTPAddr()+"/api/v1/cluster", &st)
		if len(st.Members) != 1 {
			t.Errorf("%s sees %d members, want only itself: gossip under another key must be ignored", n.Config().Name, len(st.Members))
		}
	}
}

func TestWatchRedirectsToThePlayerAndCountsDemandUntilTheLeaseEnds(t *testing.T) {
	n := testOverlayNode(t, "solo", "", nil)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 3})
	stop := testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	defer stop()
	base := "http://" + n.HTTPAddr()
	testutil.Eventually(t, 5*time.Second, "the stream is registered with this node as root", func() bool {
		s, ok := n.Members.Stream("live/cam1")
		return ok && s.Root == "solo"
	})

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(base + "/watch/live/cam1?device=tv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/live/cam1/?device=tv" {
		t.Fatalf("watch: HTTP %d to %q, want 302 to the source player", resp.StatusCode, resp.Header.Get("Location"))
	}
	testutil.Eventually(t, 5*time.Second, "the TV viewer counts as demand and the plan serves it", func() bool {
		var st overlay.ClusterStatus
		getJSON(t, base+"/api/v1/cluster", &st)
		p, ok := n.Members.Plan("live/cam1")
		if !ok {
			return false
		}
		lv, served := p.Served("solo", "tv")
		return len(st.Demand) == 1 && st.Demand[0].Viewers["tv"] == 1 && served && lv == "source"
	})
	var plan struct {
		Plan struct {
			Cost *struct{ Total float64 } `json:"cost"`
		} `json:"plan"`
	}
	if code := getJSON(t, base+"/api/v1/streams/live/cam1/plan", &plan); code != 200 || plan.Plan.Cost == nil {
		t.Fatalf("plan API: HTTP %d, cost %v", code, plan.Plan.Cost)
	}
	testutil.Eventually(t, 5*time.Second, "the demand goes once the lease ends without a session", func() bool {
		var st overlay.ClusterStatus
		getJSON(t, base+"/api/v1/cluster", &st)
		return len(st.Demand) == 0
	})

	// A WHEP session counts for its device class until it is deleted.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := testutil.DialWHEP(ctx, base+"/live/cam1/whep?device=phone", testutil.WHEPOptions{Loopback: true, CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testutil.Eventually(t, 5*time.Second, "the phone session is demand", func() bool {
		d := n.Members.Demands("live/cam1")
		return len(d) == 1 && d[0].Viewers["phone"] == 1
	})
	if code, err := s.Delete(ctx); err != nil || code != http.StatusOK {
		t.Fatalf("delete session: %d %v", code, err)
	}
	testutil.Eventually(t, 5*time.Second, "the deleted session is no longer demand", func() bool {
		return len(n.Members.Demands("live/cam1")) == 0
	})

	// A viewer that goes away without a DELETE stops counting too once
	// egress drops its session.
	gone, err := testutil.DialWHEP(ctx, base+"/live/cam1/whep?device=tv", testutil.WHEPOptions{Loopback: true, CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the tv session is demand", func() bool {
		d := n.Members.Demands("live/cam1")
		return len(d) == 1 && d[0].Viewers["tv"] == 1
	})
	gone.PeerConnection().Close()
	testutil.Eventually(t, 20*time.Second, "a vanished session is no longer demand", func() bool {
		return len(n.Members.Demands("live/cam1")) == 0
	})

	if code := getJSON(t, base+"/watch/live/nothing?device=tv", nil); code != http.StatusNotFound {
		t.Errorf("watch of a stream that is not live: HTTP %d, want 404", code)
	}
}

func TestAWatchThatWaitsForTheStreamStillLeavesItsLeaseAfterTheRedirect(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	root := testOverlayNode(t, "root", key, nil)
	edge := testOverlayNode(t, "edge", key, []string{root.cfg.Gossip.Addr})
	// The root announces a stream it cannot serve (nothing is published
	// into its hub), so the edge's /watch waits for it the whole 10 s:
	// longer than the 1 s lease.
	root.Members.SetStream(overlay.StreamInfo{Name: "live/far", Ladder: []optimizer.Level{{Name: "source", Kbps: 1000}}})
	testutil.Eventually(t, 10*time.Second, "the edge knows live/far", func() bool {
		_, ok := edge.Members.Stream("live/far")
		return ok
	})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + edge.HTTPAddr() + "/watch/live/far?device=tv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("watch: HTTP %d, want 302", resp.StatusCode)
	}
	if got := edge.demand.Counts()["live/far"]["tv"]; got != 1 {
		t.Fatalf("demand right after the redirect: %d TV viewers, want 1 (the lease must run from the redirect)", got)
	}
}
