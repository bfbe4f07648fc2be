package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/serverlet"
)

// hubSource is the hub source of path on n, "" when it is not live there.
func (n *testNode) hubSource(path string) string {
	st, ok := n.Hub.Lookup(path)
	if !ok {
		return ""
	}
	return st.Info().Source
}

// A viewer of a rendition that a local serverlet makes keeps watching when
// a new plan brings that rendition from upstream: the planned relay takes
// the path over from the serverlet (make-before-break), and the serverlet
// and the relay of the source that fed it stop.
func TestOverlayPlannedRelayTakesARenditionOverFromALocalServerletWithoutCuttingItsViewer(t *testing.T) {
	n0 := startClusterNode(t, "n0", 1, nil)
	n1 := startClusterNode(t, "n1", 1, []string{n0.cfg.Gossip.Addr})
	testutil.Eventually(t, 15*time.Second, "n0 and n1 know each other and their RTT", func() bool {
		_, ok := n0.Members.RTT("n0", "n1")
		return ok && len(n0.Members.Alive()) == 2 && len(n1.Members.Alive()) == 2
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 960, Height: 540, FPS: 15, Seconds: 6, Bitrate: "600k"})
	testutil.FFmpegPublish(t, clip, "rtsp", n0.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n0.waitStream(t, "live/cam1")
	testutil.Eventually(t, 5*time.Second, "n1 knows live/cam1", func() bool {
		_, ok := n1.Members.Stream("live/cam1")
		return ok
	})

	// A TV at n1: the plan relays the source there.
	n1.watch(t, "live/cam1", "tv")
	tv := dialViewer(t, n1.httpURL("live/cam1/whep?device=tv"))
	testutil.Eventually(t, 15*time.Second, "the plan relays the source to n1 for its TV", func() bool {
		p, ok := n0.Members.Plan("live/cam1")
		return ok && strings.Join(arcPaths(p, "n1"), ",") == "live/cam1"
	})
	// A phone asks n1 for 360p directly: a local serverlet makes it from
	// the relayed source.
	phone := dialViewer(t, n1.httpURL("live/cam1@360p/whep?device=phone"))
	testutil.Eventually(t, 20*time.Second, "the phone decodes 640x360 made by a serverlet at n1", func() bool {
		f, w, h := phone.state()
		return f >= 10 && w == 640 && h == 360 && strings.HasPrefix(n1.hubSource("live/cam1@360p"), serverlet.SourcePrefix)
	})

	// The TV leaves: only phones remain at n1, and 360p made at n0 is the
	// cheaper tree, so the plan brings 360p to n1 instead of the source.
	tv.s.Close()
	var handover time.Time
	testutil.Eventually(t, 20*time.Second, "a plan relaying 360p to n1", func() bool {
		p, ok := n0.Members.Plan("live/cam1")
		if ok && strings.Join(arcPaths(p, "n1"), ",") == "live/cam1@360p" {
			handover = time.Now()
			return true
		}
		return false
	})
	testutil.Eventually(t, 20*time.Second, "the relay took live/cam1@360p over at n1; the serverlet and the source relay stopped", func() bool {
		st := n1.cluster(t)
		return strings.HasPrefix(n1.hubSource("live/cam1@360p"), overlay.RelaySourcePrefix) &&
			strings.Join(relayPaths(st), ",") == "live/cam1@360p" && n1.Serverlets.Stats().Used == 0
	})
	took := time.Now()
	testutil.Eventually(t, 10*time.Second, "the phone goes on decoding 640x360 after the takeover", func() bool {
		_, ok := phone.firstAfter(took.Add(time.Second))
		_, w, h := phone.state()
		return ok && w == 640 && h == 360
	})
	gap := phone.maxGapSince(handover)
	t.Logf("FIGURE serverlet→relay handover: the phone's longest gap between frames %v (plan to takeover %v)", gap, took.Sub(handover).Round(time.Millisecond))
	if gap > 2*time.Second {
		t.Errorf("the phone's frames stopped for %v during the handover, want a continuous stream", gap)
	}
	if !strings.Contains(n1.logs.String(), "stream taken over") {
		t.Error("n1's log does not say the stream was taken over")
	}
}
