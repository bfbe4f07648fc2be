package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// MediaMTX on this machine class, same stream, load generator on the same
// 2 cores (from the issue): the anchors and the targets derived from them.
const (
	mtxRTSPCPU   = 0.0017    // CPU-s per RTSP reader-second at 500 readers
	mtxRTSPRSS   = 105 << 10 // bytes per RTSP reader (1,000 held)
	mtxRTSPHeld  = 1000      //
	mtxWHEPCPU   = 0.0027    // CPU-s per WHEP reader-second
	mtxWHEPRSS   = 4.3 * 1024 * 1024
	mtxWHEPHeld  = 300
	targetCPU    = 0.8 // of MediaMTX's CPU per reader
	targetRTSPKB = 100 << 10
	targetWHEPKB = 1 << 20
	keepRatio    = 0.9 // every reader keeps 90% of the stream's bytes
	settle       = 4 * time.Second
	window       = 6 * time.Second
)

// reader is one viewer of the load generator.
type reader interface {
	bytes() uint64
	close()
}

type step struct {
	n          int
	cpuPerRS   float64 // node CPU-s per reader-second
	rssPer     float64 // node RSS growth per reader, bytes
	minRatio   float64 // worst reader's bytes / stream's bytes in the window
	failedDial int
}

// runLadder adds readers up to each n of ladder and measures a window at each.
func runLadder(b *testing.B, n *nodeProc, path string, ladder []int, dial func() (reader, error)) []step {
	n.waitStream(b, path)
	time.Sleep(settle) // let the publisher reach steady state before the baseline
	rss0 := n.rssBytes(b)
	var readers []reader
	defer func() {
		for _, r := range readers {
			r.close()
		}
	}()
	var steps []step
	for _, target := range ladder {
		failed := 0
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := len(readers); i < target; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r, err := dial()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					return
				}
				readers = append(readers, r)
			}()
		}
		wg.Wait()
		time.Sleep(settle)
		before := make([]uint64, len(readers))
		for i, r := range readers {
			before[i] = r.bytes()
		}
		in0, cpu0, t0 := n.bytesIn(b, path), n.cpuSeconds(b), time.Now()
		time.Sleep(window)
		in1, cpu1, el := n.bytesIn(b, path), n.cpuSeconds(b), time.Since(t0).Seconds()
		minRatio := 1e9
		for i, r := range readers {
			if ratio := float64(r.bytes()-before[i]) / float64(in1-in0); ratio < minRatio {
				minRatio = ratio
			}
		}
		if failed > 0 || len(readers) == 0 {
			minRatio = 0
		}
		s := step{n: target, cpuPerRS: (cpu1 - cpu0) / (float64(len(readers)) * el),
			rssPer: float64(n.rssBytes(b)-rss0) / float64(max(len(readers), 1)), minRatio: minRatio, failedDial: failed}
		steps = append(steps, s)
		fmt.Printf("  %5d readers: node %.5f CPU-s/reader-s, %7.1f KiB RSS/reader, worst reader %.2f of stream bytes, %d dial failures\n",
			s.n, s.cpuPerRS, s.rssPer/1024, s.minRatio, failed)
		if minRatio < keepRatio {
			break
		}
	}
	return steps
}

func report(b *testing.B, proto string, steps []step, anchorCPU, anchorRSS float64, anchorHeld int, targetRSS float64) {
	held, last := 0, step{}
	for _, s := range steps {
		if s.minRatio >= keepRatio {
			held, last = s.n, s
		}
	}
	fmt.Printf("%s fan-out: held %d readers at >= %.0f%% of the stream (MediaMTX %d)\n", proto, held, keepRatio*100, anchorHeld)
	if held > 0 {
		fmt.Printf("  at %d readers: %.5f CPU-s per reader-second = %.2f x MediaMTX's %.4f (target <= %.1f)\n",
			held, last.cpuPerRS, last.cpuPerRS/anchorCPU, anchorCPU, targetCPU)
		fmt.Printf("  at %d readers: %.1f KiB RSS per reader = %.2f x MediaMTX's %.0f KiB (target < %.0f KiB)\n",
			held, last.rssPer/1024, last.rssPer/anchorRSS, anchorRSS/1024, targetRSS/1024)
	}
	b.ReportMetric(float64(held), "readers_held")
	b.ReportMetric(last.cpuPerRS, "cpu-s/reader-s")
	b.ReportMetric(last.rssPer/1024, "KiB/reader")
}

// rtspReader is a minimal RTSP reader over TCP: DESCRIBE, SETUP every
// media interleaved, PLAY, then count what arrives without parsing it. The
// load generator shares the node's 2 cores, so it must cost far less per
// reader than the node; a full client library parsing every packet does not.
type rtspReader struct {
	c net.Conn
	n atomic.Uint64
}

func (r *rtspReader) bytes() uint64 { return r.n.Load() }
func (r *rtspReader) close()        { r.c.Close() }

func dialRTSP(url string) (reader, error) {
	host := strings.TrimPrefix(url, "rtsp://")
	host = host[:strings.IndexByte(host, '/')]
	c, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	cseq := 0
	do := func(method, u, extra string) (map[string]string, string, error) {
		cseq++
		fmt.Fprintf(c, "%s %s RTSP/1.0\r\nCSeq: %d\r\n%s\r\n", method, u, cseq, extra)
		status, err := br.ReadString('\n')
		if err != nil {
			return nil, "", err
		}
		if !strings.Contains(status, " 200 ") {
			return nil, "", fmt.Errorf("%s: %s", method, strings.TrimSpace(status))
		}
		h := map[string]string{}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return nil, "", err
			}
			if l = strings.TrimSpace(l); l == "" {
				break
			}
			k, v, _ := strings.Cut(l, ":")
			h[strings.ToLower(k)] = strings.TrimSpace(v)
		}
		body := make([]byte, 0)
		if cl, _ := strconv.Atoi(h["content-length"]); cl > 0 {
			body = make([]byte, cl)
			if _, err := io.ReadFull(br, body); err != nil {
				return nil, "", err
			}
		}
		return h, string(body), nil
	}
	fail := func(err error) (reader, error) { c.Close(); return nil, err }
	h, sdp, err := do("DESCRIBE", url, "Accept: application/sdp\r\n")
	if err != nil {
		return fail(err)
	}
	base := strings.TrimSuffix(h["content-base"], "/")
	if base == "" {
		base = url
	}
	var controls []string
	inMedia := false
	for _, l := range strings.Split(sdp, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "m=") {
			inMedia = true
		}
		if inMedia && strings.HasPrefix(l, "a=control:") {
			ctl := strings.TrimPrefix(l, "a=control:")
			if !strings.HasPrefix(ctl, "rtsp://") {
				ctl = base + "/" + ctl
			}
			controls = append(controls, ctl)
		}
	}
	session := ""
	for i, ctl := range controls {
		extra := fmt.Sprintf("Transport: RTP/AVP/TCP;unicast;interleaved=%d-%d\r\n", 2*i, 2*i+1)
		if session != "" {
			extra += "Session: " + session + "\r\n"
		}
		h, _, err := do("SETUP", ctl, extra)
		if err != nil {
			return fail(err)
		}
		session, _, _ = strings.Cut(h["session"], ";")
	}
	if _, _, err := do("PLAY", base+"/", "Session: "+session+"\r\n"); err != nil {
		return fail(err)
	}
	c.SetDeadline(time.Time{})
	r := &rtspReader{c: c}
	r.n.Add(uint64(br.Buffered()))
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			r.n.Add(uint64(n))
			if err != nil {
				return
			}
		}
	}()
	return r, nil
}

// BenchmarkFanOutRTSP holds a growing number of RTSP readers of one
// 1280x720 30 fps 2 Mbit/s stream published by ffmpeg -c copy, and prints
// the node's CPU and memory per reader against MediaMTX's.
func BenchmarkFanOutRTSP(b *testing.B) {
	header(b, "RTSP fan-out")
	n := startNodeProc(b)
	testutil.FFmpegPublish(b, benchClip(b), "rtsp", "rtsp://"+n.rtsp+"/live/bench", "-rtsp_transport", "tcp")
	steps := runLadder(b, n, "live/bench", []int{50, 100, 250, 500, 750, 1000, 1250, 1500, 2000}, func() (reader, error) {
		return dialRTSP("rtsp://" + n.rtsp + "/live/bench")
	})
	report(b, "RTSP", steps, mtxRTSPCPU, mtxRTSPRSS, mtxRTSPHeld, targetRTSPKB)
}

type whepReader struct{ s *testutil.WHEPSession }

func (r whepReader) bytes() uint64 { st := r.s.Stats(); return st.VideoBytes + st.AudioBytes }
func (r whepReader) close()        { r.s.Close() }

// BenchmarkFanOutWHEP does the same with WebRTC (WHEP) readers. The node
// sends with UDP GSO (webrtc.gso) unless GRADIENT_BENCH_GSO=0, to compare:
//
//	GRADIENT_BENCH_GSO=0 go test -run '^$' -bench FanOutWHEP -benchtime 1x ./bench/
func BenchmarkFanOutWHEP(b *testing.B) {
	header(b, "WHEP fan-out")
	n := startNodeProc(b)
	testutil.FFmpegPublish(b, benchClip(b), "rtsp", "rtsp://"+n.rtsp+"/live/bench", "-rtsp_transport", "tcp")
	url := "http://" + n.http + "/live/bench/whep"
	steps := runLadder(b, n, "live/bench", []int{25, 50, 100, 200, 300, 400, 500, 600}, func() (reader, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := testutil.DialWHEP(ctx, url, testutil.WHEPOptions{CountOnly: true, Loopback: true})
		if err != nil {
			return nil, err
		}
		select {
		case <-s.Connected():
			return whepReader{s}, nil
		case <-ctx.Done():
			s.Close()
			return nil, fmt.Errorf("WHEP session did not connect: %w", ctx.Err())
		}
	})
	report(b, "WHEP", steps, mtxWHEPCPU, mtxWHEPRSS, mtxWHEPHeld, targetWHEPKB)
}
