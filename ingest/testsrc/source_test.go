package testsrc

import (
	"context"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// TestSourceReleasesFramesInRealTime counts what the source emits in 2 s:
// FPS×2 video frames and 48000×2/1024 audio frames, ±10%.
func TestSourceReleasesFramesInRealTime(t *testing.T) {
	t.Parallel()
	s, err := NewSource(testConfig(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	video, audio := s.Description().VideoTrack(), s.Description().AudioTrack()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts := map[int]int{}
	for {
		u, err := s.Next(ctx)
		if err != nil {
			break
		}
		counts[u.Track]++
	}
	if v := counts[video]; v < 27 || v > 33 {
		t.Errorf("%d video frames in 2 s at 15 fps, want 30±10%%", v)
	}
	if a := counts[audio]; a < 84 || a > 103 {
		t.Errorf("%d AAC frames in 2 s, want 94±10%%", a)
	}
}

// TestSourceStampsCaptureTimeAndRepeatsParameterSets checks every video
// unit: a capture-time SEI close to now and increasing, an IDR once per
// second (FPS frames), SPS and PPS in band before each IDR, the PTS
// advancing one frame at a time, and a decodable 320x240 picture.
func TestSourceStampsCaptureTimeAndRepeatsParameterSets(t *testing.T) {
	t.Parallel()
	cfg := testConfig("")
	cfg.Audio = false
	s, err := NewSource(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := len(s.Description().Tracks); got != 1 {
		t.Fatalf("%d tracks without audio, want 1", got)
	}
	if w, h, _, err := s.Description().Tracks[0].Video(); err != nil || w != 320 || h != 240 {
		t.Fatalf("SPS says %dx%d (%v), want 320x240", w, h, err)
	}
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()

	var last time.Time
	decoded := 0
	for i := 0; i < 2*cfg.FPS+1; i++ {
		u, err := s.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ct, ok := media.CaptureTime(u.Data)
		if !ok {
			t.Fatalf("frame %d has no capture-time SEI", i)
		}
		if d := time.Since(ct); d < -2*time.Second || d > 2*time.Second {
			t.Fatalf("frame %d captured %v ago, want within ±2 s", i, d)
		}
		if !ct.After(last) {
			t.Fatalf("frame %d capture time %v not after %v", i, ct, last)
		}
		last = ct
		if want := time.Duration(i) * time.Second / time.Duration(cfg.FPS); u.PTS != want || u.DTS != u.PTS {
			t.Fatalf("frame %d PTS %v DTS %v, want both %v", i, u.PTS, u.DTS, want)
		}
		if key := i%cfg.FPS == 0; u.Key != key || h264.IsRandomAccess(u.Data) != key {
			t.Fatalf("frame %d key=%v IDR=%v, want an IDR exactly every %d frames", i, u.Key, h264.IsRandomAccess(u.Data), cfg.FPS)
		}
		if u.Key {
			var sps, pps bool
			for _, n := range u.Data {
				sps = sps || h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS
				pps = pps || h264.NALUType(n[0]&0x1f) == h264.NALUTypePPS
			}
			if !sps || !pps {
				t.Fatalf("IDR frame %d without in-band SPS/PPS", i)
			}
		}
		frames, err := dec.Decode(u.Data, int64(i))
		if err != nil {
			t.Fatalf("decode frame %d: %v", i, err)
		}
		for _, f := range frames {
			if f.Width != 320 || f.Height != 240 {
				t.Fatalf("decoded %dx%d, want 320x240", f.Width, f.Height)
			}
		}
		decoded += len(frames)
	}
	if decoded < 2*cfg.FPS {
		t.Fatalf("decoded %d of %d frames", decoded, 2*cfg.FPS+1)
	}
}

func TestWithCaptureSEIGoesAfterTheDelimiter(t *testing.T) {
	now := time.Now()
	aud := []byte{byte(h264.NALUTypeAccessUnitDelimiter), 0xf0}
	idr := []byte{byte(h264.NALUTypeIDR) | 0x60, 0x88}
	for _, tc := range []struct {
		name string
		in   [][]byte
		sei  int
	}{
		{"no AUD", [][]byte{idr}, 0},
		{"AUD first", [][]byte{aud, idr}, 1},
	} {
		out := withCaptureSEI(tc.in, now)
		if len(out) != len(tc.in)+1 {
			t.Fatalf("%s: %d NAL units, want %d", tc.name, len(out), len(tc.in)+1)
		}
		ct, ok := media.ParseCaptureSEI(out[tc.sei])
		if !ok || !ct.Equal(now) {
			t.Fatalf("%s: NAL unit %d is not the capture SEI for %v", tc.name, tc.sei, now)
		}
		if got := out[len(out)-1]; &got[0] != &idr[0] {
			t.Fatalf("%s: the slice is not last", tc.name)
		}
	}
}

// TestSourceSkipsFramesAfterAStall simulates a process stalled for 5 s:
// the source resumes at the current time instead of bursting the missed
// frames out faster than real time.
func TestSourceSkipsFramesAfterAStall(t *testing.T) {
	s, err := NewSource(testConfig(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.start = s.start.Add(-5 * time.Second) // as if Next had not been called for 5 s
	var last [2]time.Duration
	for i := 0; i < 10; i++ {
		u, err := s.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if u.PTS < last[u.Track] {
			t.Fatalf("track %d PTS went back from %v to %v", u.Track, last[u.Track], u.PTS)
		}
		last[u.Track] = u.PTS
	}
	if v := last[s.Description().VideoTrack()]; v < 4900*time.Millisecond {
		t.Fatalf("video resumed at PTS %v after a 5 s stall, want ≈5 s (frames skipped)", v)
	}
}
