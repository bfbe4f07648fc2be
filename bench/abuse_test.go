package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// BenchmarkAbuseLegitViewerKeepsItsFrames: one viewer (the Go WHEP client,
// decoding every frame) watches a stream for a window without attack, then
// for an equal window while 500 idle TCP connections sit on the HTTP port
// (re-dialled as the node closes them), 200 bogus WHEP offers and 3,000
// /watch hits arrive. It prints the frames decoded under attack over those
// decoded without it; the target is at least 0.95.
func BenchmarkAbuseLegitViewerKeepsItsFrames(b *testing.B) {
	header(b, "abuse: a legit WHEP viewer's frames under an HTTP/WHEP/watch flood")
	n := startAbuseNodeProc(b)
	clip := testutil.Clip(b, testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 20, Bitrate: "1M"})
	testutil.FFmpegPublish(b, clip, "rtsp", "rtsp://"+n.rtsp+"/live/cam1", "-rtsp_transport", "tcp")
	n.waitStream(b, "live/cam1")

	dec, err := testutil.NewH264Decoder()
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	var frames atomic.Int64
	var decErrs atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sess, err := testutil.DialWHEP(ctx, "http://"+n.http+"/live/cam1/whep", testutil.WHEPOptions{Loopback: true,
		OnAU: func(au testutil.WHEPAccessUnit) {
			fs, err := dec.Decode(au.NALUs, int64(au.RTPTimestamp))
			if err != nil {
				decErrs.Add(1)
				return
			}
			frames.Add(int64(len(fs)))
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	const window = 15 * time.Second
	testutil.Eventually(b, 20*time.Second, "the viewer decodes frames", func() bool { return frames.Load() > 30 })
	time.Sleep(2 * time.Second) // past the start

	b.ResetTimer()
	f0 := frames.Load()
	time.Sleep(window)
	calm := frames.Load() - f0

	// The attack, for one window.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var idleOpen, idleDials, bogus, bogusRefused, watches, watchOK atomic.Int64
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := net.DialTimeout("tcp", n.http, 5*time.Second)
				if err != nil {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
						continue
					}
				}
				idleDials.Add(1)
				idleOpen.Add(1)
				closed := make(chan struct{})
				go func() { c.Read(make([]byte, 1)); close(closed) }()
				select {
				case <-stop:
					c.Close()
					idleOpen.Add(-1)
					return
				case <-closed: // the node's header timeout: dial again
					c.Close()
					idleOpen.Add(-1)
				}
			}
		}()
	}
	// Bogus offers and /watch hits are spread over the window; every one
	// is sent (the window is extended until they are).
	var sends sync.WaitGroup
	spread := func(total, workers int, fn func()) {
		for w := 0; w < workers; w++ {
			sends.Add(1)
			go func() {
				defer sends.Done()
				each := total / workers
				pause := window / time.Duration(each)
				for i := 0; i < each; i++ {
					t0 := time.Now()
					fn()
					if d := pause - time.Since(t0); d > 0 {
						time.Sleep(d)
					}
				}
			}()
		}
	}
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	offers := []string{"", "not sdp", "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}
	spread(200, 4, func() {
		st, _, err := testutil.PostWHEP(ctx, "http://"+n.http+"/live/cam1/whep", "application/sdp", []byte(offers[bogus.Add(1)%3]))
		if err == nil && st >= 400 {
			bogusRefused.Add(1)
		}
	})
	spread(3000, 10, func() {
		watches.Add(1)
		r, err := noRedirect.Get("http://" + n.http + "/watch/live/cam1")
		if err == nil {
			r.Body.Close()
			if r.StatusCode < 400 {
				watchOK.Add(1)
			}
		}
	})
	f1, t1 := frames.Load(), time.Now()
	time.Sleep(window)
	sends.Wait()
	attacked, attackDur := frames.Load()-f1, time.Since(t1)
	open := idleOpen.Load()
	close(stop)
	wg.Wait()
	b.StopTimer()

	// Frames per second under attack over frames per second without.
	ratio := (float64(attacked) / attackDur.Seconds()) / (float64(calm) / window.Seconds())
	fmt.Printf("  frames decoded: %d in %v without attack, %d in %v under attack (idle conns open at the end %d, dialled %d; bogus offers %d, refused %d; /watch hits %d, answered %d; decode errors %d)\n",
		calm, window, attacked, attackDur.Round(time.Millisecond), open, idleDials.Load(), bogus.Load(), bogusRefused.Load(), watches.Load(), watchOK.Load(), decErrs.Load())
	fmt.Printf("  frames kept under attack / without (per second): %.3f (target ≥ 0.95)\n", ratio)
	b.ReportMetric(ratio, "kept-ratio")
	if calm == 0 {
		b.Fatal("the viewer decoded nothing without attack")
	}
}

// startAbuseNodeProc is startNodeProc with RTSP's UDP transport off (the
// benchmark publishes over TCP, and another process may hold :8000).
func startAbuseNodeProc(b *testing.B) *nodeProc {
	n := &nodeProc{
		http:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
		rtsp:   fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
		srtUDP: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "udp")),
	}
	n.proc = testutil.Start(b, gradientBinary(b), "node", "--name", "bench", "--http", n.http, "--rtsp", n.rtsp,
		"--rtsp-udp", "off", "--srt", n.srtUDP, "--rtmp", "off", "--ice-udp", "127.0.0.1:0", "--gossip", "off",
		"--data", b.TempDir(), "--log-level", "warn")
	testutil.Eventually(b, 30*time.Second, "node answers /healthz", func() bool {
		r, err := http.Get("http://" + n.http + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	return n
}
