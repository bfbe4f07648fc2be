package egress_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// testutil.PlayerState mirrors window.gradientPlayer.
// playerServer serves the player page, its assets and the given handlers
// the way a node mounts them.
func playerServer(t *testing.T, rt *egress.Router) *httptest.Server {
	t.Helper()
	p, err := egress.NewPlayer(egress.PlayerConfig{}, hlsLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	rt.Player = p
	rt.Log = hlsLogger(t)
	mux := http.NewServeMux()
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	mux.Handle("/", rt)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// requireHLSJS fails the test when hls.min.js was not embedded.
func requireHLSJS(t *testing.T, srv *httptest.Server) {
	t.Helper()
	res, body := hlsGet(t, srv.URL+egress.PlayerAssetsPrefix+"vendor/hls.min.js")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Hls") {
		t.Fatalf("%svendor/hls.min.js: %s: hls.js is not in the binary; run scripts/setup.sh (it vendors hls.min.js into egress/player/vendor/) and test again",
			egress.PlayerAssetsPrefix, res.Status)
	}
}

// waitPlayer polls window.gradientPlayer until ok accepts it or d passes.
func TestPlayerPageAndAssetsAreServed(t *testing.T) {
	srv := playerServer(t, &egress.Router{})

	res, page := hlsGet(t, srv.URL+"/live/cam1/")
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("player page: %s %q", res.Status, res.Header.Get("Content-Type"))
	}
	for _, want := range []string{"<video", "muted", "autoplay", "playsinline",
		egress.PlayerAssetsPrefix + "player.js", egress.PlayerAssetsPrefix + "vendor/hls.min.js", "live/cam1"} {
		if !strings.Contains(page, want) {
			t.Errorf("player page lacks %q:\n%s", want, page)
		}
	}
	res, js := hlsGet(t, srv.URL+egress.PlayerAssetsPrefix+"player.js")
	if res.StatusCode != http.StatusOK || !strings.Contains(js, "window.gradientPlayer") {
		t.Errorf("player.js: %s, %d bytes", res.Status, len(js))
	}
	if res, _ := hlsGet(t, srv.URL+egress.PlayerAssetsPrefix+"player.css"); res.StatusCode != http.StatusOK {
		t.Errorf("player.css: %s", res.Status)
	}
	// "/live/cam1" redirects to the page; no listings under the assets.
	if res, _ := hlsGet(t, srv.URL+"/live/cam1"); res.Request.URL.Path != "/live/cam1/" || res.StatusCode != http.StatusOK {
		t.Errorf("/live/cam1 ended at %s with %s, want the page at /live/cam1/", res.Request.URL.Path, res.Status)
	}
	if res, _ := hlsGet(t, srv.URL+egress.PlayerAssetsPrefix+"vendor/"); res.StatusCode != http.StatusNotFound {
		t.Errorf("assets folder listing: %s, want 404", res.Status)
	}
	post, err := http.Post(srv.URL+"/live/cam1/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST player page: %s, want 405", post.Status)
	}
}

// TestPlayerFallsBackToHLSInChromium opens the page without a mode on a
// server with no WHEP endpoint: WebRTC fails and the page plays HLS.
func TestPlayerFallsBackToHLSInChromium(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), true)
	h, err := egress.NewHLS(egress.HLSConfig{}, hub, hlsLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := playerServer(t, &egress.Router{HLS: h})
	requireHLSJS(t, srv)

	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/live/cam1/")); err != nil {
		t.Fatal(err)
	}
	st := testutil.WaitPlayer(t, ctx, 40*time.Second, "played more than 30 HLS frames", func(s testutil.PlayerState) bool {
		return s.Mode == "hls" && s.Frames > 30
	})
	if st.Width != 320 || st.Height != 240 {
		t.Errorf("player shows %dx%d, want 320x240 (state %s)", st.Width, st.Height, st)
	}
	if !strings.Contains(st.Error, "webrtc") {
		t.Errorf("player error %q does not say why WebRTC was left", st.Error)
	}
	testutil.Screenshot(t, ctx, "hls-fallback")
}

// TestPlayerPlaysForcedHLSInChromium is "?mode=hls": the page goes
// straight to HLS and shows resolution, bitrate and latency.
func TestPlayerPlaysForcedHLSInChromium(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), true)
	h, err := egress.NewHLS(egress.HLSConfig{}, hub, hlsLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := playerServer(t, &egress.Router{HLS: h})
	requireHLSJS(t, srv)

	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/live/cam1/?mode=hls")); err != nil {
		t.Fatal(err)
	}
	st := testutil.WaitPlayer(t, ctx, 40*time.Second, "played more than 30 HLS frames with stats", func(s testutil.PlayerState) bool {
		return s.Mode == "hls" && s.Frames > 30 && s.Kbps > 0 && s.LatencyMs > 0
	})
	if st.Width != 320 || st.Height != 240 {
		t.Errorf("player shows %dx%d, want 320x240 (state %s)", st.Width, st.Height, st)
	}
	if st.Error != "" {
		t.Errorf("player reports an error while playing: %s", st)
	}
	var panel string
	if err := chromedp.Run(ctx, chromedp.Text("#stats", &panel, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hls", "320×240", "kbit/s", "ms"} {
		if !strings.Contains(strings.ToLower(panel), want) {
			t.Errorf("stats panel %q lacks %q", panel, want)
		}
	}
	t.Logf("player state: %s", st)
	testutil.Screenshot(t, ctx, "hls")
}

// TestPlayerPlaysWebRTCInChromium plays through the WHEP handler.
func TestPlayerPlaysWebRTCInChromium(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, Audio: "opus"}), true)
	w, err := egress.NewWebRTC(egress.WebRTCConfig{ICEUDPAddr: "127.0.0.1:0", AdvertiseIPs: []string{"127.0.0.1"}}, hub, hlsLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	h, err := egress.NewHLS(egress.HLSConfig{}, hub, hlsLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := playerServer(t, &egress.Router{WHEP: w, HLS: h})

	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/live/cam1/?mode=webrtc")); err != nil {
		t.Fatal(err)
	}
	st := testutil.WaitPlayer(t, ctx, 40*time.Second, "played more than 30 WebRTC frames with stats", func(s testutil.PlayerState) bool {
		return s.Mode == "webrtc" && s.Frames > 30 && s.Kbps > 0 && s.LatencyMs > 0
	})
	if st.Width != 320 || st.Height != 240 {
		t.Errorf("player shows %dx%d, want 320x240 (state %s)", st.Width, st.Height, st)
	}
	if n := w.Sessions(); n != 1 {
		t.Errorf("WebRTC sessions = %d, want 1", n)
	}
	t.Logf("player state: %s", st)
	testutil.Screenshot(t, ctx, "webrtc")

	// Leaving the page deletes the WHEP session.
	if err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("the WHEP session was deleted on unload (sessions %d)", w.Sessions()), func() bool {
		return w.Sessions() == 0
	})
}
