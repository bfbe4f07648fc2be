package e2e

import (
	"io"
	"math/rand"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
)

func (n *testNode) rtmpURL(path string) string { return "rtmp://" + n.cfg.RTMP.Addr + "/" + path }

// TestRTMPPublishPlaysOverRTSPHLSAndWHEP publishes as `ffmpeg -f flv` does
// and decodes what each playback protocol gives back.
func TestRTMPPublishPlaysOverRTSPHLSAndWHEP(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5, Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "flv", n.rtmpURL("live/cam1"))
	n.waitStream(t, "live/cam1")

	var wg sync.WaitGroup
	var rtspSizes, hlsSizes, whepSizes []string
	wg.Add(3)
	go func() {
		defer wg.Done()
		rtspSizes = ffmpegDecode(t, n.rtspURL("live/cam1"), 60, "-rtsp_transport", "tcp")
	}()
	go func() {
		defer wg.Done()
		hlsSizes = ffmpegDecode(t, n.httpURL("live/cam1/index.m3u8"), 60)
	}()
	go func() {
		defer wg.Done()
		whepSizes, _ = whepFrames(t, n.httpURL("live/cam1/whep"), 60)
	}()
	wg.Wait()
	assertFrames(t, "RTSP read of RTMP publish", rtspSizes, 60, "320x240")
	assertFrames(t, "HLS read of RTMP publish", hlsSizes, 60, "320x240")
	assertFrames(t, "WHEP read of RTMP publish", whepSizes, 60, "320x240")
}

// TestRTMPGarbageNeverCrashesTheNode throws random bytes and cut-off
// handshakes at the node's RTMP port; the node keeps answering and takes
// a real publisher afterwards.
func TestRTMPGarbageNeverCrashesTheNode(t *testing.T) {
	n := startNodeWith(t, func(c *node.Config) { c.RTMP.PublishTimeout = 4 * time.Second })
	rnd := rand.New(rand.NewSource(7))
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		b := make([]byte, 1+rnd.Intn(6000))
		rnd.Read(b)
		if i%2 == 0 {
			b[0] = 3 // past C0, into the handshake and chunk parser
		}
		if i%5 == 0 {
			b = b[:min(len(b), 1+rnd.Intn(1537))] // a handshake cut short
		}
		wg.Add(1)
		go func(b []byte) {
			defer wg.Done()
			c, err := net.Dial("tcp", n.cfg.RTMP.Addr)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer c.Close()
			c.Write(b)
			c.SetReadDeadline(time.Now().Add(8 * time.Second))
			_, err = io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("%d garbage bytes: connection still open after the publish timeout", len(b))
			}
		}(b)
	}
	wg.Wait()
	resp, err := http.Get(n.httpURL("healthz"))
	if err != nil {
		t.Fatalf("node gone after RTMP garbage: %v", err)
	}
	resp.Body.Close()

	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5})
	testutil.FFmpegPublish(t, clip, "flv", n.rtmpURL("live/after"))
	n.waitStream(t, "live/after")
}
