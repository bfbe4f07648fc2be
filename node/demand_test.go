package node

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
)

// hlsPoller is an HLS client that fetches a stream's multivariant and media
// playlists every 300 ms, as a player does, until stopped.
type hlsPoller struct {
	stop chan struct{}
	done chan struct{}
	errs chan error
}

func startHLSPoller(t *testing.T, url, userAgent string) *hlsPoller {
	t.Helper()
	p := &hlsPoller{stop: make(chan struct{}), done: make(chan struct{}), errs: make(chan error, 1)}
	get := func(u string) (string, error) {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("User-Agent", userAgent)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		res, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err == nil && res.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: HTTP %d", u, res.StatusCode)
		}
		return string(b), err
	}
	go func() {
		defer close(p.done)
		fail := func(err error) {
			select {
			case p.errs <- err:
			default:
			}
		}
		mv, err := get(url)
		if err != nil {
			fail(err)
			return
		}
		var media string
		for _, l := range strings.Split(mv, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && strings.Contains(l, ".m3u8") {
				media = url[:strings.LastIndex(url, "/")+1] + l
				break
			}
		}
		if media == "" {
			fail(fmt.Errorf("no media playlist in %q", mv))
			return
		}
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if _, err := get(media); err != nil {
				fail(err)
			}
		}
	}()
	t.Cleanup(p.Stop)
	return p
}

// Stop stops polling; it is idempotent.
func (p *hlsPoller) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *hlsPoller) check(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.errs:
		t.Fatalf("HLS client: %v", err)
	default:
	}
}

func TestHLSViewersAreDemandWithTheirDeviceClassUntilTheyStopFetching(t *testing.T) {
	// A lease long enough that only an HLS viewer taking it ends it.
	n := testOverlayNodeWith(t, "solo", "", nil, func(c *Config) { c.Overlay.WatchLease = time.Minute })
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 3})
	testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	base := "http://" + n.HTTPAddr()
	testutil.Eventually(t, 5*time.Second, "the stream is registered with this node as root", func() bool {
		s, ok := n.Members.Stream("live/cam1")
		return ok && s.Root == "solo"
	})
	// demandIs checks the demand gossiped for live/cam1 and the API's.
	demandIs := func(want map[string]int) bool {
		d := n.Members.Demands("live/cam1")
		if len(want) == 0 {
			if len(d) != 0 {
				return false
			}
		} else if len(d) != 1 || !maps.Equal(d[0].Viewers, want) {
			return false
		}
		var st overlay.ClusterStatus
		getJSON(t, base+"/api/v1/cluster", &st)
		if len(want) == 0 {
			return len(st.Demand) == 0
		}
		return len(st.Demand) == 1 && maps.Equal(st.Demand[0].Viewers, want)
	}
	viewed := func() bool {
		for _, p := range n.demand.ViewedPaths() {
			if p == "live/cam1" {
				return true
			}
		}
		return false
	}

	// ffmpeg plays the stream over HLS as a phone: many requests, one
	// viewer, of the class its URL names (the muxer repeats the query on
	// the child playlists and segments).
	testutil.RequireTool(t, "ffmpeg")
	ff := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning",
		"-i", base+"/live/cam1/index.m3u8?device=phone", "-c", "copy", "-f", "null", "-")
	testutil.Eventually(t, 30*time.Second, "the ffmpeg HLS viewer is phone demand", func() bool {
		return demandIs(map[string]int{"phone": 1})
	})
	if !viewed() {
		t.Errorf("viewedPaths %v lacks live/cam1, which an HLS viewer watches", n.demand.ViewedPaths())
	}

	// A viewer sent by /watch as a TV whose HLS client names no device
	// counts as that TV, once: it takes the /watch lease.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(base + "/watch/live/cam1?device=tv")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("watch: HTTP %d, want 302", resp.StatusCode)
	}
	poller := startHLSPoller(t, base+"/live/cam1/index.m3u8", "tv-app")
	testutil.Eventually(t, 30*time.Second, "the TV's HLS client took its lease and is tv demand", func() bool {
		poller.check(t)
		// Were the lease not taken, the TV would count twice.
		return demandIs(map[string]int{"phone": 1, "tv": 1})
	})

	// A viewer that stops fetching stops counting after the window.
	if err := ff.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-ff.Done()
	testutil.Eventually(t, 45*time.Second, "the stopped ffmpeg viewer is no longer demand", func() bool {
		poller.check(t)
		return demandIs(map[string]int{"tv": 1})
	})
	poller.Stop()
	testutil.Eventually(t, 45*time.Second, "with every HLS viewer gone there is no demand", func() bool {
		return demandIs(nil)
	})
	if viewed() {
		t.Errorf("viewedPaths %v still has live/cam1 with no viewer left", n.demand.ViewedPaths())
	}
}

// TestWHEPViewersAreDemandFromOpenUntilTheyVanish follows a WHEP viewer
// through egress's session hooks: counted with its device class from the
// POST, and no longer counted once its ICE goes silent without a DELETE.
func TestWHEPViewersAreDemandFromOpenUntilTheyVanish(t *testing.T) {
	n := testOverlayNodeWith(t, "solo", "", nil, func(c *Config) { c.WebRTC.SessionTimeout = 2 * time.Second })
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 3})
	testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := testutil.DialWHEP(ctx, "http://"+n.HTTPAddr()+"/live/cam1/whep?device=phone", testutil.WHEPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	demandIs := func(want map[string]int) func() bool {
		return func() bool {
			d := n.Members.Demands("live/cam1")
			if len(want) == 0 {
				return len(d) == 0 && len(n.demand.Counts()) == 0
			}
			return len(d) == 1 && maps.Equal(d[0].Viewers, want)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the WHEP viewer is gossiped as one phone", demandIs(map[string]int{"phone": 1}))
	select {
	case <-s.Connected():
	case <-ctx.Done():
		t.Fatal("the WHEP session never connected")
	}
	// The viewer goes silent: no DELETE, its ICE agent stops.
	if err := s.PeerConnection().SCTP().Transport().ICETransport().Stop(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the vanished viewer is no longer demand", demandIs(nil))
}
