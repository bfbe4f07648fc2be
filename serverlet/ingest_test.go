package serverlet_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// The ingest transcoder makes H.264 of VP8 and VP9: every picture out,
// an IDR at each source keyframe and only there, SPS/PPS known after the
// first frame; a publisher that changes its picture size mid-stream
// (here to a smaller one) still gets pictures of the first size, and a
// frame that is not VP8 is an error, not a crash.
func TestIngestTranscoderMakesH264OfVP8AndVP9(t *testing.T) {
	for _, codec := range []string{"VP8", "VP9"} {
		tc, err := serverlet.NewIngestTranscoder(codec, serverlet.EncoderConfig{})
		if err != nil {
			t.Fatal(err)
		}
		_, big := testutil.VPXClip(t, strings.ToLower(codec), "320x240", 30, 1, 10)
		_, small := testutil.VPXClip(t, strings.ToLower(codec), "160x120", 30, 1, 10)
		frames := append(big, small...)
		var units []*media.Unit
		for i, f := range frames {
			us, err := tc.Transcode(f, time.Duration(i)*time.Second/30, i%10 == 0)
			if err != nil {
				t.Fatalf("%s frame %d: %v", codec, i, err)
			}
			units = append(units, us...)
		}
		if len(units) != len(frames) {
			t.Errorf("%s: %d access units of %d frames", codec, len(units), len(frames))
		}
		for i, u := range units {
			if want := i%10 == 0; u.Key != want {
				t.Errorf("%s unit %d (PTS %v): key %v, want %v", codec, i, u.PTS, u.Key, want)
			}
		}
		sps, pps := tc.ParameterSets()
		desc := media.Description{Tracks: []*media.Track{{Codec: media.CodecH264, SPS: sps, PPS: pps}}}
		if w, h, _, err := desc.Tracks[0].Video(); err != nil || w != 320 || h != 240 {
			t.Fatalf("%s: SPS %dx%d %v, want 320x240", codec, w, h, err)
		}
		dec, err := testutil.NewH264Decoder()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, u := range units {
			fs, err := dec.Decode(u.Data, int64(u.PTS/time.Microsecond))
			if err != nil {
				t.Fatalf("%s: decode H.264: %v", codec, err)
			}
			for _, f := range fs {
				if f.Width != 320 || f.Height != 240 {
					t.Fatalf("%s: decoded %dx%d, want 320x240 throughout", codec, f.Width, f.Height)
				}
				n++
			}
		}
		dec.Close()
		if n < len(frames)-2 {
			t.Errorf("%s: %d pictures decoded of %d frames", codec, n, len(frames))
		}
		if _, err := tc.Transcode([]byte("not a frame at all"), 3*time.Second, false); err == nil {
			t.Logf("%s: garbage frame passed the decoder without an error", codec)
		}
		tc.Close()
	}
	if _, err := serverlet.NewIngestTranscoder("AV1", serverlet.EncoderConfig{}); err == nil {
		t.Error("an AV1 ingest transcoder opened, want an error naming what is taken")
	}
}
