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

// egressLatencyRing is the size of the WebRTC egress's ring of latency
// samples: a node leaves egress.WebRTCConfig.LatencySamples at its default.
const egressLatencyRing = 4096

// samplesSince returns the samples of all (a ring of at most ring samples,
// oldest first) recorded after the first warm ones. While the ring has not
// filled up, those are all[warm:]; once it is full it may have wrapped, and
// the window can no longer be told from the warm-up.
func samplesSince(all []time.Duration, warm, ring int) ([]time.Duration, error) {
	if len(all) >= ring {
		return nil, fmt.Errorf("egress latency ring full (%d samples): the warm-up and the window cannot be told apart", ring)
	}
	if warm > len(all) {
		return nil, fmt.Errorf("egress latency ring shrank from %d to %d samples", warm, len(all))
	}
	return all[warm:], nil
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
	cfg.SRT.Addr, cfg.RTMP.Addr, cfg.Gossip.Addr = node.Off, node.Off, node.Off
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
	// EgressLatency returns a copy of the node's ring and resets nothing:
	// note how many samples the warm-up left, to drop them afterwards.
	warm := len(n.WebRTC.EgressLatency())
	mu.Lock()
	measuring = true
	mu.Unlock()
	time.Sleep(20 * time.Second)
	mu.Lock()
	glass := append([]time.Duration(nil), lat...)
	mu.Unlock()
	own, err := samplesSince(n.WebRTC.EgressLatency(), warm, egressLatencyRing)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("capture → WHEP arrival of last packet: p50 %v, p99 %v over %d frames (target p50 < 100 ms)\n",
		quantile(glass, 0.5).Round(100*time.Microsecond), quantile(glass, 0.99).Round(100*time.Microsecond), len(glass))
	fmt.Printf("node's own share, ingress → egress: p50 %v, p99 %v over %d frames (target p99 < 5 ms)\n",
		quantile(own, 0.5).Round(10*time.Microsecond), quantile(own, 0.99).Round(10*time.Microsecond), len(own))
	b.ReportMetric(float64(quantile(glass, 0.5).Microseconds())/1000, "p50-glass-ms")
	b.ReportMetric(float64(quantile(own, 0.99).Microseconds())/1000, "p99-node-ms")
}

func TestSamplesSinceDropsTheWarmUp(t *testing.T) {
	warmUp := []time.Duration{900 * time.Millisecond, 700 * time.Millisecond} // the GOP-cache burst
	window := []time.Duration{2 * time.Millisecond, 3 * time.Millisecond}
	got, err := samplesSince(append(append([]time.Duration(nil), warmUp...), window...), len(warmUp), 4096)
	if err != nil || len(got) != len(window) || got[0] != window[0] || got[1] != window[1] {
		t.Errorf("samplesSince = %v, %v; want only the window %v", got, err, window)
	}
	if _, err := samplesSince(make([]time.Duration, 8), 2, 8); err == nil {
		t.Error("samplesSince of a full ring gave samples; it may have wrapped over the warm-up")
	}
}
