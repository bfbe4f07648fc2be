package serverlet_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

func TestScaleRenditionHasLadderSizeAndSourceKeyframes(t *testing.T) {
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4, GOP: 15})
	src, err := hub.Subscribe("live/cam1", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, err := hub.Subscribe("live/cam1@180p", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, h, _, err := r.Description().Tracks[r.Description().VideoTrack()].Video()
	if err != nil || w != 320 || h != 180 {
		t.Fatalf("@180p SPS says %dx%d (%v), want 320x180", w, h, err)
	}
	units := readUnits(t, r, 75, 15*time.Second)
	srcUnits := readUnits(t, src, 90, 15*time.Second)

	frames := decodeVideo(t, r.Description(), units)
	if len(frames) < 70 {
		t.Fatalf("decoded %d frames of @180p, want 70", len(frames))
	}
	for _, f := range frames {
		if f.Width != 320 || f.Height != 180 {
			t.Fatalf("frame %dx%d, want 320x180", f.Width, f.Height)
		}
	}
	// Keyframes: every source IDR within the rendition's span is an IDR of
	// the rendition at the same PTS, and the rendition has no others.
	srcKeys := map[time.Duration]bool{}
	for _, u := range srcUnits {
		if u.Track == src.Description().VideoTrack() && u.Key {
			srcKeys[u.PTS] = true
		}
	}
	var keys []time.Duration
	first, last := units[0].PTS, units[len(units)-1].PTS
	for _, u := range units {
		if u.Key {
			keys = append(keys, u.PTS)
			if !srcKeys[u.PTS] && u.PTS <= srcUnits[len(srcUnits)-1].PTS && u.PTS >= srcUnits[0].PTS {
				t.Errorf("@180p keyframe at %v is not a source keyframe (source: %v)", u.PTS, srcKeys)
			}
		}
	}
	inSpan := 0
	for k := range srcKeys {
		if k >= first && k <= last {
			inSpan++
		}
	}
	if len(keys) < 4 || len(keys) != inSpan {
		t.Errorf("@180p has %d keyframes %v; the source has %d in the same span", len(keys), keys, inSpan)
	}
	st := m.Stats()
	if st.Used != 1 || len(st.Serverlets) != 1 || st.Serverlets[0].FramesOut == 0 || st.Serverlets[0].CPUSeconds <= 0 {
		t.Errorf("stats %+v: want one serverlet with frames and CPU time", st)
	}
}

func TestRenditionTallerThanSourceIsNotFound(t *testing.T) {
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4})
	for _, rend := range []string{"720p", "1080p", "nosuch"} {
		_, err := hub.Subscribe("live/cam1@"+rend, "test")
		if !errors.Is(err, media.ErrNotFound) || !errors.Is(err, serverlet.ErrNoSuchRendition) {
			t.Errorf("@%s: err %v, want serverlet.ErrNoSuchRendition (a media.ErrNotFound)", rend, err)
		}
	}
	if st := m.Stats(); st.Used != 0 {
		t.Errorf("refused renditions hold %d slots", st.Used)
	}
}

func TestFPSServerletHalvesFrameRateKeepingKeyframes(t *testing.T) {
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{Ladder: map[string]string{"15fps": "fps 15"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 30})
	r, err := hub.Subscribe("live/cam1@15fps", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	units := readUnits(t, r, 46, 10*time.Second)
	span := units[len(units)-1].PTS - units[0].PTS
	fps := float64(len(units)-1) / span.Seconds()
	keys := 0
	for _, u := range units {
		if u.Key {
			keys++
			if u.PTS%time.Second > 40*time.Millisecond && u.PTS%time.Second < 960*time.Millisecond {
				t.Errorf("keyframe at %v: the source has them on whole seconds", u.PTS)
			}
		}
	}
	t.Logf("@15fps: %.1f fps over %v, %d keyframes", fps, span, keys)
	if fps < 14 || fps > 16 {
		t.Errorf("@15fps runs at %.1f fps", fps)
	}
	if keys < 2 {
		t.Errorf("%d keyframes in 3 s of a stream with one a second", keys)
	}
}
