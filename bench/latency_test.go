package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/ingest/testsrc"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
)

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*q)]
}

// BenchmarkLatencyTestPatternToWHEP publishes `gradient publish --testsrc`
// at 1280x720 30 fps 2 Mbit/s into a node over RTSP and reads it with a WHEP
// client on loopback. It prints capture → arrival of each frame's last
// packet (from the capture SEI; target p50 < 100 ms) and the node's own
// share, hub ingress to the last RTP packet written (target p99 < 5 ms).
func BenchmarkLatencyTestPatternToWHEP(b *testing.B) {
	header(b, "latency: test pattern → RTSP → node → WHEP")
	cfg := node.DefaultConfig()
	cfg.Name, cfg.Data = "bench", b.TempDir()
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp"))
	cfg.RTSP.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp"))
	cfg.RTSP.UDPRTPAddr, cfg.RTSP.UDPRTCPAddr = node.Off, node.Off
	cfg.SRT.Addr, cfg.Gossip.Addr = node.Off, node.Off
	cfg.WebRTC.ICEUDPAddr = "127.0.0.1:0"
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()

	pc := testsrc.DefaultConfig()
	pc.URL = "rtsp://" + cfg.RTSP.Addr + "/live/latency"
	pub, err := testsrc.New(pc, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pub.Run(ctx)
	testutil.Eventually(b, 30*time.Second, "test pattern published", func() bool {
		_, ok := n.Hub.Lookup("live/latency")
		return ok
	})

	var mu sync.Mutex
	var lat []time.Duration
	measuring := false
	sess, err := testutil.DialWHEP(ctx, "http://"+n.HTTPAddr()+"/live/latency/whep", testutil.WHEPOptions{Loopback: true,
		OnAU: func(au testutil.WHEPAccessUnit) {
			mu.Lock()
			defer mu.Unlock()
			if measuring && au.HasCapture {
				lat = append(lat, au.Arrival.Sub(au.Capture))
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	<-sess.Connected()
	time.Sleep(3 * time.Second) // past the GOP-cache burst of the first second
	n.WebRTC.EgressLatency()    // drop the warm-up samples from the figure below
	mu.Lock()
	measuring = true
	mu.Unlock()
	start := time.Now()
	time.Sleep(20 * time.Second)
	mu.Lock()
	glass := append([]time.Duration(nil), lat...)
	mu.Unlock()
	var own []time.Duration
	for _, d := range n.WebRTC.EgressLatency() {
		own = append(own, d)
	}
	// Only the samples of the measured window: EgressLatency is a ring of
	// the most recent ones, and 20 s at 30 fps fits in it.
	if max := int(time.Since(start).Seconds()*30) + 30; len(own) > max {
		own = own[len(own)-max:]
	}
	fmt.Printf("capture → WHEP arrival of last packet: p50 %v, p99 %v over %d frames (target p50 < 100 ms)\n",
		quantile(glass, 0.5).Round(100*time.Microsecond), quantile(glass, 0.99).Round(100*time.Microsecond), len(glass))
	fmt.Printf("node's own share, ingress → egress: p50 %v, p99 %v over %d frames (target p99 < 5 ms)\n",
		quantile(own, 0.5).Round(10*time.Microsecond), quantile(own, 0.99).Round(10*time.Microsecond), len(own))
	b.ReportMetric(float64(quantile(glass, 0.5).Microseconds())/1000, "p50-glass-ms")
	b.ReportMetric(float64(quantile(own, 0.99).Microseconds())/1000, "p99-node-ms")
}
