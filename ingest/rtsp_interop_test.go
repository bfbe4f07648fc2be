package ingest_test

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// rtspDecodeClean reads url over RTSP with ffprobe, decoding video for
// 3 s, and fails the test if FFmpeg logs any error (a reader that starts
// in the middle of a GOP or of an access unit does) or decodes fewer than
// minFrames pictures.
func rtspDecodeClean(t *testing.T, url string, minFrames int) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0",
		"-count_frames", "-read_intervals", "%+3", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Fatalf("ffprobe logged decode errors reading %s:\n%s", url, s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.Split(string(out), "\n")[0]))
	if err != nil || n < minFrames {
		t.Fatalf("ffprobe decoded %q frames of %s, want at least %d", out, url, minFrames)
	}
}

// gstPublish publishes GStreamer's test pattern over RTSP the way
// `x264enc ! h264parse ! rtspclientsink` does with caps of its own: High
// 4:4:4 (videotestsrc offers Y444 first), B-frames, x264's 250-frame GOP,
// every frame in several slices behind an access unit delimiter.
func gstPublish(t *testing.T, url string) { gstPublishArgs(t, url) }

// gstPublishArgs is gstPublish with more x264enc properties.
func gstPublishArgs(t *testing.T, url string, x264 ...string) {
	t.Helper()
	if _, err := exec.LookPath("gst-launch-1.0"); err != nil {
		t.Skip("gst-launch-1.0 not installed: run scripts/setup.sh (Debian gstreamer1.0-tools, gstreamer1.0-rtsp, gstreamer1.0-plugins-{base,good,bad,ugly})")
	}
	args := []string{"-q", "videotestsrc", "is-live=true", "!",
		"video/x-raw,format=Y444,width=320,height=240,framerate=30/1", "!",
		"x264enc", "sliced-threads=true", "threads=3"}
	args = append(args, x264...)
	args = append(args, "!", "h264parse", "!", "rtspclientsink", "protocols=tcp", "location="+url)
	testutil.Start(t, "gst-launch-1.0", args...)
}

// Every reader that opens a stream starts at an IDR of the GOP cache, so
// FFmpeg decodes from its first packet on. Before, the GOP cache was
// written to the shared stream before the reader played, and the reader
// started at the live edge: with GStreamer's long GOPs that is seconds of
// "co located POCs unavailable", "Reference 3 >= 3", "decode_slice_header
// error".
func TestRTSPReadersOfAGStreamerPublisherDecodeWithoutErrors(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	gstPublish(t, n.url("live/gst"))
	n.readTwiceIntoTheGOP(t, "live/gst")
}

// readTwiceIntoTheGOP opens path twice, one reader after the other, each
// some frames into the GOP as a viewer does, and checks that each decodes
// cleanly.
func (n *rtspNode) readTwiceIntoTheGOP(t *testing.T, path string) {
	t.Helper()
	s := n.waitPublished(t, path)
	for i := 0; i < 2; i++ {
		testutil.Eventually(t, 10*time.Second, "the stream goes on", func() bool {
			return s.Info().UnitsIn > uint64(30*(i+1))
		})
		rtspDecodeClean(t, n.url(path), 30)
	}
}

// The same with FFmpeg as the publisher: x264 High profile, one slice a
// frame, a GOP of 2 s.
func TestRTSPReadersOfAnFFmpegPublisherDecodeWithoutErrors(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 8, GOP: 60})
	testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/ff"), "-rtsp_transport", "tcp")
	n.readTwiceIntoTheGOP(t, "live/ff")
}

// A reader that joins a stream other readers already play waits in PLAY
// for the next IDR (GStreamer with a 1 s GOP here), instead of starting at
// the live edge mid-GOP.
func TestRTSPReaderJoiningAPlayingStreamStartsAtAnIDR(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	gstPublishArgs(t, n.url("live/gst"), "key-int-max=30")
	n.waitPublished(t, "live/gst")
	first, err := rtspPlay(t, n.url("live/gst"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		testutil.Eventually(t, 10*time.Second, "the first reader receives video", func() bool {
			return first.Stats().AccessUnits > 15*(i+1)
		})
		rtspDecodeClean(t, n.url("live/gst"), 30)
	}
}
