package ingest

import (
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// vpxKeyframe reads the keyframe flag of real VP8 and VP9 frames (libvpx,
// a keyframe every 5 frames) right, and refuses what is too short or not
// a VP9 frame.
func TestVPXKeyframeReadsLibvpxFrames(t *testing.T) {
	for _, codec := range []string{"VP8", "VP9"} {
		_, frames := testutil.VPXClip(t, strings.ToLower(codec), "160x120", 10, 2, 5)
		keys := 0
		for i, frame := range frames {
			key := vpxKeyframe(codec, frame)
			if key != (i%5 == 0) {
				t.Errorf("%s frame %d: keyframe %v, want %v", codec, i, key, i%5 == 0)
			}
			if key {
				keys++
			}
		}
		if keys < 3 {
			t.Errorf("%s: %d keyframes in 2 s, want 4", codec, keys)
		}
	}
	for _, c := range []struct {
		codec string
		frame []byte
	}{{"VP8", nil}, {"VP9", nil}, {"VP9", []byte{0x00}}, {"VP9", []byte{0xff}}} {
		if vpxKeyframe(c.codec, c.frame) {
			t.Errorf("%s %x: a keyframe, want not", c.codec, c.frame)
		}
	}
}
