package serverlet_test

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/serverlet"
)

// cascadeClip is the source of the cascade tests: 6 s, no B-frames, so an
// output picture's PTS names the source picture it was made of.
var cascadeClip = testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 6, GOP: 50}

// A rung whose pipeline begins with a scale takes, on the decoder's
// thread, the picture of the smallest larger rung that only scales
// (serverlets.cascade_scale, the default): the serverlets API names that
// rung; a rung with another filter (maxfps) is no one's source; every
// output decodes at its size without a gap; the pictures are as good as
// the source's scaled directly (the smallest rung's PSNR against the
// source scaled by FFmpeg is within 0.3 dB of the same ladder with
// cascade_scale off); and when the larger rung stops, the smaller ones
// scale the source again without a gap.
func TestCascadeScaleTakesALargerRungsPicture(t *testing.T) {
	ref := scaledReference(t, 320, 180)

	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{Slots: 8, Ladder: map[string]string{
		"360p": "scale x360 800k", "270p15": "scale x270 400k maxfps=15", "180p": "scale x180 300k"}})
	publishClip(t, hub, "live/cam1", cascadeClip)
	cs := map[string]*collector{}
	for _, rend := range []string{"360p", "270p15", "180p"} {
		cs[rend] = collect(t, hub, "live/cam1@"+rend)
	}
	testutil.Eventually(t, 20*time.Second, "three rungs output 60 frames each (30 at 15 fps)", func() bool {
		return cs["360p"].video() >= 60 && cs["270p15"].video() >= 30 && cs["180p"].video() >= 60
	})
	rs := rungStats(m)
	for rend, want := range map[string]string{"360p": "", "270p15": "360p", "180p": "360p"} {
		if s := rs[rend]; !s.Inline || s.ScaledFrom != want {
			t.Errorf("%s: inline %v, scaled_from %q, want inline from %q", rend, s.Inline, s.ScaledFrom, want)
		}
	}
	checkDecodes(t, cs["360p"], 640, 360)
	checkDecodes(t, cs["270p15"], 480, 270)
	checkDecodes(t, cs["180p"], 320, 180)
	for rend, c := range cs {
		noGap(t, rend, c)
	}
	on := rungPSNR(t, cs["180p"], ref)

	// The larger rung goes: the others scale the source from the next frame.
	cs["360p"].r.Close()
	n180, n270 := cs["180p"].video(), cs["270p15"].video()
	testutil.Eventually(t, 20*time.Second, "360p stopped, the others scale the source and go on", func() bool {
		rs := rungStats(m)
		_, up := rs["360p"]
		return !up && rs["180p"].Inline && rs["180p"].ScaledFrom == "" && rs["270p15"].ScaledFrom == "" &&
			cs["180p"].video() >= n180+50 && cs["270p15"].video() >= n270+25
	})
	checkDecodes(t, cs["180p"], 320, 180)
	checkDecodes(t, cs["270p15"], 480, 270)
	noGap(t, "180p after 360p stopped", cs["180p"])
	noGap(t, "270p15 after 360p stopped", cs["270p15"])

	// The same rungs without the cascade, for the quality it should match.
	off := false
	hub2, m2, _ := newTestManager(t, serverlet.ManagerConfig{Slots: 8, CascadeScale: &off, Ladder: map[string]string{
		"360p": "scale x360 800k", "180p": "scale x180 300k"}})
	publishClip(t, hub2, "live/cam1", cascadeClip)
	c360, c180 := collect(t, hub2, "live/cam1@360p"), collect(t, hub2, "live/cam1@180p")
	testutil.Eventually(t, 20*time.Second, "two rungs output 60 frames each", func() bool {
		return c360.video() >= 60 && c180.video() >= 60
	})
	if s := rungStats(m2)["180p"]; !s.Inline || s.ScaledFrom != "" {
		t.Errorf("cascade_scale off: 180p inline %v scaled_from %q, want inline from the source", s.Inline, s.ScaledFrom)
	}
	direct := rungPSNR(t, c180, ref)
	t.Logf("180p PSNR against the source scaled directly: %.2f dB from the 360p rung's picture, %.2f dB from the source's", on, direct)
	if on < 30 || math.Abs(on-direct) > 0.3 {
		t.Errorf("180p PSNR %.2f dB from the 360p rung's picture, %.2f dB from the source's: want > 30 dB and within 0.3 dB", on, direct)
	}
}

// scaledReference is the cascade clip's pictures scaled to w×h by FFmpeg
// (bicubic, as the scale serverlet), the luma planes in order.
func scaledReference(t *testing.T, w, h int) [][]byte {
	t.Helper()
	clip := testutil.Clip(t, cascadeClip)
	out := filepath.Join(t.TempDir(), "ref.yuv")
	cmd := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-vf", "scale="+strconv.Itoa(w)+":"+strconv.Itoa(h)+":flags=bicubic",
		"-pix_fmt", "yuv420p", "-f", "rawvideo", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	size := w * h * 3 / 2
	var ys [][]byte
	for off := 0; off+size <= len(raw); off += size {
		ys = append(ys, raw[off:off+w*h])
	}
	return ys
}

// rungPSNR is the mean luma PSNR of c's decoded pictures from the clip's
// first pass against ref, matched by PTS.
func rungPSNR(t *testing.T, c *collector, ref [][]byte) float64 {
	t.Helper()
	frames := decodeVideo(t, c.r.Description(), c.units())
	var sum float64
	n := 0
	for _, f := range frames {
		i := int(math.Round(float64(f.PTS) / 1e6 * float64(cascadeClip.FPS)))
		if i < 0 || i >= len(ref) || len(f.Y) != len(ref[i]) {
			continue
		}
		var se float64
		for j, v := range f.Y {
			d := float64(v) - float64(ref[i][j])
			se += d * d
		}
		mse := se / float64(len(f.Y))
		sum += 10 * math.Log10(255*255/math.Max(mse, 1e-3))
		n++
	}
	if n < 30 {
		t.Fatalf("%s: %d pictures matched the reference, want 30", c.r.Stream().Path(), n)
	}
	return sum / float64(n)
}
