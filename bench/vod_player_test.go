package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
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
// counted from the start of the page's navigation; target < 500 ms. The
// median of 5 fresh page loads is reported.
func BenchmarkVodTimeToFirstFrameChromium(b *testing.B) {
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
	s.Route(mux)
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)

	var samples []float64
	for range 5 {
		ctx := testutil.Chromium(b)
		if err := chromedp.Run(ctx, chromedp.Navigate(srv.URL+"/vod/"+t.ID+"/")); err != nil {
			b.Fatal(err)
		}
		var first float64
		testutil.Eventually(b, 20*time.Second, "the player shows a frame", func() bool {
			ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return chromedp.Run(ectx, chromedp.Evaluate(`(window.gradientPlayer||{}).firstFrameMs||0`, &first)) == nil && first > 0
		})
		samples = append(samples, first)
	}
	sort.Float64s(samples)
	med := samples[len(samples)/2]
	b.ReportMetric(med, "first-frame-ms")
	fmt.Printf("VoD time to first frame in Chromium (720p title, loopback, fresh profile each load): median %.0f ms of %.0f; target < 500 ms\n", med, samples)
}
