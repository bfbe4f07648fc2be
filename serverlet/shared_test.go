package serverlet_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// collector reads a rendition in the background, keeping its units.
type collector struct {
	r    *media.Reader
	mu   sync.Mutex
	us   []*media.Unit
	err  error
	done chan struct{}
}

func collect(t *testing.T, hub *media.Hub, path string) *collector {
	t.Helper()
	r, err := hub.Subscribe(path, "test")
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	c := &collector{r: r, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			u, err := r.Read()
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.us = append(c.us, u)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { r.Close(); <-c.done })
	return c
}

func (c *collector) units() []*media.Unit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*media.Unit(nil), c.us...)
}

func (c *collector) video() int {
	n, v := 0, c.r.Description().VideoTrack()
	for _, u := range c.units() {
		if u.Track == v {
			n++
		}
	}
	return n
}

// rungStats returns the running serverlets by rendition name.
func rungStats(m *serverlet.Manager) map[string]serverlet.RunStats {
	out := map[string]serverlet.RunStats{}
	for _, s := range m.Stats().Serverlets {
		_, rend, _ := media.ParsePath(s.Rendition)
		out[rend] = s
	}
	return out
}

// checkDecodes decodes the collected units and checks every picture is
// w×h; it returns how many there were.
func checkDecodes(t *testing.T, c *collector, w, h int) int {
	t.Helper()
	desc := c.r.Description()
	sw, sh, _, err := desc.Tracks[desc.VideoTrack()].Video()
	if err != nil || sw != w || sh != h {
		t.Errorf("%s: SPS says %dx%d (%v), want %dx%d", c.r.Stream().Path(), sw, sh, err, w, h)
	}
	us := c.units()
	if len(us) == 0 || !us[0].Key {
		t.Fatalf("%s: %d units, the first not a keyframe", c.r.Stream().Path(), len(us))
	}
	frames := decodeVideo(t, desc, us)
	for _, f := range frames {
		if f.Width != w || f.Height != h {
			t.Fatalf("%s: decoded %dx%d, want %dx%d", c.r.Stream().Path(), f.Width, f.Height, w, h)
		}
	}
	return len(frames)
}

func TestLadderSharesOneDecoderAndRungsJoinAndLeave(t *testing.T) {
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{Slots: 8})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 6, GOP: 50})

	sizes := map[string][2]int{"720p": {1280, 720}, "480p": {854, 480}, "360p": {640, 360}, "240p": {426, 240}}
	cs := map[string]*collector{}
	for _, rend := range []string{"720p", "480p", "360p"} {
		cs[rend] = collect(t, hub, "live/cam1@"+rend)
	}
	testutil.Eventually(t, 20*time.Second, "the first three rungs output 25 frames each", func() bool {
		return cs["720p"].video() >= 25 && cs["480p"].video() >= 25 && cs["360p"].video() >= 25
	})
	st := m.Stats()
	if len(st.Decoders) != 1 || st.Decoders[0].Source != "live/cam1" ||
		!reflect.DeepEqual(st.Decoders[0].Rungs, []string{"360p", "480p", "720p"}) {
		t.Fatalf("decoders %+v: want one, of live/cam1, feeding 360p 480p 720p", st.Decoders)
	}
	started := st.Decoders[0].Started
	// As GET /api/v1/serverlets shows it (node/api.go encodes Stats).
	raw, _ := json.Marshal(st)
	var api struct {
		Decoders []struct {
			Source string   `json:"source"`
			Rungs  []string `json:"rungs"`
			Frames uint64   `json:"frames"`
			FPS    float64  `json:"fps"`
		} `json:"decoders"`
	}
	if err := json.Unmarshal(raw, &api); err != nil || len(api.Decoders) != 1 || len(api.Decoders[0].Rungs) != 3 ||
		api.Decoders[0].Frames == 0 || api.Decoders[0].FPS <= 0 {
		t.Errorf("stats JSON %s: want one decoder with 3 rungs, frames and fps", raw)
	}
	for _, s := range st.Serverlets {
		if !s.SharedDecode {
			t.Errorf("%s does not use the shared decoder", s.Rendition)
		}
	}

	// 240p joins: same decoder, and the running rungs go on without a gap.
	before := rungStats(m)
	join := time.Now()
	cs["240p"] = collect(t, hub, "live/cam1@240p")
	testutil.Eventually(t, 20*time.Second, "240p outputs 25 frames", func() bool { return cs["240p"].video() >= 25 })
	st = m.Stats()
	if len(st.Decoders) != 1 || !st.Decoders[0].Started.Equal(started) ||
		!reflect.DeepEqual(st.Decoders[0].Rungs, []string{"240p", "360p", "480p", "720p"}) {
		t.Fatalf("after 240p joined: decoders %+v, want the same one (started %v) feeding 4 rungs", st.Decoders, started)
	}
	after := rungStats(m)
	for _, rend := range []string{"720p", "480p", "360p"} {
		if after[rend].FramesOut <= before[rend].FramesOut || !after[rend].Started.Equal(before[rend].Started) {
			t.Errorf("%s: frames out %d → %d, started %v → %v: want it to keep running", rend,
				before[rend].FramesOut, after[rend].FramesOut, before[rend].Started, after[rend].Started)
		}
		// No gap in the output timeline around the join: a restarted
		// decoder would wait for the next keyframe, 2 s away at most.
		var prev time.Duration
		for _, u := range cs[rend].units() {
			if u.Received.Before(join.Add(-time.Second)) {
				prev = u.PTS
				continue
			}
			if prev != 0 && u.PTS-prev > 600*time.Millisecond {
				t.Errorf("%s: %v gap in the output at %v, around 240p's join", rend, u.PTS-prev, u.PTS)
			}
			prev = u.PTS
		}
	}
	for rend, c := range cs {
		n := checkDecodes(t, c, sizes[rend][0], sizes[rend][1])
		t.Logf("%s: %d frames decoded at %dx%d, %d dropped by the shared decoder", rend, n, sizes[rend][0], sizes[rend][1], after[rend].Dropped)
	}

	// 480p stops: its readers see the end, the others run on.
	m.Stop("live/cam1@480p")
	select {
	case <-cs["480p"].done:
	case <-time.After(5 * time.Second):
		t.Fatal("the 480p reader did not end after Stop")
	}
	mid := rungStats(m)
	testutil.Eventually(t, 10*time.Second, "the other rungs keep running", func() bool {
		now := rungStats(m)
		for _, rend := range []string{"720p", "360p", "240p"} {
			if now[rend].FramesOut < mid[rend].FramesOut+25 {
				return false
			}
		}
		return true
	})
	st = m.Stats()
	if len(st.Decoders) != 1 || !st.Decoders[0].Started.Equal(started) ||
		!reflect.DeepEqual(st.Decoders[0].Rungs, []string{"240p", "360p", "720p"}) {
		t.Fatalf("after 480p stopped: decoders %+v", st.Decoders)
	}
	if _, ok := rungStats(m)["480p"]; ok {
		t.Error("480p still runs")
	}
}

func TestLadderRungFailureEndsOnlyThatRung(t *testing.T) {
	// A Go serverlet (as an operator's plugin would be) whose frame
	// function panics on its tenth frame, after its encoder started.
	reg := serverlet.NewRegistry()
	if err := reg.Register("boom", func(serverlet.Args) (serverlet.Serverlet, error) {
		n := 0
		return serverlet.FrameFunc(func(*serverlet.Frame) error {
			if n++; n == 10 {
				panic("test: the boom rung")
			}
			return nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	hub, m, logs := newTestManager(t, serverlet.ManagerConfig{Slots: 8, Registry: reg, Ladder: map[string]string{
		"boom": "scale x180 250k | boom",
		"odd":  "scale 321x181 300k", // libx264 refuses odd sizes in 4:2:0
	}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 4})
	a := collect(t, hub, "live/cam1@360p")
	b := collect(t, hub, "live/cam1@240p")
	testutil.Eventually(t, 20*time.Second, "two rungs run", func() bool { return a.video() >= 10 && b.video() >= 10 })
	started := m.Stats().Decoders[0].Started

	for _, rend := range []string{"odd", "boom"} {
		r, err := hub.Subscribe("live/cam1@"+rend, "test")
		if err == nil {
			for err == nil {
				_, err = r.Read()
			}
			r.Close()
		}
		if err == nil {
			t.Errorf("@%s: no error, want the rendition refused or ended", rend)
		}
		t.Logf("@%s: %v", rend, err)
	}
	testutil.Eventually(t, 10*time.Second, "both failures counted", func() bool { return m.Stats().Failed >= 2 })
	for _, want := range []string{"frame function panicked: test: the boom rung", "open libx264"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	mid := rungStats(m)
	testutil.Eventually(t, 10*time.Second, "360p and 240p keep running", func() bool {
		now := rungStats(m)
		return now["360p"].FramesOut >= mid["360p"].FramesOut+25 && now["240p"].FramesOut >= mid["240p"].FramesOut+25
	})
	st := m.Stats()
	if len(st.Decoders) != 1 || !st.Decoders[0].Started.Equal(started) ||
		!reflect.DeepEqual(st.Decoders[0].Rungs, []string{"240p", "360p"}) {
		t.Fatalf("decoders %+v: want the same one feeding 240p and 360p", st.Decoders)
	}
	checkDecodes(t, a, 640, 360)
	checkDecodes(t, b, 426, 240)
	select {
	case <-a.done:
		t.Errorf("360p ended: %v", a.err)
	case <-b.done:
		t.Errorf("240p ended: %v", b.err)
	default:
	}
}

func TestSharedDecodeOffDecodesPerServerlet(t *testing.T) {
	off := false
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{SharedDecode: &off})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 4})
	cs := map[string]*collector{}
	for _, rend := range []string{"240p", "180p"} {
		cs[rend] = collect(t, hub, "live/cam1@"+rend)
	}
	testutil.Eventually(t, 20*time.Second, "both rungs output", func() bool { return cs["240p"].video() >= 25 && cs["180p"].video() >= 25 })
	st := m.Stats()
	if len(st.Decoders) != 0 {
		t.Errorf("shared_decode off, yet decoders %+v", st.Decoders)
	}
	for _, s := range st.Serverlets {
		if s.SharedDecode || s.FramesIn == 0 {
			t.Errorf("%s: %+v, want its own decoder", s.Rendition, s)
		}
	}
	checkDecodes(t, cs["240p"], 426, 240)
	checkDecodes(t, cs["180p"], 320, 180)
}

// A rung whose frame function writes into its pictures must not change
// what the other rungs of the shared decoder see: the pictures are shared
// by reference, and a frame function gets its own copy.
func TestSharedPicturesAreCopiedBeforeAFrameFunctionWrites(t *testing.T) {
	reg := serverlet.NewRegistry()
	if err := reg.Register("flat", func(serverlet.Args) (serverlet.Serverlet, error) {
		return serverlet.FrameFunc(func(f *serverlet.Frame) error {
			f.Fill(1, 128)
			f.Fill(2, 128)
			return nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	// Neither rung scales (the source is 640x360): both filter graphs pass
	// the decoder's pictures through.
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{Registry: reg, Ladder: map[string]string{
		"flat": "flat", "same": "scale x360 800k"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 4})
	flat := collect(t, hub, "live/cam1@flat")
	same := collect(t, hub, "live/cam1@same")
	testutil.Eventually(t, 20*time.Second, "both rungs output 40 frames", func() bool { return flat.video() >= 40 && same.video() >= 40 })
	if st := m.Stats(); len(st.Decoders) != 1 || len(st.Decoders[0].Rungs) != 2 {
		t.Fatalf("decoders %+v: want one feeding both rungs", st.Decoders)
	}
	// How many decoded pictures have a flat chroma plane (U within 4 values).
	flatFrames := func(c *collector) (flat, all int) {
		frames := decodeVideo(t, c.r.Description(), c.units())
		for _, f := range frames {
			lo, hi := 255, 0
			for _, v := range f.U {
				lo, hi = min(lo, int(v)), max(hi, int(v))
			}
			if hi-lo <= 4 {
				flat++
			}
		}
		return flat, len(frames)
	}
	if n, all := flatFrames(flat); n != all || all < 30 {
		t.Errorf("@flat: %d of %d pictures have a flat chroma, want all", n, all)
	}
	if n, all := flatFrames(same); n != 0 || all < 30 {
		t.Errorf("@same: %d of %d pictures have a flat chroma: the other rung's frame function wrote into the shared pictures", n, all)
	}
}
