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

// startNodeProcRTMP is startNodeProc with the RTMP listener on and RTSP
// over TCP only (two of them run side by side).
func startNodeProcRTMP(b *testing.B, bin string) (*nodeProc, string) {
	n := &nodeProc{
		http: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
		rtsp: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
	}
	n.srtUDP = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "udp"))
	rtmp := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp"))
	cfg := filepath.Join(b.TempDir(), "node.yaml")
	if err := os.WriteFile(cfg, []byte("webrtc:\n  max_sessions_per_client: 100000\n"+
		"rtsp:\n  udp_rtp_addr: \"off\"\n  udp_rtcp_addr: \"off\"\n"), 0o644); err != nil {
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

// ingestSide is one node of the pair with its readers.
type ingestSide struct {
	proto   string
	n       *nodeProc
	pub     *testutil.Process
	readers []reader
	cpu     float64 // CPU-s over the measured windows
	rs      float64 // reader-seconds over them
	minKeep float64 // worst reader's share of the stream's bytes in a window
}

func BenchmarkRTMPIngestVsRTSPIngestCPUPerReader(b *testing.B) {
	header(b, "RTMP ingest vs RTSP ingest: node CPU per RTSP reader-second")
	fmt.Printf("  load average before: %s\n", loadAvg())
	// Both nodes run side by side, each fed the same clip by its own
	// ffmpeg, so that the load the other engineers put on the machine
	// falls on both alike; each step is measured over the same windows.
	bin := gradientBinary(b)
	var sides []*ingestSide
	for _, proto := range []string{"rtsp", "rtmp"} {
		n, rtmp := startNodeProcRTMP(b, bin)
		s := &ingestSide{proto: proto, n: n}
		if proto == "rtmp" {
			s.pub = testutil.FFmpegPublish(b, benchClip(b), "flv", "rtmp://"+rtmp+"/live/bench")
		} else {
			s.pub = testutil.FFmpegPublish(b, benchClip(b), "rtsp", "rtsp://"+n.rtsp+"/live/bench", "-rtsp_transport", "tcp")
		}
		sides = append(sides, s)
	}
	defer func() {
		for _, s := range sides {
			for _, r := range s.readers {
				r.close()
			}
		}
	}()
	for _, s := range sides {
		s.n.waitStream(b, "live/bench")
	}
	time.Sleep(settle)
	const windows = 3
	for _, target := range []int{50, 200} {
		for _, s := range sides {
			for len(s.readers) < target {
				r, err := dialRTSP("rtsp://" + s.n.rtsp + "/live/bench")
				if err != nil {
					b.Fatalf("%s ingest: RTSP reader %d: %v", s.proto, len(s.readers)+1, err)
				}
				s.readers = append(s.readers, r)
			}
			s.cpu, s.rs, s.minKeep = 0, 0, 1e9
		}
		time.Sleep(settle)
		for range windows {
			type snap struct {
				in, cpu float64
				bytes   []uint64
			}
			take := func(s *ingestSide) snap {
				sn := snap{in: float64(s.n.bytesIn(b, "live/bench")), cpu: s.n.cpuSeconds(b)}
				for _, r := range s.readers {
					sn.bytes = append(sn.bytes, r.bytes())
				}
				return sn
			}
			before := []snap{take(sides[0]), take(sides[1])}
			t0 := time.Now()
			time.Sleep(window)
			el := time.Since(t0).Seconds()
			for i, s := range sides {
				after := take(s)
				s.cpu += after.cpu - before[i].cpu
				s.rs += float64(len(s.readers)) * el
				for j := range s.readers {
					s.minKeep = min(s.minKeep, float64(after.bytes[j]-before[i].bytes[j])/(after.in-before[i].in))
				}
			}
		}
		a, r := sides[0], sides[1]
		fmt.Printf("%4d RTSP readers per node, %d windows of %v: RTSP ingest (anchor) %.5f CPU-s/reader-s, RTMP ingest %.5f = %.3f x "+
			"(target within 5 %%: 0.95-1.05); worst reader kept %.2f / %.2f of the stream's bytes (load average %s)\n",
			target, windows, window, a.cpu/a.rs, r.cpu/r.rs, (r.cpu/r.rs)/(a.cpu/a.rs), a.minKeep, r.minKeep, loadAvg())
		b.ReportMetric((r.cpu/r.rs)/(a.cpu/a.rs), fmt.Sprintf("x-rtsp-ingest-%d", target))
	}
}
