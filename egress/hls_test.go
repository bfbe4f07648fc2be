package egress_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// hlsClip is the 320x240 30 fps test clip (1 s GOP, AAC) every HLS test
// publishes.
func hlsClip(t *testing.T) string {
	return testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, Audio: "aac"})
}

func hlsLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(hlsTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hlsTestWriter sends log lines to t.Log, so that they show with the failing test.
type hlsTestWriter struct{ t *testing.T }

func (w hlsTestWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newHLSServer serves h behind the Router on a loopback httptest server.
func newHLSServer(t *testing.T, hub *media.Hub, cfg egress.HLSConfig) (*egress.HLS, *httptest.Server) {
	t.Helper()
	h, err := egress.NewHLS(cfg, hub, hlsLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&egress.Router{HLS: h, Log: hlsLogger(t)})
	t.Cleanup(func() {
		srv.CloseClientConnections()
		h.Close()
		srv.Close()
	})
	return h, srv
}

// hlsGet fetches url, with the User-Agent userAgent[0] if given.
func hlsGet(t *testing.T, url string, userAgent ...string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(userAgent) > 0 {
		req.Header.Set("User-Agent", userAgent[0])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return res, string(b)
}

func hlsReaders(hub *media.Hub, path string) int {
	s, ok := hub.Lookup(path)
	if !ok {
		return 0
	}
	return s.Info().Readers
}

// hlsRunTool runs a command to completion within d and returns its stdout;
// a failure or a timeout fails the test with the command's stderr.
func hlsRunTool(t *testing.T, d time.Duration, name string, args ...string) []byte {
	t.Helper()
	testutil.RequireTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v (timeout %v)\n%s", name, strings.Join(args, " "), err, d, hlsTail(stderr.String(), 4000))
	}
	return stdout.Bytes()
}

func hlsTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func TestHLSFirstRequestFromFFmpegDecodes60Frames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		variant string
	}{
		{"lowLatency", egress.HLSVariantLowLatency},
		{"fmp4", egress.HLSVariantFMP4},
		{"mpegts", egress.HLSVariantMPEGTS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := testutil.NewHub(t, media.HubConfig{}, nil)
			testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
			_, srv := newHLSServer(t, hub, egress.HLSConfig{Variant: tc.variant})
			url := srv.URL + "/live/cam1/index.m3u8"

			// ffmpeg is the stream's first HLS client: the muxer starts on
			// its request, which must wait for the first segment rather
			// than fail. ffmpeg reads the LL-HLS playlist as plain HLS.
			// Raw gray frames make the output size prove both the frame
			// count and the picture size.
			const frames, w, h = 60, 320, 240
			out := hlsRunTool(t, 60*time.Second, "ffmpeg", "-hide_banner", "-loglevel", "error",
				"-i", url, "-map", "0:v:0", "-frames:v", strconv.Itoa(frames), "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1")
			if len(out) != frames*w*h {
				t.Fatalf("ffmpeg decoded %d bytes of gray video, want %d frames of %dx%d = %d bytes",
					len(out), frames, w, h, frames*w*h)
			}
		})
	}
}

func TestHLSFFprobeSeesH264At320x240AndAAC(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})

	out := hlsRunTool(t, 60*time.Second, "ffprobe", "-v", "error",
		"-show_entries", "stream=codec_type,codec_name,width,height", "-of", "csv=p=0",
		srv.URL+"/live/cam1/index.m3u8")
	got := string(out)
	if !strings.Contains(got, "h264,video,320,240") {
		t.Errorf("ffprobe streams:\n%s\nwant a video stream h264,video,320,240", got)
	}
	if !strings.Contains(got, "aac,audio") {
		t.Errorf("ffprobe streams:\n%s\nwant an aac audio stream", got)
	}
}

var hlsMediaPlaylistRe = regexp.MustCompile(`(?m)^([^#\s][^\s]*\.m3u8[^\s]*)$`)

// mediaPlaylist fetches index.m3u8 and then the video media playlist it names.
func hlsMediaPlaylist(t *testing.T, base, query string) (uri, body string) {
	t.Helper()
	res, mv := hlsGet(t, base+"/index.m3u8")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("index.m3u8: %s\n%s", res.Status, mv)
	}
	if got := res.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("index.m3u8 Access-Control-Allow-Origin = %q, want *", got)
	}
	m := hlsMediaPlaylistRe.FindStringSubmatch(mv)
	if m == nil {
		t.Fatalf("multivariant playlist names no media playlist:\n%s", mv)
	}
	uri = m[1]
	res, body = hlsGet(t, base+"/"+uri+query)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s\n%s", uri, res.Status, body)
	}
	return uri, body
}

func TestHLSServesLowLatencyPlaylistWithPartsAndBlockingReload(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})
	base := srv.URL + "/live/cam1"

	uri, pl := hlsMediaPlaylist(t, base, "")
	for _, want := range []string{"#EXT-X-PART-INF:PART-TARGET=", "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES", "#EXT-X-PRELOAD-HINT:"} {
		if !strings.Contains(pl, want) {
			t.Errorf("media playlist lacks %q:\n%s", want, pl)
		}
	}
	if !regexp.MustCompile(`(?m)^#EXT-X-PART:DURATION=`).MatchString(pl) {
		t.Fatalf("media playlist has no #EXT-X-PART:\n%s", pl)
	}

	// Every file the playlist names is served: the init section, a full
	// segment and a part.
	for _, re := range []string{`#EXT-X-MAP:URI="([^"]+)"`, `(?m)^([^#\s]+_seg\d+\.mp4)$`, `#EXT-X-PART:[^\n]*URI="([^"]+)"`} {
		m := regexp.MustCompile(re).FindStringSubmatch(pl)
		if m == nil {
			t.Fatalf("media playlist has nothing matching %s:\n%s", re, pl)
		}
		res, body := hlsGet(t, base+"/"+m[1])
		if res.StatusCode != http.StatusOK || len(body) == 0 || res.Header.Get("Content-Type") != "video/mp4" {
			t.Errorf("%s: %s, %d bytes, Content-Type %q; want 200 video/mp4 with a body", m[1], res.Status, len(body), res.Header.Get("Content-Type"))
		}
	}

	// A blocking reload (_HLS_msn) for the segment after the one in
	// progress is held until the one in progress is complete.
	seqRe, extinfRe := regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:(\d+)`), regexp.MustCompile(`(?m)^#EXTINF:`)
	seq := seqRe.FindStringSubmatch(pl)
	if seq == nil {
		t.Fatalf("media playlist without a media sequence:\n%s", pl)
	}
	first, _ := strconv.Atoi(seq[1])
	inProgress := first + len(extinfRe.FindAllStringIndex(pl, -1))
	want := inProgress + 1
	res, blocked := hlsGet(t, base+"/"+uri+"?_HLS_msn="+strconv.Itoa(want)+"&_HLS_part=0")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("blocking reload for msn %d: %s\n%s", want, res.Status, blocked)
	}
	seq = seqRe.FindStringSubmatch(blocked)
	if seq == nil {
		t.Fatalf("blocking reload answered without a playlist:\n%s", blocked)
	}
	first, _ = strconv.Atoi(seq[1])
	if last := first + len(extinfRe.FindAllStringIndex(blocked, -1)) - 1; last < inProgress {
		t.Fatalf("blocking reload for msn %d returned before segment %d was complete (last %d):\n%s", want, inProgress, last, blocked)
	}
}

func TestHLSUnknownStreamIs404(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})
	for _, p := range []string{"/live/nope/index.m3u8", "/live/nope/video1_stream.m3u8", "/live/nope/abc_video1_seg7.mp4"} {
		res, body := hlsGet(t, srv.URL+p)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s (%s), want 404", p, res.Status, strings.TrimSpace(body))
		}
	}
}

func TestHLSUnknownFileOfLiveStreamIs404(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})
	if res, body := hlsGet(t, srv.URL+"/live/cam1/index.m3u8"); res.StatusCode != http.StatusOK {
		t.Fatalf("index.m3u8: %s\n%s", res.Status, body)
	}
	res, body := hlsGet(t, srv.URL+"/live/cam1/000000000000_video1_seg1.mp4")
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET a segment the muxer never made: %s (%d bytes), want 404", res.Status, len(body))
	}
}

func TestHLSInvalidStreamNameIs400ThroughRouter(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})
	res, body := hlsGet(t, srv.URL+"/live/cam$1/index.m3u8")
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET /live/cam$1/index.m3u8: %s (%s), want 400", res.Status, strings.TrimSpace(body))
	}
}

func TestHLSWrongMethodIs405AndPreflightAllowsAnyOrigin(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})
	res, err := http.Post(srv.URL+"/live/cam1/index.m3u8", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") == "" {
		t.Errorf("POST index.m3u8: %s, Allow %q; want 405 with Allow", res.Status, res.Header.Get("Allow"))
	}

	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/live/cam1/index.m3u8", nil)
	req.Header.Set("Origin", "http://elsewhere.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "GET") {
		t.Errorf("OPTIONS index.m3u8: %s, headers %v; want 204 allowing GET from any origin", res.Status, res.Header)
	}
}

func TestHLSReleasesHubReaderWhenIdle(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	h, srv := newHLSServer(t, hub, egress.HLSConfig{IdleTimeout: 400 * time.Millisecond})

	if res, body := hlsGet(t, srv.URL+"/live/cam1/index.m3u8"); res.StatusCode != http.StatusOK {
		t.Fatalf("index.m3u8: %s\n%s", res.Status, body)
	}
	if n := hlsReaders(hub, "live/cam1"); n != 1 {
		t.Fatalf("the HLS muxer holds %d hub readers, want 1", n)
	}
	testutil.Eventually(t, 5*time.Second, "the idle muxer released its hub reader", func() bool {
		return hlsReaders(hub, "live/cam1") == 0 && len(h.Streams()) == 0
	})
	// A new request starts a new muxer.
	if res, body := hlsGet(t, srv.URL+"/live/cam1/index.m3u8"); res.StatusCode != http.StatusOK {
		t.Fatalf("index.m3u8 after idle close: %s\n%s", res.Status, body)
	}
	if n := hlsReaders(hub, "live/cam1"); n != 1 {
		t.Fatalf("after a new request the HLS muxer holds %d hub readers, want 1", n)
	}
}

func TestHLSReleasesMuxerWhenStreamEndsAndServesRepublishedStream(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	clip := hlsClip(t)
	stop := testutil.PublishFile(t, hub, "live/cam1", clip, false)
	h, srv := newHLSServer(t, hub, egress.HLSConfig{})

	_, before := hlsMediaPlaylist(t, srv.URL+"/live/cam1", "")
	if n := hlsReaders(hub, "live/cam1"); n != 1 {
		t.Fatalf("the HLS muxer holds %d hub readers, want 1", n)
	}
	if got := h.Streams(); len(got) != 1 || got[0] != "live/cam1" {
		t.Fatalf("HLS streams = %v, want [live/cam1]", got)
	}

	stop()
	testutil.Eventually(t, 5*time.Second, "the muxer of the ended stream was released", func() bool {
		_, live := hub.Lookup("live/cam1")
		return !live && len(h.Streams()) == 0
	})
	if res, body := hlsGet(t, srv.URL+"/live/cam1/index.m3u8"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("index.m3u8 of the ended stream: %s (%s), want 404", res.Status, strings.TrimSpace(body))
	}

	// Published again, the stream gets a fresh muxer (new segment names).
	testutil.PublishFile(t, hub, "live/cam1", clip, false)
	_, after := hlsMediaPlaylist(t, srv.URL+"/live/cam1", "")
	mapRe := regexp.MustCompile(`#EXT-X-MAP:URI="([^"]+)"`)
	m1, m2 := mapRe.FindStringSubmatch(before), mapRe.FindStringSubmatch(after)
	if m1 == nil || m2 == nil || m1[1] == m2[1] {
		t.Fatalf("republished stream's init section %v, before %v: want a new muxer's", m2, m1)
	}
	if n := hlsReaders(hub, "live/cam1"); n != 1 {
		t.Fatalf("the republished stream has %d hub readers, want 1", n)
	}
}

func TestHLSFirstRequestWaitIsBoundedWhenNoMediaArrives(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	// A stream whose publisher announced tracks but sends nothing.
	testutil.PublishFile(t, hub, "live/src", hlsClip(t), false)
	rd, err := hub.Subscribe("live/src", "test")
	if err != nil {
		t.Fatal(err)
	}
	desc := rd.Description()
	rd.Close()
	pub, err := hub.Publish("live/silent", desc, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	_, srv := newHLSServer(t, hub, egress.HLSConfig{FirstSegmentTimeout: 300 * time.Millisecond})
	start := time.Now()
	res, body := hlsGet(t, srv.URL+"/live/silent/index.m3u8")
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("index.m3u8 of a stream without media: %s (%s), want 503", res.Status, strings.TrimSpace(body))
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("the first request waited %v, want about FirstSegmentTimeout (300ms)", el)
	}

	// A client that gives up is let go at once.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/silent/index.m3u8", nil)
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("a request cancelled after 100ms got %s", res.Status)
	}
}

func TestHLSCloseReleasesEveryMuxer(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	clip := hlsClip(t)
	testutil.PublishFile(t, hub, "live/a", clip, false)
	testutil.PublishFile(t, hub, "live/b", clip, false)
	h, srv := newHLSServer(t, hub, egress.HLSConfig{})
	for _, p := range []string{"live/a", "live/b"} {
		if res, body := hlsGet(t, srv.URL+"/"+p+"/index.m3u8"); res.StatusCode != http.StatusOK {
			t.Fatalf("%s index.m3u8: %s\n%s", p, res.Status, body)
		}
	}
	if got := h.Streams(); len(got) != 2 {
		t.Fatalf("HLS streams = %v, want two", got)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := hlsReaders(hub, "live/a") + hlsReaders(hub, "live/b"); n != 0 || len(h.Streams()) != 0 {
		t.Fatalf("after Close: %d hub readers, streams %v; want none", n, h.Streams())
	}
	if res, _ := hlsGet(t, srv.URL+"/live/a/index.m3u8"); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("index.m3u8 after Close: %s, want 503", res.Status)
	}
}
