package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

func httpDo(t *testing.T, method, url, ctype string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// rawRTSP sends one raw request on a fresh connection and returns the status line.
func rawRTSP(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line
}

// TestNodeRefusesBadInputAndKeepsServing throws hostile and wrong input at
// every port of a node while a stream plays, and proves each gets a clear
// error and the stream keeps playing afterwards.
func TestNodeRefusesBadInputAndKeepsServing(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/good"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/good")

	t.Run("H265 publish refused naming the codec", func(t *testing.T) {
		hevc := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, VideoCodec: "libx265"})
		p := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", hevc, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", n.rtspURL("live/hevc"))
		if err := p.Wait(t, 30*time.Second); err == nil {
			t.Fatal("ffmpeg published H.265 without error")
		}
		if !strings.Contains(n.logs.String(), "H265") {
			t.Fatal("no log line names H265")
		}
		if _, ok := n.Hub.Lookup("live/hevc"); ok {
			t.Fatal("H.265 stream is in the hub")
		}
	})
	t.Run("MJPEG publish over SRT refused naming the codec", func(t *testing.T) {
		mj := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, VideoCodec: "mjpeg"})
		p := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", mj, "-c", "copy", "-f", "mpegts", n.srtURL("live/mjpeg"))
		p.Wait(t, 30*time.Second)
		testutil.Eventually(t, 10*time.Second, "a log line names the refused codec", func() bool {
			l := n.logs.String()
			return strings.Contains(l, "live/mjpeg") && strings.Contains(l, "not supported")
		})
		if _, ok := n.Hub.Lookup("live/mjpeg"); ok {
			t.Fatal("MJPEG stream is in the hub")
		}
	})
	t.Run("second publisher refused", func(t *testing.T) {
		p := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", n.rtspURL("live/good"))
		if err := p.Wait(t, 30*time.Second); err == nil {
			t.Fatal("second publisher was accepted")
		}
	})
	t.Run("random bytes on RTSP, SRT and HTTP ports", func(t *testing.T) {
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		for _, addr := range []string{n.cfg.RTSP.Addr, n.HTTPAddr()} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			c.Write(junk)
			io.Copy(io.Discard, c) // the server answers with an error and/or closes
			c.Close()
		}
		u, err := net.Dial("udp", n.cfg.SRT.Addr)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			u.Write(junk[i*100 : i*100+1+i%1400])
		}
		u.Close()
	})
	t.Run("malformed SDP offer is 400", func(t *testing.T) {
		code, body := httpDo(t, "POST", n.httpURL("live/good/whep"), "application/sdp", []byte("v=0\r\nthis is not sdp\r\n"))
		if code != http.StatusBadRequest {
			t.Fatalf("malformed SDP: %d %s, want 400", code, body)
		}
	})
	t.Run("unknown stream is 404 over WHEP, HLS and RTSP", func(t *testing.T) {
		offer := []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:96 H264/90000\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00\r\na=setup:actpass\r\n")
		if code, body := httpDo(t, "POST", n.httpURL("live/nothing/whep"), "application/sdp", offer); code != http.StatusNotFound {
			t.Fatalf("WHEP unknown stream: %d %s, want 404", code, body)
		}
		if code, body := httpDo(t, "GET", n.httpURL("live/nothing/index.m3u8"), "", nil); code != http.StatusNotFound {
			t.Fatalf("HLS unknown stream: %d %s, want 404", code, body)
		}
		line := rawRTSP(t, n.cfg.RTSP.Addr, fmt.Sprintf("DESCRIBE rtsp://%s/live/nothing RTSP/1.0\r\nCSeq: 1\r\n\r\n", n.cfg.RTSP.Addr))
		if !strings.Contains(line, "404") {
			t.Fatalf("RTSP DESCRIBE unknown stream: %q, want 404", line)
		}
	})
	t.Run("hostile stream names are refused", func(t *testing.T) {
		for _, p := range []string{"live/%01x/index.m3u8", "live/a@b@c/whep", "live/a%20b/index.m3u8", "live/a%40/index.m3u8"} {
			if code, body := httpDo(t, "GET", n.httpURL(p), "", nil); code != http.StatusBadRequest {
				t.Errorf("GET /%s: %d %s, want 400", p, code, body)
			}
		}
		// ".." is cleaned by the HTTP server before routing; it must never
		// reach a stream lookup as a name.
		if code, _ := httpDo(t, "GET", n.httpURL("live/../../etc/passwd/index.m3u8"), "", nil); code == http.StatusOK {
			t.Error("GET with .. answered 200")
		}
		// "live/a@b" reads rendition b of live/a, which does not exist.
		if code, body := httpDo(t, "GET", n.httpURL("live/a%40b/index.m3u8"), "", nil); code != http.StatusNotFound {
			t.Errorf("GET rendition of an unknown stream: %d %s, want 404", code, body)
		}
		// Publishers push sources: a name with '@', '..' or a control
		// character (percent-encoded: a raw one is not an RTSP request line
		// at all) is refused.
		for _, p := range []string{"live/../x", "live/a@b", "live/a%01b"} {
			req := fmt.Sprintf("ANNOUNCE rtsp://%s/%s RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n", n.cfg.RTSP.Addr, p)
			if line := rawRTSP(t, n.cfg.RTSP.Addr, req); !strings.Contains(line, "400") {
				t.Errorf("ANNOUNCE %q: %q, want 400", p, line)
			}
		}
	})

	// After all of it, the good stream still plays.
	sizes := ffmpegDecode(t, n.rtspURL("live/good"), 30, "-rtsp_transport", "tcp")
	assertFrames(t, "RTSP read after bad input", sizes, 30, "320x240")
	sizes, _ = whepFrames(t, n.httpURL("live/good/whep"), 30)
	assertFrames(t, "WHEP read after bad input", sizes, 30, "320x240")
}
