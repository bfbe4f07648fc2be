package testsrc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

func TestMain(m *testing.M) {
	// libx264's banner and drawtext's font choice are noise in test logs.
	astiav.SetLogLevel(astiav.LogLevelError)
	os.Exit(m.Run())
}

// testConfig is a small, cheap stream for tests.
func testConfig(url string) Config {
	return Config{URL: url, Width: 320, Height: 240, FPS: 15, Bitrate: 300_000, Audio: true, Preset: "ultrafast"}
}

// publishUntil runs a Publisher into a listener that the test has just
// started as a separate process, retrying while it is not yet listening,
// until stop is closed. It returns the Publisher's last error.
func publishUntil(t *testing.T, cfg Config, stop <-chan struct{}) <-chan error {
	t.Helper()
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-stop
		cancel()
	}()
	go func() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := p.Run(ctx)
			notUp := err != nil && (strings.Contains(err.Error(), "connection refused") ||
				strings.Contains(err.Error(), "connection timeout"))
			if !notUp || time.Now().After(deadline) {
				done <- err
				return
			}
			select {
			case <-ctx.Done():
				done <- err
				return
			case <-time.After(50 * time.Millisecond): // the listener is starting
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return done
}

type probe struct {
	Streams []struct {
		CodecType  string `json:"codec_type"`
		CodecName  string `json:"codec_name"`
		Width      int    `json:"width"`
		Height     int    `json:"height"`
		SampleRate string `json:"sample_rate"`
		Channels   int    `json:"channels"`
	} `json:"streams"`
	Frames []struct {
		MediaType string `json:"media_type"`
		PictType  string `json:"pict_type"`
		Width     int    `json:"width"`
		Height    int    `json:"height"`
	} `json:"frames"`
}

// ffprobe decodes every frame of path.
func ffprobe(t *testing.T, path string) probe {
	t.Helper()
	testutil.RequireTool(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries",
		"stream=codec_type,codec_name,width,height,sample_rate,channels:frame=media_type,pict_type,width,height",
		"-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe output: %v", err)
	}
	return p
}

// checkH264AndAAC asserts what every publish must deliver: H.264 320x240
// without B-frames, at least minFrames decoded pictures, and AAC audio.
func checkH264AndAAC(t *testing.T, p probe, minFrames int) {
	t.Helper()
	var video, audio bool
	for _, s := range p.Streams {
		switch {
		case s.CodecType == "video" && s.CodecName == "h264" && s.Width == 320 && s.Height == 240:
			video = true
		case s.CodecType == "audio" && s.CodecName == "aac" && s.SampleRate == "48000" && s.Channels == 2:
			audio = true
		}
	}
	if !video || !audio {
		t.Fatalf("want H.264 320x240 and AAC 48 kHz stereo streams, got %+v", p.Streams)
	}
	frames, audioFrames := 0, 0
	for _, f := range p.Frames {
		switch f.MediaType {
		case "video":
			frames++
			if f.PictType == "B" {
				t.Fatalf("frame %d is a B-frame", frames)
			}
			if f.Width != 320 || f.Height != 240 {
				t.Fatalf("frame %d decoded at %dx%d, want 320x240", frames, f.Width, f.Height)
			}
		case "audio":
			audioFrames++
		}
	}
	if frames < minFrames {
		t.Fatalf("ffmpeg decoded %d video frames, want at least %d", frames, minFrames)
	}
	if audioFrames == 0 {
		t.Fatal("ffmpeg decoded no audio frames")
	}
}

// checkCaptureTimes reads the H.264 access units of an MPEG-TS file and
// asserts that each carries a capture time, increasing, within the test's
// time window (±2 s).
func checkCaptureTimes(t *testing.T, path string, from, to time.Time) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &mpegts.Reader{R: f}
	if err := r.Initialize(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var last time.Time
	aus := 0
	for _, tr := range r.Tracks() {
		if _, ok := tr.Codec.(*mpegts.CodecH264); !ok {
			continue
		}
		r.OnDataH264(tr, func(_, _ int64, au [][]byte) error {
			aus++
			ct, ok := media.CaptureTime(au)
			if !ok {
				return fmt.Errorf("access unit %d has no capture-time SEI", aus)
			}
			if ct.Before(from.Add(-2*time.Second)) || ct.After(to.Add(2*time.Second)) {
				return fmt.Errorf("access unit %d captured at %v, outside the test's %v..%v", aus, ct, from, to)
			}
			if !ct.After(last) {
				return fmt.Errorf("access unit %d captured at %v, not after the previous %v", aus, ct, last)
			}
			last = ct
			return nil
		})
	}
	for {
		if err := r.Read(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			t.Fatal(err)
		}
	}
	if aus < 30 {
		t.Fatalf("read %d H.264 access units, want at least 30", aus)
	}
}

func TestPublishRTSPIsDecodedByFFmpeg(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "ffmpeg")
	port := testutil.FreePort(t, "tcp")
	url := fmt.Sprintf("rtsp://127.0.0.1:%d/live/test", port)
	out := filepath.Join(t.TempDir(), "rtsp.ts")
	from := time.Now()
	ff := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-rtsp_flags", "listen",
		"-i", url, "-t", "3", "-c", "copy", "-f", "mpegts", out)
	done := publishUntil(t, testConfig(url), ff.Done())
	if err := ff.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	if err := <-done; err != nil && strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("publisher never connected: %v", err)
	}
	checkH264AndAAC(t, ffprobe(t, out), 30)
	checkCaptureTimes(t, out, from, time.Now())
}

func TestPublishSRTIsDecodedByFFmpeg(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "ffmpeg")
	port := testutil.FreePort(t, "udp")
	out := filepath.Join(t.TempDir(), "srt.ts")
	from := time.Now()
	ff := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning",
		"-i", fmt.Sprintf("srt://127.0.0.1:%d?mode=listener", port), "-t", "3", "-c", "copy", "-f", "mpegts", out)
	// The stream name in the path becomes the streamid; conntimeo keeps
	// the retries short while ffmpeg starts listening.
	url := fmt.Sprintf("srt://127.0.0.1:%d/live/test?conntimeo=500", port)
	done := publishUntil(t, testConfig(url), ff.Done())
	if err := ff.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	if err := <-done; err != nil && strings.Contains(err.Error(), "connection timeout") {
		t.Fatalf("publisher never connected: %v", err)
	}
	checkH264AndAAC(t, ffprobe(t, out), 30)
	checkCaptureTimes(t, out, from, time.Now())
}
