package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/ingest/testsrc"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// ffmpegDecode reads url with the ffmpeg command, decodes frames video
// frames and returns the size of each (from showinfo).
func ffmpegDecode(t *testing.T, url string, frames int, extra ...string) []string {
	t.Helper()
	args := append([]string{"-hide_banner", "-nostats"}, extra...)
	args = append(args, "-i", url, "-frames:v", strconv.Itoa(frames), "-vf", "showinfo", "-f", "null", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, tailString(string(out), 3000))
	}
	re := regexp.MustCompile(`Parsed_showinfo.* n: *\d+ .* s:(\d+x\d+)`)
	var sizes []string
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		sizes = append(sizes, m[1])
	}
	return sizes
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func assertFrames(t *testing.T, what string, sizes []string, n int, size string) {
	t.Helper()
	if len(sizes) < n {
		t.Fatalf("%s: decoded %d frames, want at least %d", what, len(sizes), n)
	}
	for i, s := range sizes {
		if s != size {
			t.Fatalf("%s: frame %d is %s, want %s", what, i, s, size)
		}
	}
}

func TestRTSPPublishPlaysOverRTSPAndHLS(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5, Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")

	var wg sync.WaitGroup
	var rtspSizes, hlsSizes []string
	wg.Add(2)
	go func() {
		defer wg.Done()
		rtspSizes = ffmpegDecode(t, n.rtspURL("live/cam1"), 60, "-rtsp_transport", "tcp")
	}()
	go func() {
		defer wg.Done()
		hlsSizes = ffmpegDecode(t, n.httpURL("live/cam1/index.m3u8"), 60)
	}()
	wg.Wait()
	assertFrames(t, "RTSP read", rtspSizes, 60, "320x240")
	assertFrames(t, "HLS read", hlsSizes, 60, "320x240")
}

// whepFrames plays url with the Go WHEP client, decodes want frames with
// FFmpeg and returns their sizes and the capture-to-arrival latencies of
// the access units that carried a capture SEI.
func whepFrames(t *testing.T, url string, want int) (sizes []string, latencies []time.Duration) {
	t.Helper()
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var mu sync.Mutex
	done := make(chan struct{})
	var decErr error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := testutil.DialWHEP(ctx, url, testutil.WHEPOptions{Loopback: true, OnAU: func(au testutil.WHEPAccessUnit) {
		mu.Lock()
		defer mu.Unlock()
		if len(sizes) >= want || decErr != nil {
			return
		}
		if au.HasCapture {
			latencies = append(latencies, au.Arrival.Sub(au.Capture))
		}
		frames, err := dec.Decode(au.NALUs, int64(au.RTPTimestamp))
		if err != nil {
			decErr = err
			close(done)
			return
		}
		for _, f := range frames {
			sizes = append(sizes, fmt.Sprintf("%dx%d", f.Width, f.Height))
		}
		if len(sizes) >= want {
			close(done)
		}
	}})
	if err != nil {
		t.Fatalf("WHEP %s: %v", url, err)
	}
	defer sess.Close()
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	if decErr != nil {
		t.Fatalf("decode WebRTC video: %v", decErr)
	}
	return append([]string(nil), sizes...), append([]time.Duration(nil), latencies...)
}

func TestSRTPublishPlaysOverWHEP(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5, Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "mpegts", n.srtURL("live/srt1"))
	n.waitStream(t, "live/srt1")
	sizes, _ := whepFrames(t, n.httpURL("live/srt1/whep"), 60)
	assertFrames(t, "WHEP read of SRT publish", sizes, 60, "320x240")
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

func TestTestPatternOverSRTCarriesCaptureTimeToWHEP(t *testing.T) {
	n := startNode(t)
	cfg := testsrc.DefaultConfig()
	cfg.URL = n.srtURL("live/pattern")
	cfg.Width, cfg.Height, cfg.FPS, cfg.Bitrate = 320, 240, 30, 500_000
	pub, err := testsrc.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- pub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("publisher: %v", err)
		}
	})
	n.waitStream(t, "live/pattern")
	sizes, lat := whepFrames(t, n.httpURL("live/pattern/whep"), 60)
	assertFrames(t, "WHEP read of test pattern", sizes, 60, "320x240")
	if len(lat) < 60 {
		t.Fatalf("capture SEI found on %d access units, want at least 60", len(lat))
	}
	t.Logf("capture → WHEP arrival over SRT (latency 120 ms): p50 %v, p99 %v over %d frames",
		percentile(lat, 0.5), percentile(lat, 0.99), len(lat))
}
