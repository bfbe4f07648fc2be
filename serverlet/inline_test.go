package serverlet_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/serverlet"
)

// noGap fails when c's output timeline has a hole of more than 600 ms
// (a rung that stalled or restarted would wait for a keyframe, 2 s away).
func noGap(t *testing.T, name string, c *collector) {
	t.Helper()
	var prev time.Duration
	v := c.r.Description().VideoTrack()
	for _, u := range c.units() {
		if u.Track != v {
			continue
		}
		if prev != 0 && u.PTS-prev > 600*time.Millisecond {
			t.Errorf("%s: %v gap in the output at %v", name, u.PTS-prev, u.PTS)
		}
		prev = u.PTS
	}
}

// The rungs of a shared decode run on the decoder's thread by default; a
// rung with a Go frame function keeps a thread of its own; the CPU time
// a rung uses on the decoder's thread is counted as the rung's, not the
// decoder's.
func TestLadderRungsRunOnTheDecodersThread(t *testing.T) {
	reg := serverlet.NewRegistry()
	if err := reg.Register("touch", func(serverlet.Args) (serverlet.Serverlet, error) {
		return serverlet.FrameFunc(func(*serverlet.Frame) error { return nil }), nil
	}); err != nil {
		t.Fatal(err)
	}
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{Slots: 8, Registry: reg, Ladder: map[string]string{
		"360p": "scale x360 800k", "240p": "scale x240 400k", "touch": "scale x180 250k | touch"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 6, GOP: 50})
	cs := map[string]*collector{}
	for _, rend := range []string{"360p", "240p", "touch"} {
		cs[rend] = collect(t, hub, "live/cam1@"+rend)
	}
	testutil.Eventually(t, 20*time.Second, "three rungs output 50 frames each", func() bool {
		return cs["360p"].video() >= 50 && cs["240p"].video() >= 50 && cs["touch"].video() >= 50
	})
	st := m.Stats()
	if len(st.Decoders) != 1 || len(st.Decoders[0].Rungs) != 3 {
		t.Fatalf("decoders %+v: want one feeding three rungs", st.Decoders)
	}
	rs := rungStats(m)
	for rend, want := range map[string]bool{"360p": true, "240p": true, "touch": false} {
		if s := rs[rend]; s.Inline != want || !s.SharedDecode {
			t.Errorf("%s: inline %v shared %v, want inline %v on the shared decoder", rend, s.Inline, s.SharedDecode, want)
		}
	}
	// Scaling 720p and encoding 360p costs more than decoding it
	// (libx264 alone is about half a ladder's CPU), so the 360p rung's
	// share must show in its own figure.
	if d, r := st.Decoders[0].CPUSeconds, rs["360p"].CPUSeconds; r <= 0 || d <= 0 || rs["240p"].CPUSeconds <= 0 {
		t.Errorf("CPU seconds: decoder %.3f, 360p %.3f, 240p %.3f: want each rung's own share counted", d, r, rs["240p"].CPUSeconds)
	}
	checkDecodes(t, cs["360p"], 640, 360)
	checkDecodes(t, cs["240p"], 426, 240)
	checkDecodes(t, cs["touch"], 320, 180)
	for rend, c := range cs {
		noGap(t, rend, c)
	}
}

// A decoder's thread that is busy moves its rungs, one per check, to
// threads of their own; their output goes on without a gap.
func TestBusyDecoderMovesRungsToTheirOwnThreads(t *testing.T) {
	// Every check finds the thread busy.
	hub, m, logs := newTestManager(t, serverlet.ManagerConfig{Slots: 8, InlineBusyMax: 1e-6})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 6, GOP: 50})
	cs := map[string]*collector{}
	for _, rend := range []string{"360p", "240p", "180p"} {
		cs[rend] = collect(t, hub, "live/cam1@"+rend)
	}
	testutil.Eventually(t, 20*time.Second, "every rung on a thread of its own", func() bool {
		rs := rungStats(m)
		if len(rs) != 3 {
			return false
		}
		for _, s := range rs {
			if s.Inline {
				return false
			}
		}
		return true
	})
	if n := strings.Count(logs.String(), "a rung moves to a thread of its own"); n != 3 {
		t.Errorf("%d move lines logged, want 3 (one per rung)", n)
	}
	mid := rungStats(m)
	testutil.Eventually(t, 10*time.Second, "the rungs go on", func() bool {
		now := rungStats(m)
		for rend := range cs {
			if now[rend].FramesOut < mid[rend].FramesOut+50 {
				return false
			}
		}
		return true
	})
	checkDecodes(t, cs["360p"], 640, 360)
	checkDecodes(t, cs["240p"], 426, 240)
	checkDecodes(t, cs["180p"], 320, 180)
	for rend, c := range cs {
		noGap(t, rend, c)
		if s := rungStats(m)[rend]; s.Dropped != 0 {
			t.Errorf("%s dropped %d frames", rend, s.Dropped)
		}
	}
}

// A rung that panics on the decoder's thread ends alone: the decoder and
// the other rungs go on.
func TestInlineRungPanicEndsOnlyThatRung(t *testing.T) {
	var n atomic.Int32
	hub, m, logs := newTestManager(t, serverlet.ManagerConfig{Slots: 8, InlineItemHook: func(rend string) {
		if rend == "240p" && n.Add(1) == 30 {
			panic("test: 240p on the decoder's thread")
		}
	}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 4})
	a := collect(t, hub, "live/cam1@360p")
	b := collect(t, hub, "live/cam1@240p")
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		t.Fatal("240p did not end")
	}
	if !strings.Contains(logs.String(), "test: 240p on the decoder's thread") {
		t.Error("the panic is not logged")
	}
	testutil.Eventually(t, 10*time.Second, "the failure counted", func() bool { return m.Stats().Failed >= 1 })
	mid := rungStats(m)
	if !mid["360p"].Inline {
		t.Errorf("360p: %+v, want it inline", mid["360p"])
	}
	testutil.Eventually(t, 10*time.Second, "360p goes on", func() bool {
		return rungStats(m)["360p"].FramesOut >= mid["360p"].FramesOut+25
	})
	if st := m.Stats(); len(st.Decoders) != 1 || len(st.Decoders[0].Rungs) != 1 || st.Decoders[0].Rungs[0] != "360p" {
		t.Errorf("decoders %+v: want one feeding 360p", st.Decoders)
	}
	checkDecodes(t, a, 640, 360)
	noGap(t, "360p", a)
}

func TestInlineRungsOff(t *testing.T) {
	off := false
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{InlineRungs: &off})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 4})
	a := collect(t, hub, "live/cam1@240p")
	b := collect(t, hub, "live/cam1@180p")
	testutil.Eventually(t, 20*time.Second, "both rungs output", func() bool { return a.video() >= 25 && b.video() >= 25 })
	for rend, s := range rungStats(m) {
		if s.Inline || !s.SharedDecode {
			t.Errorf("%s: inline %v shared %v, want its own thread on the shared decoder", rend, s.Inline, s.SharedDecode)
		}
	}
	checkDecodes(t, a, 426, 240)
	checkDecodes(t, b, 320, 180)
}
