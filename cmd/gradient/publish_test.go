package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

func TestPublishCommandRejectsBadFlagsNamingThem(t *testing.T) {
	const url = "rtsp://127.0.0.1:8554/live/test"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--testsrc", "--size", "12x", url}, "--size"},
		{[]string{"--testsrc", "--bitrate", "fast", url}, "--bitrate"},
		{[]string{"--testsrc", "--fps", "0", url}, "--fps"},
		{[]string{"--testsrc", "--nope", url}, "-nope"},
		{[]string{"clip.mp4", url}, "only --testsrc is supported; use ffmpeg -re -i FILE -c copy -f rtsp URL"},
		{[]string{"--testsrc"}, "one URL"},
		{[]string{"--testsrc", "http://127.0.0.1:8080/x"}, "unsupported scheme"},
	} {
		err := publish(context.Background(), tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("publish %q: got %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

// TestPublishCommandAppliesSizeAndAudioFlags publishes with the CLI into
// an ffmpeg RTSP listener and checks the flags reached the stream.
func TestPublishCommandAppliesSizeAndAudioFlags(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	url := fmt.Sprintf("rtsp://127.0.0.1:%d/live/cli", testutil.FreePort(t, "tcp"))
	out := filepath.Join(t.TempDir(), "cli.ts")
	ff := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-rtsp_flags", "listen",
		"-i", url, "-t", "2", "-c", "copy", "-f", "mpegts", out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			// Flags after the URL are accepted too.
			err := publish(ctx, []string{"--testsrc", "--size", "240x160", "--fps", "15", url,
				"--bitrate", "300k", "--audio=false", "--preset", "ultrafast"}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "connection refused") || time.Now().After(deadline) {
				done <- err
				return
			}
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-time.After(50 * time.Millisecond): // ffmpeg is starting to listen
			}
		}
	}()
	ffErr := ff.Wait(t, 30*time.Second)
	cancel()
	pubErr := <-done
	if ffErr != nil {
		t.Fatalf("ffmpeg: %v (publish: %v)", ffErr, pubErr)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height",
		"-of", "csv=p=0", out).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	// ffprobe lists the streams under the program and again on their own.
	streams := map[string]bool{}
	for _, l := range strings.Fields(string(probe)) {
		streams[l] = true
	}
	if len(streams) != 1 || !streams["video,240,160"] {
		t.Fatalf("ffprobe streams %q, want only video,240,160", probe)
	}
}
