package serverlet_test

import (
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// framesByPTS reads n video units of r and decodes them, keyed by PTS in µs.
func framesByPTS(t *testing.T, r *media.Reader, n int) map[int64]testutil.Frame {
	t.Helper()
	out := map[int64]testutil.Frame{}
	for _, f := range decodeVideo(t, r.Description(), readUnits(t, r, n, 20*time.Second)) {
		out[f.PTS] = f
	}
	return out
}

func TestAnnotateChangesOnlyTheTextRegion(t *testing.T) {
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{Ladder: map[string]string{
		// The same size at a high bitrate, so that re-encoding alone
		// changes the picture little.
		"caption": "scale 320x240 2M | annotate text='GRADIENT' x=8 y=8 size=32 box=0.9",
	}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, Bitrate: "2M"})
	src, err := hub.Subscribe("live/cam1", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, err := hub.Subscribe("live/cam1@caption", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srcFrames := framesByPTS(t, src, 60)
	outFrames := framesByPTS(t, r, 45)

	// Mean absolute luma difference per 16x16 block, over frames present
	// in both.
	const bs = 16
	bw, bh := 320/bs, 240/bs
	sum := make([]float64, bw*bh)
	n := 0
	for pts, o := range outFrames {
		s, ok := srcFrames[pts]
		if !ok {
			continue
		}
		n++
		for y := 0; y < 240; y++ {
			for x := 0; x < 320; x++ {
				d := int(o.Y[y*320+x]) - int(s.Y[y*320+x])
				if d < 0 {
					d = -d
				}
				sum[(y/bs)*bw+x/bs] += float64(d)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d frames of the source and @caption share a PTS", n)
	}
	// The text box starts at (8,8) and is about 32+8 px tall; "GRADIENT"
	// at 32 px is well over 100 px wide.
	var text, far float64
	for by := 0; by < bh; by++ {
		for bx := 0; bx < bw; bx++ {
			d := sum[by*bw+bx] / float64(n*bs*bs)
			x0, y0 := bx*bs, by*bs
			switch {
			case x0 >= 16 && x0+bs <= 112 && y0 >= 16 && y0+bs <= 40:
				text = max(text, d)
			case y0 >= 80 || x0 >= 240: // far from the text
				far = max(far, d)
			}
		}
	}
	t.Logf("largest mean |ΔY| per block: in the text %.1f, far from it %.1f (%d frames)", text, far, n)
	if text < 25 {
		t.Errorf("text region differs by %.1f on average, want > 25: no text burnt in", text)
	}
	if far > 6 {
		t.Errorf("a block far from the text differs by %.1f, want < 6", far)
	}
}

func TestAnnotateImageOverlaysOnlyItsRectangle(t *testing.T) {
	// A 64x48 opaque white PNG, placed at (200,150).
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	file := filepath.Join(t.TempDir(), "logo.png")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{Ladder: map[string]string{
		"ad": "scale 320x240 2M | annotate image=" + file + " x=200 y=150 opacity=1",
	}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, Bitrate: "2M"})
	r, err := hub.Subscribe("live/cam1@ad", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	frames := decodeVideo(t, r.Description(), readUnits(t, r, 20, 10*time.Second))
	if len(frames) < 15 {
		t.Fatalf("decoded %d frames", len(frames))
	}
	white, outside := 0, 0
	for _, fr := range frames {
		for y := 0; y < 240; y++ {
			for x := 0; x < 320; x++ {
				v := fr.Y[y*320+x]
				in := x >= 204 && x < 260 && y >= 154 && y < 194
				if in && v >= 230 {
					white++
				}
				if !in && (x < 190 || y < 140) && v >= 250 {
					outside++
				}
			}
		}
	}
	total := len(frames) * 56 * 40
	if white < total*95/100 {
		t.Errorf("%d of %d pixels inside the image are white, want all", white, total)
	}
	t.Logf("white pixels: %d/%d inside the image, %d far outside", white, total, outside)
}
