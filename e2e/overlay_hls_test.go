package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
)

// TestBrowserHLSPlayersAreDemandOfTheirDeviceClass: two player pages in
// one headless Chromium, forced to HLS, one as a TV and one as a phone,
// are two viewers of their classes in the node's gossiped demand (the page
// passes its device class and a per-page token on the HLS URL, and hls.js
// keeps them on every playlist, segment and part it fetches), and their
// demand goes once they stop playing.
func TestBrowserHLSPlayersAreDemandOfTheirDeviceClass(t *testing.T) {
	n := startNodeWith(t, func(c *node.Config) {
		c.Name = "edge"
		c.Gossip.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
		c.Overlay.PlannerDebounce = 100 * time.Millisecond
		c.Overlay.ProbeInterval = 200 * time.Millisecond
		c.Overlay.ProbeTimeout = 100 * time.Millisecond
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5, Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")

	// demandIs checks the demand the node gossips for live/cam1.
	demandIs := func(want map[string]int) bool {
		d := n.Members.Demands("live/cam1")
		if len(want) == 0 {
			return len(d) == 0
		}
		if len(d) != 1 || d[0].Node != "edge" || len(d[0].Viewers) != len(want) {
			return false
		}
		for class, c := range want {
			if d[0].Viewers[class] != c {
				return false
			}
		}
		return true
	}
	if !demandIs(nil) {
		t.Fatalf("demand %v before any viewer, want none", n.Members.Demands("live/cam1"))
	}

	// One tab at a time plays in front (a background tab presents no
	// frames to count); the TV's keeps fetching behind the phone's.
	tv := testutil.Chromium(t)
	phone, closePhone := chromedp.NewContext(tv) // a second tab of the same browser
	defer closePhone()
	for _, tab := range []struct {
		ctx    context.Context
		device string
	}{{tv, "tv"}, {phone, "phone"}} {
		if err := chromedp.Run(tab.ctx, chromedp.Navigate(n.httpURL("live/cam1/?mode=hls&device="+tab.device))); err != nil {
			t.Fatalf("%s tab: %v", tab.device, err)
		}
		testutil.WaitPlayer(t, tab.ctx, 45*time.Second, "played HLS frames as a "+tab.device, func(s testutil.PlayerState) bool {
			return s.Mode == "hls" && s.Frames > 30
		})
	}
	testutil.Eventually(t, 20*time.Second, "the two HLS players are one tv and one phone viewer", func() bool {
		return demandIs(map[string]int{"tv": 1, "phone": 1})
	})

	// The phone's tab closes: it stops fetching and, after the viewer
	// window, stops counting; the TV still plays and still counts.
	closePhone()
	testutil.Eventually(t, 45*time.Second, "the closed phone tab is no longer demand", func() bool {
		return demandIs(map[string]int{"tv": 1})
	})
	if err := chromedp.Run(tv, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 45*time.Second, "with both players gone there is no demand", func() bool {
		return demandIs(nil)
	})
}
