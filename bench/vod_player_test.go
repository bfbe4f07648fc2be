package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// BenchmarkVodTimeToFirstFrameChromium opens a ready title's player page in
// headless Chromium on loopback and reads when its first frame was shown,
// counted from the start of the page's navigation; target < 500 ms. Its
// anchor, loaded alternately with it in the same run: the player page as
// it was before the fast start (hls.js with its default start — a level
// by its bandwidth estimate, a Web Worker — 30 s of buffer, no
// preloads). Each is loaded vodFirstFrameLoads times in a fresh browser
// (fresh profile: nothing cached, no warm media pipeline) and the median
// is reported, with where the current page's time went.
func BenchmarkVodTimeToFirstFrameChromium(b *testing.B) {
	header(b, "VoD time to first frame: a ready 720p title's player page in headless Chromium on loopback")
	fmt.Printf("  load average before: %s (Chromium, the server and anything else running share %d cores)\n", loadAvg(), runtime.NumCPU())
	clip := testutil.Clip(b, testutil.ClipOptions{Width: 1280, Height: 720, FPS: 30, Seconds: 20, GOP: 60, Bitrate: "2500k", Audio: "aac"})
	s, err := vod.NewService(vod.DefaultConfig(), b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	f, err := os.Open(clip)
	if err != nil {
		b.Fatal(err)
	}
	t, err := s.Add("first frame", "", f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	testutil.Eventually(b, 60*time.Second, "the title is ready", func() bool {
		got, err := s.Get(t.ID)
		return err == nil && got.State == vod.StateReady
	})
	mux := http.NewServeMux()
	// The anchor: the page before the fast start, beside the real one.
	mux.HandleFunc("GET /anchor/vod/{id}/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, anchorPlayerPage, vod.HLSScript, r.PathValue("id"))
	})
	s.Route(mux)
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)

	// The steps of a start: the page's own (document received, its
	// MediaSource open, first segment appended, decoded, shown), then
	// hls.js's (received, run, handed the MediaSource, its playlists and
	// first segment loaded and appended). Each is the median over the
	// loads of when it happened, in ms since navigation began.
	steps := []string{"html", "sourceopen", "appended", "loadeddata", "frame", "hls.js", "script", "handover", "master", "media"}
	at := map[string][]float64{}
	var samples, anchor []float64
	var level string
	firstFrame := func(url string) (context.Context, float64) {
		ctx := testutil.Chromium(b)
		if err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
			b.Fatal(err)
		}
		var first float64
		testutil.Eventually(b, 20*time.Second, "the player shows a frame", func() bool {
			ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return chromedp.Run(ectx, chromedp.Evaluate(`(window.gradientPlayer||{}).firstFrameMs||0`, &first)) == nil && first > 0
		})
		return ctx, first
	}
	for range vodFirstFrameLoads {
		// Each browser leaves the page once measured: one still playing
		// would take CPU from the next load.
		actx, a := firstFrame(srv.URL + "/anchor/vod/" + t.ID + "/")
		chromedp.Run(actx, chromedp.Navigate("about:blank"))
		anchor = append(anchor, a)
		ctx, first := firstFrame(srv.URL + "/vod/" + t.ID + "/")
		samples = append(samples, first)
		// The page's own marks, and from the Performance API when the
		// document and hls.js had arrived.
		var marks map[string]float64
		if err := chromedp.Run(ctx, chromedp.Evaluate(`(function () {
  var t = Object.assign({}, (window.gradientPlayer||{}).t||{});
  var nav = performance.getEntriesByType('navigation')[0];
  if (nav) { t.html = nav.responseEnd; }
  performance.getEntriesByType('resource').forEach(function (e) {
    if (/hls\.min\.js$/.test(e.name)) { t['hls.js'] = e.responseEnd; }
  });
  return t;
})()`, &marks)); err != nil {
			b.Fatal(err)
		}
		for _, s := range steps {
			if v, ok := marks[s]; ok {
				at[s] = append(at[s], v)
			}
		}
		var wf string
		chromedp.Run(ctx, chromedp.Evaluate(`performance.getEntriesByType('resource').map(function (e) { return e.name.replace(/^.*\//, '').replace(/^([0-9a-f]{8})[0-9a-f]{56}/, '$1…').slice(0, 28) + ' ' + Math.round(e.startTime) + '/' + Math.round(e.requestStart) + '/' + Math.round(e.responseStart) + '/' + Math.round(e.responseEnd) + ' ' + e.initiatorType; }).join('\n    ')`, &wf))
		if testing.Verbose() {
			fmt.Printf("  load %d: first frame %.0f ms (anchor %.0f ms); requests (start/request/first byte/end ms):\n    %s\n", len(samples), first, a, wf)
		}
		chromedp.Run(ctx, chromedp.Evaluate(`(function () { var p = window.gradientPlayer||{}; if (!p.hls) { return p.mode||''; } var l = p.hls.levels[p.t.level === undefined ? 0 : p.t.level]; return l ? l.height+'p '+Math.round(l.bitrate/1000)+' kbps' : ''; })()`, &level))
		chromedp.Run(ctx, chromedp.Navigate("about:blank"))
	}
	median := func(s []float64) float64 {
		s = slices.Clone(s)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	med, amed := median(samples), median(anchor)
	fmt.Printf("  where the time goes (median ms since navigation began, over %d loads; first segment from %s):\n   ", len(samples), level)
	for _, s := range steps {
		if len(at[s]) > 0 {
			fmt.Printf(" %s %.0f", s, median(at[s]))
		}
	}
	fmt.Println()
	fmt.Printf("the player page before the fast start (anchor; hls.js defaults, worker, 30 s buffer, no preloads): median %.0f ms of %.0f\n", amed, anchor)
	fmt.Printf("VoD time to first frame in Chromium (720p title, loopback, fresh browser each load): median %.0f ms of %.0f = %.2f× the anchor (%.0f ms); target < 500 ms (load average after: %s)\n",
		med, samples, med/amed, amed, loadAvg())
	b.ReportMetric(med, "first-frame-ms")
	b.ReportMetric(amed, "anchor-first-frame-ms")
}

// vodFirstFrameLoads is how many times each page is loaded.
const vodFirstFrameLoads = 7

// anchorPlayerPage is the VoD player page as it was before the fast
// start (hls.js script, title id), reduced to what plays.
const anchorPlayerPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>anchor</title>
<style>body{margin:0;background:#000}video{width:100%%;max-height:85vh;display:block}</style>
<script src="%[1]s"></script></head><body>
<video id="v" controls playsinline poster="/vod/%[2]s/poster.jpg"></video>
<script>
(function () {
  var v = document.getElementById('v');
  var src = '/vod/%[2]s/index.m3u8?viewer=' + Math.random().toString(36).slice(2);
  window.gradientPlayer = {};
  var hls = new Hls({maxBufferLength: 30, startFragPrefetch: true});
  hls.loadSource(src);
  hls.attachMedia(v);
  var first = function () { window.gradientPlayer.firstFrameMs = performance.now(); };
  if (v.requestVideoFrameCallback) { v.requestVideoFrameCallback(first); } else { v.addEventListener('playing', first, {once: true}); }
  v.play().catch(function () {});
})();
</script></body></html>`
