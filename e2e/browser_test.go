package e2e

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// TestBrowserWatchesRTSPPublishOverWebRTCAndHLS is the README's promise:
// ffmpeg publishes to a node, and headless Chromium plays the player page,
// first over WebRTC (the page's default), then over HLS.
func TestBrowserWatchesRTSPPublishOverWebRTCAndHLS(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5, Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")

	for _, tc := range []struct{ query, mode string }{{"", "webrtc"}, {"?mode=hls", "hls"}} {
		ctx := testutil.Chromium(t)
		if err := chromedp.Run(ctx, chromedp.Navigate(n.httpURL("live/cam1/"+tc.query))); err != nil {
			t.Fatal(err)
		}
		st := testutil.WaitPlayer(t, ctx, 45*time.Second, "played more than 30 "+tc.mode+" frames", func(s testutil.PlayerState) bool {
			return s.Mode == tc.mode && s.Frames > 30
		})
		if st.Width != 320 || st.Height != 240 {
			t.Errorf("%s: player shows %dx%d, want 320x240", tc.mode, st.Width, st.Height)
		}
		t.Logf("%s: %s", tc.mode, st)
		testutil.Screenshot(t, ctx, "node-"+tc.mode)
	}
}
