package testutil

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
)

// VPXClip makes a testsrc2 clip in an IVF file with ffmpeg: codec "vp8"
// (libvpx) or "vp9" (libvpx-vp9), size "WxH", fps frames a second for
// seconds, a keyframe every gop frames. It returns the file and its frames.
func VPXClip(t testing.TB, codec, size string, fps, seconds, gop int) (string, [][]byte) {
	t.Helper()
	enc := map[string]string{"vp8": "libvpx", "vp9": "libvpx-vp9"}[codec]
	if enc == "" {
		t.Fatalf("VPXClip: codec %q, want vp8 or vp9", codec)
	}
	out := filepath.Join(t.TempDir(), codec+"-"+size+".ivf")
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size="+size+":rate="+strconv.Itoa(fps),
		"-t", strconv.Itoa(seconds), "-c:v", enc, "-b:v", "400k", "-g", strconv.Itoa(gop), "-keyint_min", strconv.Itoa(gop),
		"-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %s clip: %v\n%s", codec, err, b)
	}
	frames, err := IVFFrames(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, frames
}

// IVFFrames reads every frame of an IVF file.
func IVFFrames(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, _, err := ivfreader.NewWith(f)
	if err != nil {
		return nil, err
	}
	var frames [][]byte
	for {
		b, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return frames, err
		}
		frames = append(frames, b)
	}
}
