package bench

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// RTMP ingest against RTSP ingest (issue 14): the same clip (benchClip,
// 1280x720 30 fps 2 Mbit/s) published into a fresh node process once with
// `ffmpeg -c copy -f flv` over RTMP and once with `-f rtsp` over RTSP
// (TCP), read by the same numbers of RTSP readers (dialRTSP, as in
// BenchmarkFanOutRTSP); the figure is the node's CPU per reader-second,
// ingest included. Anchor: RTSP ingest; target: RTMP within 5 %.

// startNodeProcRTMP is startNodeProc with the RTMP listener on.
func startNodeProcRTMP(b *testing.B, bin string) (*nodeProc, string) {
	n := &nodeProc{
		http: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
		rtsp: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
	}
	n.srtUDP = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "udp"))
	rtmp := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp"))
	cfg := filepath.Join(b.TempDir(), "node.yaml")
	if err := os.WriteFile(cfg, []byte("webrtc:\n  max_sessions_per_client: 100000\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	n.proc = testutil.Start(b, bin, "node", "--name", "bench", "--http", n.http, "--rtsp", n.rtsp,
		"--srt", n.srtUDP, "--rtmp", rtmp, "--ice-udp", "127.0.0.1:0", "--gossip", "off", "--data", b.TempDir(),
		"--log-level", "warn", "--config", cfg)
	testutil.Eventually(b, 20*time.Second, "node answers /healthz", func() bool {
		r, err := http.Get("http://" + n.http + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	return n, rtmp
}

func BenchmarkRTMPIngestVsRTSPIngestCPUPerReader(b *testing.B) {
	header(b, "RTMP ingest vs RTSP ingest: node CPU per RTSP reader-second")
	fmt.Printf("  load average before: %s\n", loadAvg())
	ladder := []int{50, 200}
	bin := gradientBinary(b)
	measure := func(proto string) []step {
		n, rtmp := startNodeProcRTMP(b, bin)
		var p *testutil.Process
		if proto == "rtmp" {
			p = testutil.FFmpegPublish(b, benchClip(b), "flv", "rtmp://"+rtmp+"/live/bench")
		} else {
			p = testutil.FFmpegPublish(b, benchClip(b), "rtsp", "rtsp://"+n.rtsp+"/live/bench", "-rtsp_transport", "tcp")
		}
		fmt.Printf(" %s ingest:\n", proto)
		steps := runLadder(b, n, "live/bench", ladder, func() (reader, error) {
			return dialRTSP("rtsp://" + n.rtsp + "/live/bench")
		})
		p.Cmd.Process.Kill()
		n.proc.Cmd.Process.Kill()
		<-p.Done()
		<-n.proc.Done()
		return steps
	}
	rtsp := measure("rtsp")
	rtmp := measure("rtmp")
	fmt.Printf("  load average after: %s\n", loadAvg())
	for i := range min(len(rtsp), len(rtmp)) {
		a, r := rtsp[i], rtmp[i]
		ok := a.minRatio >= keepRatio && r.minRatio >= keepRatio
		fmt.Printf("%4d RTSP readers: RTSP ingest (anchor) %.5f CPU-s/reader-s, RTMP ingest %.5f = %.3f x (target within 5 %%: 0.95-1.05); all readers kept >= %.0f%% of the stream: %v\n",
			a.n, a.cpuPerRS, r.cpuPerRS, r.cpuPerRS/a.cpuPerRS, keepRatio*100, ok)
		if i == min(len(rtsp), len(rtmp))-1 {
			b.ReportMetric(r.cpuPerRS/a.cpuPerRS, "x-rtsp-ingest")
		}
	}
}
