package overlay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

const testSecret = "s3cret-of-the-cluster"

// upstreamNode is a hub served over RTSP with relay authentication, as a
// node serves its parent side of relays.
type upstreamNode struct {
	hub  *media.Hub
	srv  *ingest.RTSPServer
	addr string
}

func startUpstream(t *testing.T, clip string) *upstreamNode {
	t.Helper()
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	t.Cleanup(func() { hub.Close() })
	rd, err := egress.NewRTSPReader(egress.RTSPReaderConfig{}, hub, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	srv, err := ingest.NewRTSPServer(ingest.RTSPConfig{Addr: addr, DisableUDP: true, Read: rd,
		Credentials: RelayCredentials(testSecret, false)}, hub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	stop := testutil.PublishFile(t, hub, "live/cam1", clip, false)
	t.Cleanup(stop)
	return &upstreamNode{hub: hub, srv: srv, addr: addr}
}

// watch reads path from hub, recording what a local viewer would see.
type watch struct {
	mu      sync.Mutex
	units   int
	keys    int
	ended   bool
	lastPTS time.Duration
	back    int // video PTS going backwards
	maxGap  time.Duration
	lastAt  time.Time
	frames  int
	width   int
	height  int
}

func watchPath(t *testing.T, hub *media.Hub, path string) *watch {
	t.Helper()
	var rd *media.Reader
	testutil.Eventually(t, 15*time.Second, path+" is published in the local hub", func() bool {
		var err error
		rd, err = hub.Subscribe(path, "test viewer")
		return err == nil
	})
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	w := &watch{}
	vid := rd.Description().VideoTrack()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer dec.Close()
		for u := range rd.C() {
			if u.Track != vid {
				continue
			}
			frames, _ := dec.Decode(u.Data, int64(u.PTS))
			w.mu.Lock()
			now := time.Now()
			if !w.lastAt.IsZero() && now.Sub(w.lastAt) > w.maxGap {
				w.maxGap = now.Sub(w.lastAt)
			}
			w.lastAt = now
			if w.units > 0 && u.PTS < w.lastPTS {
				w.back++
			}
			w.lastPTS = u.PTS
			w.units++
			if u.Key {
				w.keys++
			}
			for _, f := range frames {
				w.frames++
				w.width, w.height = f.Width, f.Height
			}
			w.mu.Unlock()
		}
		w.mu.Lock()
		w.ended = true
		w.mu.Unlock()
	}()
	t.Cleanup(func() { rd.Close(); <-done })
	return w
}

func (w *watch) snapshot() watch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return watch{units: w.units, keys: w.keys, ended: w.ended, back: w.back, maxGap: w.maxGap, frames: w.frames, width: w.width, height: w.height}
}

func TestRelayPullsARenditionAndPublishesItLocally(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4, Audio: "aac"})
	up := startUpstream(t, clip)
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	r := startRelay(t, RelayConfig{Path: "live/cam1", Sources: []string{up.addr}, Secret: testSecret}, hub)
	defer r.Close()
	w := watchPath(t, hub, "live/cam1")
	testutil.Eventually(t, 10*time.Second, "decoded 320x240 frames relayed", func() bool {
		s := w.snapshot()
		return s.frames >= 25 && s.width == 320 && s.height == 240
	})
	st, _ := hub.Lookup("live/cam1")
	if src := st.Info().Source; !strings.HasPrefix(src, RelaySourcePrefix) || len(st.Description().Tracks) != 2 {
		t.Fatalf("relayed stream source %q tracks %v, want a relay source and video+audio", src, st.Info().Tracks)
	}
	r.Close()
	testutil.Eventually(t, 5*time.Second, "closing the relay ends the local stream", func() bool { return w.snapshot().ended })
}

func TestRelayWithoutClusterSecretIsRefused(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4})
	up := startUpstream(t, clip)
	for _, secret := range []string{"", "wrong"} {
		u := &upstream{r: &Relay{cfg: RelayConfig{Path: "live/cam1", Secret: secret}}, addr: up.addr}
		uu, _ := base.ParseURL(u.relayURL())
		c := &gortsplib.Client{Scheme: uu.Scheme, Host: uu.Host}
		if err := c.Start2(); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.Describe(uu)
		c.Close()
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("describe with secret %q: err %v, want 401", secret, err)
		}
	}
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	r := startRelay(t, RelayConfig{Path: "live/cam1", Sources: []string{up.addr}, Secret: "wrong"}, hub)
	defer r.Close()
	testutil.Eventually(t, 5*time.Second, "the relay with a wrong secret fails its attempt", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.failedAt[up.addr].IsZero()
	})
	if _, ok := hub.Lookup("live/cam1"); ok || r.Live() {
		t.Fatal("a relay with a wrong secret published the stream")
	}
	// The source's own (non-relay) publishers need no secret.
	if _, open := RelayCredentials(testSecret, false)("", "live/x", true); !open {
		t.Fatal("anonymous publishing refused")
	}
}

func TestRelaySwitchesSourceWithoutCuttingViewers(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4})
	a := startUpstream(t, clip)
	b := startUpstream(t, clip)
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	r := startRelay(t, RelayConfig{Path: "live/cam1", Sources: []string{a.addr}, Secret: testSecret}, hub)
	defer r.Close()
	w := watchPath(t, hub, "live/cam1")
	testutil.Eventually(t, 10*time.Second, "frames from the first source", func() bool { return w.snapshot().frames >= 10 })

	// A new plan: the parent becomes b. Make-before-break.
	r.SetSources([]string{b.addr, a.addr})
	testutil.Eventually(t, 10*time.Second, "the relay is fed by the new parent", func() bool { return r.Source() == b.addr })
	before := w.snapshot()
	testutil.Eventually(t, 10*time.Second, "frames keep coming after the switch", func() bool { return w.snapshot().frames >= before.frames+25 })

	// The parent dies: the relay falls back to the next source.
	killed := time.Now()
	b.srv.Close()
	testutil.Eventually(t, 10*time.Second, "the relay falls back to a", func() bool { return r.Source() == a.addr })
	mid := w.snapshot()
	testutil.Eventually(t, 10*time.Second, "frames resume after the parent died", func() bool { return w.snapshot().frames >= mid.frames+25 })
	s := w.snapshot()
	t.Logf("fallback after parent death: fed again %v after the kill; largest gap between units %v; switches %d", time.Since(killed), s.maxGap, r.Switches())
	if s.ended {
		t.Fatal("the local stream ended during a source switch: viewers were cut")
	}
	if s.back > 0 {
		t.Errorf("video PTS went backwards %d times across switches", s.back)
	}
	if s.maxGap > 3*time.Second {
		t.Errorf("largest gap between units %v, want < 3 s", s.maxGap)
	}
}

// startRelay builds and starts a relay that is closed when the test ends.
func startRelay(t testing.TB, c RelayConfig, hub *media.Hub) *Relay {
	t.Helper()
	r, err := NewRelay(c, hub, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRelayCredentialsNeverCrossTheWire relays through a TCP proxy that
// records what the relay sends: neither the cluster secret nor the
// relay's password is on the wire (RTSP Digest), and a password derived
// for one path or node opens no other.
func TestRelayCredentialsNeverCrossTheWire(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4})
	up := startUpstream(t, clip)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var sent bytes.Buffer
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", up.addr)
			if err != nil {
				c.Close()
				continue
			}
			go func() {
				defer u.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						mu.Lock()
						sent.Write(buf[:n])
						mu.Unlock()
						u.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { defer c.Close(); io.Copy(c, u) }()
		}
	}()

	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	r := startRelay(t, RelayConfig{Path: "live/cam1", Sources: []string{ln.Addr().String()}, Secret: testSecret, Node: "edge1"}, hub)
	defer r.Close()
	w := watchPath(t, hub, "live/cam1")
	testutil.Eventually(t, 10*time.Second, "frames relayed through the proxy", func() bool { return w.snapshot().frames >= 10 })
	mu.Lock()
	wire := sent.String()
	mu.Unlock()
	pass := RelayPassword(testSecret, "gradient.edge1", "live/cam1")
	switch {
	case strings.Contains(wire, testSecret):
		t.Fatal("the cluster secret crossed the wire")
	case strings.Contains(wire, pass):
		t.Fatal("the relay's password crossed the wire")
	case strings.Contains(wire, "Basic "):
		t.Fatal("the relay authenticated with Basic")
	case !strings.Contains(wire, `Digest username="gradient.edge1"`):
		t.Fatalf("no Digest authorization from the relay's user on the wire:\n%.2000s", wire)
	}

	check := RelayCredentials(testSecret, false)
	if p, open := check("gradient.edge1", "live/other", false); open || p == pass {
		t.Fatal("a relay password opens another path")
	}
	if p, open := check("gradient.edge2", "live/cam1", false); open || p == pass {
		t.Fatal("a relay password speaks for another node")
	}
	if p, open := check("viewer", "live/cam1", false); open || p != "" {
		t.Fatal("a non-relay user is given a password to prove")
	}
}
