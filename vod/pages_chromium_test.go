package vod_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// TestThePlayerPlaysOnPastTheSegmentItShowsBeforeHLSJS: the player page
// appends the start rendition's first segment itself, before hls.js has
// arrived, and hls.js then takes the MediaSource over: in Chromium the
// video plays on past that first 4 s segment without an error or a reset
// of the MediaSource (its object URL stays the page's), to the end of a
// seek that only hls.js can serve.
func TestThePlayerPlaysOnPastTheSegmentItShowsBeforeHLSJS(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 480, FPS: 25, Seconds: 16, GOP: 50, Audio: "aac"})
	cfg := vod.DefaultConfig()
	cfg.Ladder = []vod.LadderRung{{Name: "240p", Height: 240, Kbps: 300}}
	s, err := vod.NewService(cfg, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := s.Add("boot", "", f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "the title is ready", func() bool {
		got, err := s.Get(ti.ID)
		return err == nil && got.State == vod.StateReady
	})
	mux := http.NewServeMux()
	s.Route(mux)
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/vod/"+ti.ID+"/"), chromedp.Evaluate(`(function () {
  window.errs = [];
  var v = document.getElementById('v');
  window.bootSrc = v.src;
  v.addEventListener('emptied', function () { window.errs.push('emptied: the MediaSource was replaced'); });
})()`, nil)); err != nil {
		t.Fatal(err)
	}
	type state struct {
		Boot, Src, Mode string
		Time            float64
		Errs            []string
		Levels          int
	}
	read := func() state {
		var raw string
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		chromedp.Run(ectx, chromedp.Evaluate(`JSON.stringify({boot: window.gradientBoot ? 'yes' : '', src: window.bootSrc === document.getElementById('v').src ? 'same' : document.getElementById('v').src,
  mode: (window.gradientPlayer||{}).mode, time: document.getElementById('v').currentTime, errs: window.errs.concat((window.gradientPlayer||{}).errors || []),
  levels: (window.gradientPlayer||{}).hls ? window.gradientPlayer.hls.levels.length : 0})`, &raw))
		var st state
		json.Unmarshal([]byte(raw), &st)
		return st
	}
	var st state
	testutil.Eventually(t, 30*time.Second, "the video plays past its first 4 s segment", func() bool {
		st = read()
		return st.Time >= 6
	})
	if st.Boot != "yes" || st.Mode != "hls.js" || st.Levels != 2 {
		t.Fatalf("player %+v: want the page's boot segment, then hls.js with both renditions", st)
	}
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.getElementById('v').currentTime = 12`, nil)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the video plays on after a seek to 12 s", func() bool {
		st = read()
		return st.Time >= 13
	})
	if st.Src != "same" || len(st.Errs) > 0 {
		t.Fatalf("player %+v: want the page's MediaSource kept and no error", st)
	}
}
