package egress_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// logBuffer collects log lines for assertions.
type logBuffer = testutil.LogBuffer

type whepEnv struct {
	hub  *media.Hub
	w    *egress.WebRTC
	srv  *httptest.Server
	logs *logBuffer
}

func (e *whepEnv) url(stream string) string { return e.srv.URL + "/" + stream + "/whep" }

// webrtcConfig is DefaultWebRTCConfig changed by set.
func webrtcConfig(set func(*egress.WebRTCConfig)) egress.WebRTCConfig {
	c := egress.DefaultWebRTCConfig()
	set(&c)
	return c
}

func newWHEPEnv(t testing.TB, cfg egress.WebRTCConfig) *whepEnv {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	hub := testutil.NewHub(t, media.HubConfig{}, log)
	cfg.ICEUDPAddr = "127.0.0.1:0"
	cfg.AdvertiseIPs = []string{"127.0.0.1"}
	w, err := egress.NewWebRTC(cfg, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&egress.Router{WHEP: w, Log: log})
	t.Cleanup(func() {
		srv.Close()
		if err := w.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return &whepEnv{hub: hub, w: w, srv: srv, logs: logs}
}

func dial(t *testing.T, url string, opts testutil.WHEPOptions) *testutil.WHEPSession {
	t.Helper()
	opts.Loopback = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := testutil.DialWHEP(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// decodeWHEP dials url and decodes the H.264 access units it receives
// until n frames came out of the decoder, failing the test on a decode
// error, a frame that is not w×h, or 20 s without n frames. It returns the
// session and the access units decoded, in arrival order.
func decodeWHEP(t *testing.T, url string, n, w, h int) (*testutil.WHEPSession, []testutil.WHEPAccessUnit) {
	t.Helper()
	ch := make(chan testutil.WHEPAccessUnit, 1024)
	s := dial(t, url, testutil.WHEPOptions{OnAU: func(a testutil.WHEPAccessUnit) {
		select {
		case ch <- a:
		default:
		}
	}})
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var aus []testutil.WHEPAccessUnit
	frames := 0
	deadline := time.After(20 * time.Second)
	for frames < n {
		select {
		case a := <-ch:
			frames += dec.DecodeSized(t, a.NALUs, int64(a.RTPTimestamp), w, h, fmt.Sprintf("AU after %d frames", frames))
			aus = append(aus, a)
		case <-deadline:
			t.Fatalf("in 20 s: decoded %d frames of %d; stats %+v", frames, n, s.Stats())
		}
	}
	return s, aus
}

// waitAUs waits until the session has received n access units.
func waitAUs(t *testing.T, s *testutil.WHEPSession, n uint64, msg string) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, msg, func() bool { return s.Stats().AccessUnits >= n })
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func TestWHEPDeliversDecodableH264WithCaptureTimes(t *testing.T) {
	reg := prometheus.NewRegistry()
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) { c.Registerer = reg }))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/cam1", clip, true)

	_, aus := decodeWHEP(t, env.url("live/cam1"), 60, 320, 240)
	var latency []time.Duration
	for _, a := range aus {
		if a.HasCapture {
			latency = append(latency, a.Arrival.Sub(a.Capture))
		}
	}
	if len(latency) < 60 {
		t.Fatalf("%d of %d access units carry the capture SEI, want ≥ 60", len(latency), len(aus))
	}
	eg := env.w.EgressLatency()
	if len(eg) == 0 {
		t.Fatal("no egress latency samples recorded")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "gradient_webrtc_sessions":
				found[mf.GetName()] = m.GetGauge().GetValue() == 1
			case "gradient_webrtc_egress_latency_seconds":
				found[mf.GetName()] = m.GetHistogram().GetSampleCount() >= 30
			}
		}
	}
	if !found["gradient_webrtc_sessions"] || !found["gradient_webrtc_egress_latency_seconds"] {
		t.Fatalf("metrics missing or wrong: %v", found)
	}
	t.Logf("glass-to-glass (SEI capture → client arrival) over %d AUs: p50 %v, max %v", len(latency),
		percentile(latency, .5), percentile(latency, 1))
	t.Logf("node egress (unit received → last RTP packet written) over %d AUs: p50 %v, max %v", len(eg),
		percentile(eg, .5), percentile(eg, 1))
}

func TestWHEPPassesOpusThrough(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, Audio: "opus"})
	testutil.PublishFile(t, env.hub, "live/opus", clip, false)

	var mu sync.Mutex
	var opus [][]byte
	s := dial(t, env.url("live/opus"), testutil.WHEPOptions{OnOpus: func(p []byte, _ time.Time) {
		mu.Lock()
		opus = append(opus, p)
		mu.Unlock()
	}})
	if !strings.Contains(strings.ToLower(s.Answer()), "opus/48000") {
		t.Fatalf("answer does not carry Opus:\n%s", s.Answer())
	}
	testutil.Eventually(t, 15*time.Second, "50 Opus packets received", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(opus) >= 50
	})
	mu.Lock()
	for i, p := range opus {
		if len(p) == 0 {
			t.Fatalf("Opus packet %d is empty", i)
		}
	}
	mu.Unlock()
	waitAUs(t, s, 10, "video plays alongside Opus")
}

func TestWHEPSkipsAACAudioAndPlaysVideo(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, Audio: "aac"})
	testutil.PublishFile(t, env.hub, "live/aac", clip, false)

	s := dial(t, env.url("live/aac"), testutil.WHEPOptions{OnOpus: func([]byte, time.Time) {}})
	waitAUs(t, s, 30, "30 video AUs from a stream with AAC audio")
	if st := s.Stats(); st.AudioPackets != 0 {
		t.Fatalf("AAC stream sent %d audio packets over WebRTC", st.AudioPackets)
	}
	if !strings.Contains(env.logs.String(), "video only") || !strings.Contains(env.logs.String(), "codec=AAC") {
		t.Fatalf("no log line says AAC audio was skipped:\n%s", env.logs.String())
	}
}

func TestWHEPTenViewersShareOneHubReader(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/many", clip, false)

	var ss []*testutil.WHEPSession
	for i := 0; i < 10; i++ {
		ss = append(ss, dial(t, env.url("live/many"), testutil.WHEPOptions{}))
	}
	for i, s := range ss {
		waitAUs(t, s, 15, "viewer "+string(rune('0'+i))+" receives video")
	}
	readers := func() int {
		for _, st := range env.hub.Streams() {
			if st.Path == "live/many" {
				return st.Readers
			}
		}
		return -1
	}
	if n := readers(); n != 1 {
		t.Fatalf("hub has %d readers of the stream for 10 WebRTC viewers, want 1", n)
	}
	if n := env.w.Sessions(); n != 10 {
		t.Fatalf("Sessions() = %d, want 10", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, err := ss[0].Delete(ctx)
	if err != nil || (code != http.StatusOK && code != http.StatusNoContent) {
		t.Fatalf("DELETE session: %d %v", code, err)
	}
	if n := env.w.Sessions(); n != 9 {
		t.Fatalf("Sessions() = %d after DELETE, want 9", n)
	}
	select {
	case <-ss[0].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("deleted session's PeerConnection was not closed")
	}
	for _, s := range ss[1:] {
		n := s.Stats().AccessUnits
		waitAUs(t, s, n+15, "the other viewers keep receiving after one left")
	}
	if n := readers(); n != 1 {
		t.Fatalf("hub has %d readers after one viewer left, want 1", n)
	}
	if code, _ := ss[0].Delete(ctx); code != http.StatusNotFound {
		t.Fatalf("second DELETE of the session = %d, want 404", code)
	}
}

func TestWHEPRefusesBadRequestsAndKeepsServing(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, GOP: 10})
	testutil.PublishFile(t, env.hub, "live/ok", clip, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	do := func(method, url, ctype string, body []byte) (int, http.Header, string) {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, resp.Header, b.String()
	}
	audioOnly := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\na=recvonly\r\n"
	videoOffer := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\na=recvonly\r\n"
	cases := []struct {
		name, method, stream, rest, ctype string
		body                              []byte
		want                              int
		msg                               string
	}{
		{"malformed SDP", "POST", "live/ok", "whep", "application/sdp", []byte("this is not SDP\r\n"), 400, "malformed SDP"},
		{"empty body", "POST", "live/ok", "whep", "application/sdp", nil, 400, "empty offer"},
		{"offer without video", "POST", "live/ok", "whep", "application/sdp", []byte(audioOnly), 400, "no video"},
		{"wrong content type", "POST", "live/ok", "whep", "application/json", []byte("{}"), 415, "application/sdp"},
		{"too large", "POST", "live/ok", "whep", "application/sdp", bytes.Repeat([]byte("a=x\r\n"), 20000), 413, "larger"},
		{"unknown stream", "POST", "live/nothere", "whep", "application/sdp", []byte(videoOffer), 404, "not found"},
		{"GET on whep", "GET", "live/ok", "whep", "", nil, 405, "POST"},
		{"DELETE unknown session", "DELETE", "live/ok", "whep/0123456789abcdef", "", nil, 404, "no such"},
		{"PATCH unknown session", "PATCH", "live/ok", "whep/0123456789abcdef", "application/trickle-ice-sdpfrag", nil, 404, ""},
		{"invalid stream name", "POST", "live/b%20ad", "whep", "application/sdp", []byte(audioOnly), 400, ""},
	}
	for _, c := range cases {
		code, _, body := do(c.method, env.srv.URL+"/"+c.stream+"/"+c.rest, c.ctype, c.body)
		if code != c.want || !strings.Contains(body, c.msg) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, code, strings.TrimSpace(body), c.want, c.msg)
		}
		s := dial(t, env.url("live/ok"), testutil.WHEPOptions{})
		waitAUs(t, s, 1, "a valid session works after "+c.name)
		_ = s.Close()
	}

	// An unknown stream with a real offer is 404.
	_, err := testutil.DialWHEP(ctx, env.url("live/nothere"), testutil.WHEPOptions{Loopback: true})
	var we *testutil.WHEPError
	if !errors.As(err, &we) || we.Status != http.StatusNotFound {
		t.Fatalf("offer for unknown stream: %v, want HTTP 404", err)
	}

	// The session resource: PATCH is refused with a clear message, OPTIONS
	// answers CORS, DELETE ends it.
	s := dial(t, env.url("live/ok"), testutil.WHEPOptions{})
	code, _, body := do("PATCH", s.Resource(), "application/trickle-ice-sdpfrag", []byte("a=end-of-candidates\r\n"))
	if code != http.StatusMethodNotAllowed || !strings.Contains(body, "trickle") {
		t.Fatalf("PATCH session: %d %q, want 405 naming trickle ICE", code, body)
	}
	code, h, _ := do("OPTIONS", env.url("live/ok"), "", nil)
	if code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") ||
		!strings.Contains(h.Get("Access-Control-Expose-Headers"), "Location") {
		t.Fatalf("OPTIONS: %d %v", code, h)
	}
	waitAUs(t, s, 1, "the session survives PATCH and OPTIONS")
	if code, _, _ := do("DELETE", s.Resource(), "", nil); code != http.StatusOK {
		t.Fatalf("DELETE session = %d", code)
	}
	if n := env.w.Sessions(); n != 0 {
		t.Fatalf("Sessions() = %d after every session ended, want 0", n)
	}
}

func TestWHEPAnswerHasLocationETagAndOfferPayloadType(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/sdp", clip, false)
	s := dial(t, env.url("live/sdp"), testutil.WHEPOptions{})
	if !strings.HasPrefix(s.Resource(), env.srv.URL+"/live/sdp/whep/") || len(s.Resource()) < len(env.srv.URL+"/live/sdp/whep/")+32 {
		t.Fatalf("Location %q is not /live/sdp/whep/<unguessable id>", s.Resource())
	}
	if s.ETag() == "" {
		t.Fatal("answer has no ETag")
	}
	offer := s.PeerConnection().LocalDescription().SDP
	var pt string
	for _, l := range strings.Split(s.Answer(), "\r\n") {
		if strings.HasPrefix(l, "a=rtpmap:") && strings.Contains(l, "H264/90000") {
			pt = strings.Fields(strings.TrimPrefix(l, "a=rtpmap:"))[0]
		}
	}
	if pt == "" || !strings.Contains(offer, "a=rtpmap:"+pt+" H264/90000") ||
		!strings.Contains(s.Answer(), "a=fmtp:"+pt+" ") || !strings.Contains(s.Answer(), "packetization-mode=1") {
		t.Fatalf("answer's H264 payload type %q is not one the offer uses with packetization-mode=1:\n%s", pt, s.Answer())
	}
	if !strings.Contains(s.Answer(), "a=ice-lite") || !strings.Contains(s.Answer(), "127.0.0.1") {
		t.Fatalf("answer lacks ice-lite or the advertised 127.0.0.1 candidate:\n%s", s.Answer())
	}
	waitAUs(t, s, 5, "video over the negotiated payload type")
}

func TestWHEPSessionsCloseWhenStreamEnds(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	stop := testutil.PublishFile(t, env.hub, "live/end", clip, false)
	a := dial(t, env.url("live/end"), testutil.WHEPOptions{})
	b := dial(t, env.url("live/end"), testutil.WHEPOptions{})
	waitAUs(t, a, 5, "first viewer plays")
	waitAUs(t, b, 5, "second viewer plays")
	stop()
	for _, s := range []*testutil.WHEPSession{a, b} {
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("client PeerConnection still open 10 s after the stream ended")
		}
	}
	testutil.Eventually(t, 5*time.Second, "sessions removed after the stream ended", func() bool { return env.w.Sessions() == 0 })
	// Publishing again serves new viewers.
	testutil.PublishFile(t, env.hub, "live/end", clip, false)
	c := dial(t, env.url("live/end"), testutil.WHEPOptions{})
	waitAUs(t, c, 5, "a viewer of the re-published stream plays")
}

func TestWHEPDropsSessionThatNeverConnects(t *testing.T) {
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) { c.SessionTimeout = time.Second }))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/ghost", clip, false)
	// A real offer whose client never applies the answer: ICE never
	// completes.
	s := dial(t, env.url("live/ghost"), testutil.WHEPOptions{})
	offer := s.PeerConnection().LocalDescription().SDP
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := testutil.PostWHEP(ctx, env.url("live/ghost"), "application/sdp", []byte(strings.Replace(offer, "a=ice-ufrag:", "a=ice-ufrag:x", 1)))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("POST offer: %d %v %s", code, err, body)
	}
	if n := env.w.Sessions(); n != 2 {
		t.Fatalf("Sessions() = %d, want 2", n)
	}
	testutil.Eventually(t, 10*time.Second, "unconnected session removed after SessionTimeout", func() bool { return env.w.Sessions() == 1 })
	waitAUs(t, s, 5, "the connected session plays on")
}

func TestWHEPCloseEndsEverySession(t *testing.T) {
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/close", clip, false)
	s := dial(t, env.url("live/close"), testutil.WHEPOptions{})
	waitAUs(t, s, 3, "viewer plays")
	if err := env.w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client PeerConnection still open 10 s after Close")
	}
	if n := env.w.Sessions(); n != 0 {
		t.Fatalf("Sessions() = %d after Close", n)
	}
	if st := env.hub.Streams(); len(st) != 1 || st[0].Readers != 0 {
		t.Fatalf("hub readers after Close: %+v", st)
	}
	if err := env.w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestWHEPRefusesOffersBeyondMaxSessionsPerClient: one client address
// opening sessions in a loop gets 429 past its cap, and a session it
// closes makes room again.
func TestWHEPRefusesOffersBeyondMaxSessionsPerClient(t *testing.T) {
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) { c.MaxSessionsPerClient = 2 }))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/max", clip, false)
	a := dial(t, env.url("live/max"), testutil.WHEPOptions{})
	dial(t, env.url("live/max"), testutil.WHEPOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := testutil.DialWHEP(ctx, env.url("live/max"), testutil.WHEPOptions{Loopback: true})
	var we *testutil.WHEPError
	if !errors.As(err, &we) || we.Status != http.StatusTooManyRequests {
		t.Fatalf("third session from one client with a cap of 2: %v, want HTTP 429", err)
	}
	_ = a.Close()
	testutil.Eventually(t, 10*time.Second, "room again once a session closed", func() bool {
		s, err := testutil.DialWHEP(ctx, env.url("live/max"), testutil.WHEPOptions{Loopback: true})
		if err == nil {
			s.Close()
		}
		return err == nil
	})
}

func TestWHEPRefusesOffersBeyondMaxSessions(t *testing.T) {
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) { c.MaxSessions = 1 }))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/max", clip, false)
	dial(t, env.url("live/max"), testutil.WHEPOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := testutil.DialWHEP(ctx, env.url("live/max"), testutil.WHEPOptions{Loopback: true})
	var we *testutil.WHEPError
	if !errors.As(err, &we) || we.Status != http.StatusServiceUnavailable {
		t.Fatalf("second session over MaxSessions=1: %v, want HTTP 503", err)
	}
}

// whepSwarmEnv makes the test binary a swarm of count-only WHEP viewers
// (see BenchmarkWHEPViewers), so that the node's CPU is measured apart
// from its viewers'.
const whepSwarmEnv = "GRADIENT_WHEP_SWARM"

func init() {
	spec := os.Getenv(whepSwarmEnv) // "<n> <url>"
	if spec == "" {
		return
	}
	var n int
	var url string
	if _, err := fmt.Sscan(spec, &n, &url); err != nil {
		fmt.Fprintln(os.Stderr, "bad", whepSwarmEnv, err)
		os.Exit(2)
	}
	ctx := context.Background()
	var ss []*testutil.WHEPSession
	for i := 0; i < n; i++ {
		s, err := testutil.DialWHEP(ctx, url, testutil.WHEPOptions{CountOnly: true, Loopback: true})
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(1)
		}
		ss = append(ss, s)
	}
	// Run until stdin closes (the benchmark ends), then report.
	_, _ = io.Copy(io.Discard, os.Stdin)
	var bytes uint64
	for _, s := range ss {
		bytes += s.Stats().VideoBytes
		_ = s.Close()
	}
	fmt.Printf("received %d video bytes\n", bytes)
	os.Exit(0)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssBytes() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkWHEPViewers holds GRADIENT_WHEP_VIEWERS (default 100) viewers
// of a 2 Mbps 640x360 stream, the viewers in a child process, and reports
// the node's CPU seconds per reader-second and RSS per reader. Anchors:
// < 0.00216 CPU-s per reader-second and < 1 MiB per reader.
//
//	go test -run XXX -bench WHEPViewers -benchtime 5x ./egress
func BenchmarkWHEPViewers(b *testing.B) {
	n := 100
	if v := os.Getenv("GRADIENT_WHEP_VIEWERS"); v != "" {
		fmt.Sscan(v, &n)
	}
	env := newWHEPEnv(b, webrtcConfig(func(c *egress.WebRTCConfig) { c.MaxSessionsPerClient = 100000 })) // one address: the swarm
	clip := testutil.Clip(b, testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4, Bitrate: "2000k"})
	testutil.PublishFile(b, env.hub, "live/bench", clip, false)
	rss0 := rssBytes()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", whepSwarmEnv, n, env.url("live/bench")))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
		b.Logf("viewers: %s", strings.TrimSpace(out.String()))
	}()
	testutil.Eventually(b, 120*time.Second, "all viewers connected", func() bool { return env.w.Sessions() == n })
	// Every session ready: egress latency samples keep coming once all
	// sessions wait for no keyframe; give them one GOP.
	start := len(env.w.EgressLatency())
	testutil.Eventually(b, 10*time.Second, "video flows", func() bool { return len(env.w.EgressLatency()) > start+30 })

	const window = 3 * time.Second
	b.ResetTimer()
	var cpu, wall time.Duration
	for i := 0; i < b.N; i++ {
		c0, t0 := cpuTime(), time.Now()
		<-time.After(window)
		cpu += cpuTime() - c0
		wall += time.Since(t0)
	}
	b.StopTimer()
	perReaderSec := cpu.Seconds() / (wall.Seconds() * float64(n))
	rss := float64(rssBytes()-rss0) / float64(n) / (1 << 20)
	eg := env.w.EgressLatency()
	b.ReportMetric(perReaderSec, "cpu-s/reader-s")
	b.ReportMetric(rss, "MiB/reader")
	b.ReportMetric(float64(percentile(eg, .5).Microseconds()), "egress-p50-µs")
	b.ReportMetric(float64(percentile(eg, .99).Microseconds()), "egress-p99-µs")
	b.Logf("%d viewers: %.5f CPU-s per reader-second (anchor < 0.00216), %.2f MiB RSS per reader (anchor < 1), egress p50 %v p99 %v",
		n, perReaderSec, rss, percentile(eg, .5), percentile(eg, .99))
}

// countingRenditions is a hub rendition provider that only counts how often
// it was asked to start one.
type countingRenditions struct{ n atomic.Int32 }

func (c *countingRenditions) Ensure(context.Context, string) error {
	c.n.Add(1)
	return errors.New("no rendition in this test")
}

// TestWHEPInvalidOfferStartsNoRendition: a rendition (a transcode slot) is
// started for a valid offer only; empty, malformed and video-less offers
// are refused before the hub is asked for it.
func TestWHEPInvalidOfferStartsNoRendition(t *testing.T) {
	prov := &countingRenditions{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub := testutil.NewHub(t, media.HubConfig{Renditions: prov}, log)
	cfg := egress.DefaultWebRTCConfig()
	cfg.ICEUDPAddr = "127.0.0.1:0"
	w, err := egress.NewWebRTC(cfg, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv := httptest.NewServer(&egress.Router{WHEP: w, Log: log})
	defer srv.Close()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, GOP: 10})
	testutil.PublishFile(t, hub, "live/cam1", clip, false)

	audioOnly := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
	for _, body := range []string{"", "not sdp at all", audioOnly} {
		resp, err := http.Post(srv.URL+"/live/cam1@360p/whep", "application/sdp", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("offer %q: status %d, want 400", body, resp.StatusCode)
		}
	}
	if n := prov.n.Load(); n != 0 {
		t.Fatalf("invalid offers asked the hub for the rendition %d times, want 0", n)
	}
}
