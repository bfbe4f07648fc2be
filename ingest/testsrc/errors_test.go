package testsrc

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	srt "github.com/datarhei/gosrt"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

func TestNewRejectsUnsupportedURLsNamingThem(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://127.0.0.1:8080/live/test", "unsupported scheme"},
		{"rtmp://127.0.0.1:1935/live/test", "unsupported scheme"},
		{"clip.mp4", "unsupported scheme"},
		{"rtsp://127.0.0.1/live/test", "host:port"},
	} {
		_, err := New(testConfig(tc.url), nil)
		if err == nil {
			t.Errorf("%s: accepted", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.url) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not name the URL and %q", tc.url, err, tc.want)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("a Config without URL was accepted")
	}
}

func TestNewRejectsBadPictureParameters(t *testing.T) {
	for _, mod := range []func(*Config){
		func(c *Config) { c.Width = 321 },
		func(c *Config) { c.Height = 8 },
		func(c *Config) { c.FPS = -1 },
		func(c *Config) { c.Bitrate = 100 },
	} {
		cfg := testConfig("rtsp://127.0.0.1:8554/live/test")
		mod(&cfg)
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

func TestRunReportsConnectionRefusedWithURL(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("rtsp://127.0.0.1:%d/live/test", testutil.FreePort(t, "tcp"))
	p, err := New(testConfig(url), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v, want connection refused naming %s", err, url)
	}
}

type refusingRTSPServer struct{}

func (refusingRTSPServer) OnAnnounce(*gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusForbidden}, nil
}

func TestRunReportsRTSPServerRefusal(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	srv := &gortsplib.Server{Handler: refusingRTSPServer{}, RTSPAddress: addr}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "rtsp://" + addr + "/live/test"
	p, err := New(testConfig(url), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "server refused the stream: 403") {
		t.Fatalf("got %v, want the 403 refusal naming %s", err, url)
	}
}

func TestRunReportsSRTRejectionReason(t *testing.T) {
	t.Parallel()
	ln, err := srt.Listen("srt", "127.0.0.1:0", srt.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	streamID := make(chan string, 1)
	go func() {
		req, err := ln.Accept2()
		if err != nil {
			return
		}
		streamID <- req.StreamId()
		req.Reject(srt.REJX_FORBIDDEN)
	}()
	port := ln.Addr().(*net.UDPAddr).Port
	url := fmt.Sprintf("srt://127.0.0.1:%d/live/test", port)
	p, err := New(testConfig(url), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "code 1403 (forbidden)") {
		t.Fatalf("got %v, want the 1403 rejection naming %s", err, url)
	}
	select {
	case id := <-streamID:
		if id != "publish:live/test" {
			t.Fatalf("streamid %q, want publish:live/test built from the path", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the listener saw no request")
	}
}

func TestSRTStreamIDFromQueryWins(t *testing.T) {
	u, err := parseURL("srt://127.0.0.1:8890/ignored?streamid=publish:live/cam1&latency=200000") // µs, as in ffmpeg URLs
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := srtConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StreamId != "publish:live/cam1" || cfg.ReceiverLatency != 200*time.Millisecond {
		t.Fatalf("streamid %q latency %v, want publish:live/cam1 and 200ms", cfg.StreamId, cfg.ReceiverLatency)
	}
}

func TestParseBitrate(t *testing.T) {
	for in, want := range map[string]int{"2M": 2_000_000, "2.5m": 2_500_000, "800k": 800_000, "1500000": 1_500_000} {
		if got, err := ParseBitrate(in); err != nil || got != want {
			t.Errorf("ParseBitrate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-2M", "fast", "2G"} {
		if _, err := ParseBitrate(in); err == nil {
			t.Errorf("ParseBitrate(%q) accepted", in)
		}
	}
}

func TestParseSize(t *testing.T) {
	if w, h, err := ParseSize("1280x720"); err != nil || w != 1280 || h != 720 {
		t.Errorf("ParseSize(1280x720) = %d, %d, %v", w, h, err)
	}
	for _, in := range []string{"12x", "x720", "1280", "1280x720x3", "-2x4", ""} {
		if _, _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}
