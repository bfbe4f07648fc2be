package ingest_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// rtspLogBuffer collects a component's log lines so that tests can check what
// was logged; it is printed when the test fails.
type rtspLogBuffer = testutil.LogBuffer

// rtspNode is an RTSP server with RTSP reading wired in, as a node has it.
type rtspNode struct {
	hub  *media.Hub
	srv  *ingest.RTSPServer
	read *egress.RTSPReader
	logs *rtspLogBuffer
	addr string // host:port
}

func (n *rtspNode) url(path string) string { return "rtsp://" + n.addr + "/" + path }

// rtspFreeUDPPair returns an even UDP port whose successor is free too.
func rtspFreeUDPPair(t *testing.T) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		if p%2 != 0 || p > 65000 {
			a.Close()
			continue
		}
		b, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p
	}
	t.Fatal("no free UDP port pair")
	return 0
}

func startRTSPNode(t *testing.T, cfg ingest.RTSPConfig) *rtspNode {
	t.Helper()
	logs := &rtspLogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub := testutil.NewHub(t, media.HubConfig{}, log)
	read, err := egress.NewRTSPReader(egress.RTSPReaderConfig{}, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = "127.0.0.1:0"
	if !cfg.DisableUDP && cfg.UDPRTPAddr == "" {
		p := rtspFreeUDPPair(t)
		cfg.UDPRTPAddr = "127.0.0.1:" + strconv.Itoa(p)
	}
	cfg.Read = read
	srv, err := ingest.NewRTSPServer(cfg, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		read.Close()
		hub.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &rtspNode{hub: hub, srv: srv, read: read, logs: logs, addr: srv.Addr().String()}
}

func (n *rtspNode) waitPublished(t *testing.T, path string) *media.Stream {
	t.Helper()
	var s *media.Stream
	testutil.Eventually(t, 15*time.Second, "stream "+path+" published in the hub", func() bool {
		var ok bool
		s, ok = n.hub.Lookup(path)
		return ok
	})
	return s
}

// rtspPlayOpts are the reader settings of these tests: a 5 s read timeout.
func rtspPlayOpts(transport gortsplib.Transport) testutil.RTSPPlayOptions {
	return testutil.RTSPPlayOptions{Transport: transport, ReadTimeout: 5 * time.Second}
}

// rtspPlay DESCRIBEs, SETUPs and PLAYs url over TCP interleaved transport.
func rtspPlay(t *testing.T, url string) (*testutil.RTSPPlayer, error) {
	t.Helper()
	return testutil.RTSPPlay(t, url, rtspPlayOpts(gortsplib.TransportTCP))
}

// stillServes proves that the server still serves a live stream: a new
// reader decodes pictures of it.
func (n *rtspNode) stillServes(t *testing.T, path string) {
	t.Helper()
	p, err := rtspPlay(t, n.url(path))
	if err != nil {
		t.Fatalf("read %s after the refusal: %v", path, err)
	}
	p.WaitFrames(t, 10, 320, 240, 10*time.Second)
	p.Close()
}

// rtspShortGOPClip is a clip with an IDR every third of a second, so that a new
// reader starts decoding quickly.
func rtspShortGOPClip(t *testing.T) string {
	return testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10})
}

func TestRTSPPublishOverTCPIsReadBackDecodable(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{})
	testutil.FFmpegPublish(t, rtspShortGOPClip(t), "rtsp", n.url("live/tcp"), "-rtsp_transport", "tcp")
	s := n.waitPublished(t, "live/tcp")
	if got := s.Description().Tracks[0].String(); got != "H264 320x240" {
		t.Fatalf("published track %q, want H264 320x240", got)
	}
	p, err := rtspPlay(t, n.url("live/tcp"))
	if err != nil {
		t.Fatal(err)
	}
	p.WaitFrames(t, 60, 320, 240, 15*time.Second)
}

func TestRTSPPublishOverUDPIsReadBackOverUDPAndTCP(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{})
	testutil.FFmpegPublish(t, rtspShortGOPClip(t), "rtsp", n.url("live/udp"), "-rtsp_transport", "udp")
	n.waitPublished(t, "live/udp")
	// The stream is published at ANNOUNCE; RECORD, which logs the
	// transport, follows a moment later.
	testutil.Eventually(t, 5*time.Second, "the publisher records over UDP", func() bool {
		return strings.Contains(n.logs.String(), "transport=UDP")
	})
	for _, tr := range []gortsplib.Transport{gortsplib.TransportUDP, gortsplib.TransportTCP} {
		p, err := testutil.RTSPPlay(t, n.url("live/udp"), rtspPlayOpts(tr))
		if err != nil {
			t.Fatalf("read over %v: %v", tr, err)
		}
		p.WaitFrames(t, 60, 320, 240, 15*time.Second)
		p.Close()
	}
}

func TestRTSPPublishCarriesAudioToReaders(t *testing.T) {
	for _, tc := range []struct {
		name, audio string
		codec       media.Codec
		extra       []string
		logged      string // the RTP format the server saw
	}{
		{"aac", "aac", media.CodecAAC, nil, "codecs=\"[H264 AAC]\""},
		{"aac-latm", "aac", media.CodecAAC, []string{"-rtpflags", "latm"}, "codecs=\"[H264 AAC-LATM]\""},
		{"opus", "opus", media.CodecOpus, nil, "codecs=\"[H264 Opus]\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
			clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10, Audio: tc.audio})
			testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/audio"), append([]string{"-rtsp_transport", "tcp"}, tc.extra...)...)
			s := n.waitPublished(t, "live/audio")
			d := s.Description()
			if a := d.AudioTrack(); a < 0 || d.Tracks[a].Codec != tc.codec || d.Tracks[a].Channels != 2 {
				t.Fatalf("published tracks %v, want H264 and %s stereo", s.Info().Tracks, tc.codec)
			}
			testutil.Eventually(t, 5*time.Second, "server logs "+tc.logged, func() bool {
				return strings.Contains(n.logs.String(), tc.logged)
			})

			p, err := rtspPlay(t, n.url("live/audio"))
			if err != nil {
				t.Fatal(err)
			}
			var aac *format.MPEG4Audio
			var opus *format.Opus
			switch {
			case tc.codec == media.CodecAAC && p.Desc.FindFormat(&aac) == nil:
				t.Fatalf("reader's SDP has no AAC track: %v", p.Desc.Medias)
			case tc.codec == media.CodecAAC && (aac.Config.SampleRate != 48000 || aac.Config.ChannelCount != 2):
				t.Fatalf("reader's AAC config %+v, want 48 kHz stereo", aac.Config)
			case tc.codec == media.CodecOpus && p.Desc.FindFormat(&opus) == nil:
				t.Fatalf("reader's SDP has no Opus track: %v", p.Desc.Medias)
			}
			// 50 AUs is about a second of audio.
			got := 0
			deadline := time.After(10 * time.Second)
			for got < 50 {
				select {
				case aus := <-p.Audio():
					for _, au := range aus {
						if len(au) == 0 {
							t.Fatal("empty audio access unit")
						}
					}
					got += len(aus)
				case <-p.Video():
				case <-deadline:
					t.Fatalf("received %d audio access units in 10 s", got)
				}
			}
		})
	}
}

func TestRTSPRefusesUnsupportedVideoCodecsNamingThem(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	testutil.FFmpegPublish(t, rtspShortGOPClip(t), "rtsp", n.url("live/ok"), "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/ok")
	for _, tc := range []struct{ encoder, name string }{{"libx265", "H265"}, {"mjpeg", "MJPEG"}} {
		t.Run(tc.name, func(t *testing.T) {
			clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2, VideoCodec: tc.encoder})
			ff := testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/"+tc.encoder), "-rtsp_transport", "tcp")
			ff.Wait(t, 15*time.Second)
			if out := ff.Output(); !strings.Contains(out, "415") || !strings.Contains(out, tc.name) {
				t.Fatalf("ffmpeg was not refused with 415 naming %s; output:\n%s", tc.name, out)
			}
			want := "codec " + tc.name + " not supported: Gradient carries H.264 video with AAC or Opus audio"
			if !strings.Contains(n.logs.String(), want) {
				t.Fatalf("log does not say %q", want)
			}
			if _, ok := n.hub.Lookup("live/" + tc.encoder); ok {
				t.Fatal("refused stream is in the hub")
			}
			n.stillServes(t, "live/ok")
		})
	}
}

func TestRTSPSecondPublisherIsRefusedWhileFirstKeepsFlowing(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	clip := rtspShortGOPClip(t)
	testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/dup"), "-rtsp_transport", "tcp")
	s := n.waitPublished(t, "live/dup")
	before := s.Info()

	second := testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/dup"), "-rtsp_transport", "tcp")
	second.Wait(t, 15*time.Second)
	if out := second.Output(); !strings.Contains(out, "409") || !strings.Contains(out, "already being published") {
		t.Fatalf("second publisher not refused with 409 already being published; output:\n%s", out)
	}
	now, ok := n.hub.Lookup("live/dup")
	if !ok || now != s || now.Info().Source != before.Source {
		t.Fatal("the first publisher's stream was replaced")
	}
	testutil.Eventually(t, 5*time.Second, "first publisher keeps flowing", func() bool {
		return s.Info().UnitsIn > before.UnitsIn+30
	})
	n.stillServes(t, "live/dup")
}

func TestRTSPPublisherGoneEndsStreamAndPathIsFreeAgain(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	clip := rtspShortGOPClip(t)
	ff := testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/again"), "-rtsp_transport", "tcp")
	s := n.waitPublished(t, "live/again")
	p, err := rtspPlay(t, n.url("live/again"))
	if err != nil {
		t.Fatal(err)
	}
	p.WaitFrames(t, 5, 320, 240, 10*time.Second)

	if err := ff.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "stream ends when its publisher goes", func() bool {
		cur, ok := n.hub.Lookup("live/again")
		return !ok || cur != s
	})
	select {
	case <-p.Done(): // the reader's session was closed
	case <-time.After(10 * time.Second):
		t.Fatal("reader still connected after the stream ended")
	}

	testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/again"), "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/again")
	n.stillServes(t, "live/again")
}

// rawRTSP sends one request on a new connection and returns the status
// line of the answer, or "" when the server closed the connection instead.
func rawRTSP(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		return ""
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer to %q", strings.SplitN(req, "\r\n", 2)[0])
		}
		return ""
	}
	return strings.TrimSpace(line)
}

const rtspTestSDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n"

func rtspAnnounce(addr, rawPath string) string {
	return fmt.Sprintf("ANNOUNCE rtsp://%s/%s RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		addr, rawPath, len(rtspTestSDP), rtspTestSDP)
}

func TestRTSPRefusesInvalidStreamPathsWith400(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	testutil.FFmpegPublish(t, rtspShortGOPClip(t), "rtsp", n.url("live/ok"), "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/ok")
	for _, p := range []string{"live/../x", "live/a@b", "live/a%01b", "live/a%0Ab", "live//x", "live/a%20b", strings.Repeat("a", 300)} {
		if got := rawRTSP(t, n.addr, rtspAnnounce(n.addr, p)); !strings.HasPrefix(got, "RTSP/1.0 400") {
			t.Errorf("ANNOUNCE %q answered %q, want 400", p, got)
		}
		want := "RTSP/1.0 400"
		if p == "live/a@b" {
			want = "RTSP/1.0 404" // a valid rendition path, not being published
		}
		if got := rawRTSP(t, n.addr, fmt.Sprintf("DESCRIBE rtsp://%s/%s RTSP/1.0\r\nCSeq: 1\r\n\r\n", n.addr, p)); !strings.HasPrefix(got, want) {
			t.Errorf("DESCRIBE %q answered %q, want %s", p, got, want)
		}
	}
	// A raw control character does not even parse as a URL: the request is
	// refused (400 or closed), never published.
	if got := rawRTSP(t, n.addr, rtspAnnounce(n.addr, "live/a\x01b")); got != "" && !strings.HasPrefix(got, "RTSP/1.0 400") {
		t.Errorf("ANNOUNCE with a control character answered %q", got)
	}
	if !strings.Contains(n.logs.String(), "invalid stream path") {
		t.Error("refusals were not logged")
	}
	for _, s := range n.hub.Streams() {
		if s.Path != "live/ok" {
			t.Errorf("stream %q published", s.Path)
		}
	}
	n.stillServes(t, "live/ok")
}

func TestRTSPDescribeOfUnknownStreamIs404(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	_, err := rtspPlay(t, n.url("live/nobody"))
	var bad liberrors.ErrClientBadStatusCode
	if !errors.As(err, &bad) || bad.Code != base.StatusNotFound {
		t.Fatalf("DESCRIBE of an unknown stream: %v, want 404", err)
	}
}

func TestRTSPSurvivesGarbageOnItsPort(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	testutil.FFmpegPublish(t, rtspShortGOPClip(t), "rtsp", n.url("live/ok"), "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/ok")

	junk := make([]byte, 64<<10)
	if _, err := rand.Read(junk); err != nil {
		t.Fatal(err)
	}
	inputs := [][]byte{
		junk,
		[]byte("OPTIONS * RTSP/1.0\r\n" + strings.Repeat("X-Garbage: \x00\xff\r\n", 2000) + "\r\n"),
		[]byte("ANNOUNCE rtsp://" + n.addr + "/live/x RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 99999999\r\n\r\nv=0"),
		[]byte("ANNOUNCE rtsp://" + n.addr + "/live/x RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: 30\r\n\r\nm=video 0 RTP/AVP 96\r\nzzzzzzz"),
		[]byte("SETUP rtsp://" + n.addr + "/live/ok/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;interleaved=9999-1\r\n\r\n"),
		[]byte("PLAY rtsp://" + n.addr + "/live/ok RTSP/1.0\r\nCSeq: 3\r\nSession: nope\r\n\r\n"),
		[]byte("RECORD rtsp://" + n.addr + "/live/ok RTSP/1.0\r\nCSeq: 4\r\n\r\n"),
		append([]byte("$\x00\xff\xff"), junk[:1024]...),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		[]byte(strings.Repeat("DESCRIBE rtsp://x/ RTSP/1.0\r\n", 500)),
	}
	var wg sync.WaitGroup
	for _, in := range inputs {
		wg.Add(1)
		go func(in []byte) {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			c.Write(in)
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}(in)
	}
	wg.Wait()
	n.stillServes(t, "live/ok")
}

func TestRTSPCredentialsHookGuardsReadingAndPublishingWithDigest(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	n := startRTSPNode(t, ingest.RTSPConfig{
		DisableUDP: true,
		Credentials: func(user, path string, publish bool) (string, bool) {
			mu.Lock()
			calls = append(calls, fmt.Sprintf("%s %s %v", user, path, publish))
			mu.Unlock()
			switch {
			case publish && user == "cam":
				return "campass", false
			case !publish && user == "relay":
				return "cluster-secret", false
			}
			return "", false
		},
	})
	clip := rtspShortGOPClip(t)

	anon := testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/auth"), "-rtsp_transport", "tcp")
	anon.Wait(t, 15*time.Second)
	if !strings.Contains(anon.Output(), "401") {
		t.Fatalf("anonymous publisher not refused with 401; output:\n%s", anon.Output())
	}
	testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://cam:campass@"+n.addr+"/live/auth", "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/auth")

	_, err := rtspPlay(t, n.url("live/auth"))
	var bad liberrors.ErrClientBadStatusCode
	if !errors.As(err, &bad) || bad.Code != base.StatusUnauthorized {
		t.Fatalf("reader without credentials: %v, want 401", err)
	}
	_, err = rtspPlay(t, "rtsp://relay:wrong@"+n.addr+"/live/auth")
	if err == nil {
		t.Fatal("reader with a wrong secret was let in")
	}
	p, err := rtspPlay(t, "rtsp://relay:cluster-secret@"+n.addr+"/live/auth")
	if err != nil {
		t.Fatalf("reader with the cluster secret: %v", err)
	}
	p.WaitFrames(t, 30, 320, 240, 10*time.Second)

	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(calls, "\n"), "relay live/auth false") {
		t.Fatalf("hook calls %q do not include the reader's check", calls)
	}
}

// rtspRawH264 returns the access units of a 3 s 320x240 H.264 clip whose
// first IDR carries the only SPS and PPS, as a camera sends them in band.
func rtspRawH264(t *testing.T) [][][]byte {
	t.Helper()
	raw := t.TempDir() + "/clip.h264"
	out := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "10", "-pix_fmt", "yuv420p",
		"-x264-params", "aud=1", "-f", "h264", raw)
	if err := out.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("make raw clip: %v\n%s", err, out.Output())
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	aus := rtspAnnexBAccessUnits(t, b)
	if len(aus) < 60 || !h264.IsRandomAccess(aus[0]) {
		t.Fatalf("raw clip has %d access units", len(aus))
	}
	return aus
}

// rtspAnnexBAccessUnits splits an Annex-B H.264 stream written with access
// unit delimiters into access units (without the delimiters).
func rtspAnnexBAccessUnits(t *testing.T, b []byte) [][][]byte {
	t.Helper()
	var nalus [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				nalus = append(nalus, bytes.TrimRight(b[start:i], "\x00"))
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 {
		nalus = append(nalus, b[start:])
	}
	var aus [][][]byte
	var cur [][]byte
	for _, n := range nalus {
		if h264.NALUType(n[0]&0x1f) == h264.NALUTypeAccessUnitDelimiter {
			if len(cur) > 0 {
				aus = append(aus, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, n)
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	return aus
}

func TestRTSPPublishWithoutSDPParameterSetsWaitsForInBandOnes(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	aus := rtspRawH264(t)
	// Start with pictures that cannot be decoded (P pictures of a later
	// GOP): the server must drop them and publish at the IDR.
	aus = append(append([][][]byte(nil), aus[11:15]...), aus...)

	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	desc := &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}}}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Transport: &tcp}
	if err := c.StartRecording(n.url("live/inband"), desc); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := n.hub.Lookup("live/inband"); ok {
		t.Fatal("stream published before its parameter sets were known")
	}
	// The path is reserved: a second publisher is refused even now.
	c2 := &gortsplib.Client{Transport: &tcp}
	err := c2.StartRecording(n.url("live/inband"), desc)
	var bad liberrors.ErrClientBadStatusCode
	if !errors.As(err, &bad) || bad.Code != 409 {
		t.Fatalf("second publisher during the wait: %v, want 409", err)
	}
	c2.Close()

	enc, err := forma.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / 30) // real-time pacing
		defer tick.Stop()
		for i, au := range aus {
			<-tick.C
			pkts, err := enc.Encode(au)
			if err != nil {
				t.Error(err)
				return
			}
			for _, pkt := range pkts {
				pkt.Timestamp = uint32(i * 3000)
				if err := c.WritePacketRTP(desc.Medias[0], pkt); err != nil {
					return
				}
			}
		}
	}()
	n.waitPublished(t, "live/inband")
	rd, err := n.hub.Subscribe("live/inband", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	tr := rd.Description().Tracks[0]
	if w, h, _, err := tr.Video(); err != nil || w != 320 || h != 240 {
		t.Fatalf("published SPS says %dx%d (%v), want 320x240", w, h, err)
	}
	u := <-rd.C()
	if !u.Key || len(u.Data) < 3 {
		t.Fatalf("first unit key=%v with %d NAL units, want an IDR with its parameter sets", u.Key, len(u.Data))
	}
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	frames := 0
	for frames < 20 {
		fs, err := dec.Decode(u.Data, int64(u.PTS))
		if err != nil {
			t.Fatal(err)
		}
		frames += len(fs)
		select {
		case u = <-rd.C():
		case <-time.After(5 * time.Second):
			t.Fatalf("decoded %d frames", frames)
		}
		if u == nil {
			t.Fatalf("stream ended after %d frames", frames)
		}
	}
}

func TestRTSPPublishWithBFramesGivesOrderedDTS(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "15", "-pix_fmt", "yuv420p",
		"-f", "rtsp", "-rtsp_transport", "tcp", n.url("live/bframes"))
	n.waitPublished(t, "live/bframes")
	rd, err := n.hub.Subscribe("live/bframes", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	frames, reordered := 0, 0
	var prev *media.Unit
	deadline := time.After(15 * time.Second)
	for frames < 45 {
		select {
		case u, ok := <-rd.C():
			if !ok {
				t.Fatal("stream ended")
			}
			if u.DTS > u.PTS {
				t.Fatalf("unit with DTS %v after PTS %v", u.DTS, u.PTS)
			}
			if prev != nil && u.DTS <= prev.DTS {
				t.Fatalf("DTS not increasing: %v then %v", prev.DTS, u.DTS)
			}
			if prev != nil && u.PTS < prev.PTS {
				reordered++
			}
			prev = u
			fs, err := dec.Decode(u.Data, int64(u.PTS))
			if err != nil {
				t.Fatal(err)
			}
			frames += len(fs)
		case <-deadline:
			t.Fatalf("decoded %d frames", frames)
		}
	}
	if reordered == 0 {
		t.Fatal("no B-frames seen: the test did not exercise reordering")
	}
}

func TestRTSPPublishIgnoresUnsupportedExtraMedia(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true})
	first := rtspRawH264(t)[0]
	var sps, pps []byte
	for _, nalu := range first {
		switch h264.NALUType(nalu[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = nalu
		case h264.NALUTypePPS:
			pps = nalu
		}
	}
	desc := &description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, SPS: sps, PPS: pps, PacketizationMode: 1}}},
		{Type: description.MediaTypeApplication, Formats: []format.Format{&format.KLV{PayloadTyp: 97}}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}},
	}}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Transport: &tcp}
	if err := c.StartRecording(n.url("live/extra"), desc); err != nil {
		t.Fatalf("publisher with extra media refused: %v", err)
	}
	defer c.Close()
	s := n.waitPublished(t, "live/extra")
	if tr := s.Info().Tracks; len(tr) != 1 || tr[0] != "H264 320x240" {
		t.Fatalf("published tracks %v, want only H264 320x240", tr)
	}
	for _, want := range []string{"codec=KLV", "codec=G711"} {
		if !strings.Contains(n.logs.String(), want) {
			t.Errorf("ignored media not logged: no %q", want)
		}
	}
}

func TestRTSPStartReportsBindErrorAndCloseIsIdempotent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	srv, err := ingest.NewRTSPServer(ingest.RTSPConfig{Addr: ln.Addr().String(), DisableUDP: true}, hub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("Start on a taken port: %v, want a bind error naming the address", err)
	}
	srv.Close()
	srv.Close()
	if _, err := ingest.NewRTSPServer(ingest.RTSPConfig{UDPRTPAddr: ":8001"}, hub, nil); err == nil {
		t.Fatal("odd RTP port accepted")
	}
	if _, err := ingest.NewRTSPServer(ingest.RTSPConfig{WriteQueueSize: 100}, hub, nil); err == nil {
		t.Fatal("WriteQueueSize that is not a power of two accepted")
	}
}

// TestRTSPAnnounceWithoutRecordDoesNotHoldTheName replays the squatter: an
// ANNOUNCE that never sends RECORD, its connection left open. It is closed
// at the setup deadline and the real encoder publishes the name.
func TestRTSPAnnounceWithoutRecordDoesNotHoldTheName(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true, SetupTimeout: 700 * time.Millisecond})
	squatter, err := net.DialTimeout("tcp", n.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	if _, err := squatter.Write([]byte(rtspAnnounce(n.addr, "live/squat"))); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(squatter)
	squatter.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("ANNOUNCE answered %q, %v", line, err)
	}
	if got := rawRTSP(t, n.addr, rtspAnnounce(n.addr, "live/squat")); !strings.Contains(got, "409") {
		t.Fatalf("a second ANNOUNCE while the first holds the name answered %q, want 409", got)
	}
	// The server closes the squatter's connection: the read ends with EOF
	// (not our 5 s deadline).
	start := time.Now()
	for {
		if _, err := br.ReadString('\n'); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the squatter's connection is still open after 5 s")
			}
			break
		}
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("squatter closed after %v, setup_timeout is 700ms", waited)
	}
	testutil.FFmpegPublish(t, rtspShortGOPClip(t), "rtsp", n.url("live/squat"), "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/squat")
	n.stillServes(t, "live/squat")
	if !strings.Contains(n.logs.String(), "no RECORD or PLAY in time") {
		t.Error("the squatter's close was not logged")
	}
}
