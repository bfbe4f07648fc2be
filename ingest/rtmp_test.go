package ingest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	rtmpcodecs "github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

type rtmpTestEnv struct {
	srv  *RTMPServer
	hub  *media.Hub
	logs *srtLogs
	port int
}

// newRTMPTestEnv starts an RTMP server on a loopback port with its own hub;
// its logs are printed when the test fails.
func newRTMPTestEnv(t *testing.T, cfg RTMPConfig) *rtmpTestEnv {
	t.Helper()
	logs := &srtLogs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub := testutil.NewHub(t, media.HubConfig{}, log)
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	srv, err := NewRTMPServer(cfg, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		hub.Close()
		if t.Failed() {
			t.Logf("server logs:\n%s", logs)
		}
	})
	return &rtmpTestEnv{srv: srv, hub: hub, logs: logs, port: srv.Addr().(*net.TCPAddr).Port}
}

func (e *rtmpTestEnv) addr() string { return fmt.Sprintf("127.0.0.1:%d", e.port) }

func (e *rtmpTestEnv) url(path string) string { return "rtmp://" + e.addr() + "/" + path }

func (e *rtmpTestEnv) waitStream(t *testing.T, path string) *media.Reader {
	t.Helper()
	return (&srtTestEnv{hub: e.hub}).waitStream(t, path)
}

// rtmpCheckDecodable reads r from its first keyframe until 60 pictures of
// w×h decoded and 10 audio units came (when it has audio), with rising
// timestamps at 30 fps.
func rtmpCheckDecodable(t *testing.T, r *media.Reader, w, h int) {
	t.Helper()
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	video, audio := r.Description().VideoTrack(), r.Description().AudioTrack()
	first := srtWaitKeyframe(t, r)
	var (
		videoUnits, audioUnits, frames int
		lastVideo, lastAudio           = first.PTS - 1, time.Duration(-1)
	)
	deadline := time.Now().Add(20 * time.Second)
	for u := first; ; u = srtNext(t, r, time.Until(deadline)) {
		switch u.Track {
		case video:
			if u.PTS <= lastVideo || u.DTS > u.PTS {
				t.Fatalf("video unit %d: PTS %v DTS %v after PTS %v", videoUnits, u.PTS, u.DTS, lastVideo)
			}
			lastVideo = u.PTS
			videoUnits++
			frames += dec.DecodeSized(t, u.Data, int64(u.PTS), w, h, fmt.Sprintf("video unit %d", videoUnits))
		case audio:
			if u.PTS <= lastAudio || len(u.Data) == 0 || len(u.Data[0]) == 0 {
				t.Fatalf("audio unit %d: PTS %v after %v, %d AUs", audioUnits, u.PTS, lastAudio, len(u.Data))
			}
			lastAudio = u.PTS
			audioUnits++
		}
		if videoUnits >= 60 && frames >= 55 && (audio < 0 || audioUnits >= 10) {
			break
		}
	}
	// FLV timestamps are milliseconds: 30 fps is 33 or 34 ms a frame.
	span := lastVideo - first.PTS
	want := time.Duration(videoUnits-1) * time.Second / 30
	if d := span - want; d < -want/20 || d > want/20 {
		t.Fatalf("%d video units span %v of PTS, want %v (30 fps)", videoUnits, span, want)
	}
}

func TestRTMPPublishH264AACReachesHubDecodable(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Audio: "aac"})
	env := newRTMPTestEnv(t, RTMPConfig{})
	// As ffmpeg users write it: app "live", stream key "cam1".
	testutil.FFmpegPublish(t, clip, "flv", env.url("live/cam1"))
	r := env.waitStream(t, "live/cam1")

	desc := r.Description()
	if len(desc.Tracks) != 2 || desc.VideoTrack() != 0 || desc.AudioTrack() != 1 {
		t.Fatalf("tracks = %v, want H264 then AAC", r.Stream().Info().Tracks)
	}
	if w, h, _, err := desc.Tracks[0].Video(); err != nil || w != 320 || h != 240 {
		t.Fatalf("video track = %dx%d %v, want 320x240", w, h, err)
	}
	a := desc.Tracks[1]
	if a.Codec != media.CodecAAC || a.AAC == nil || a.SampleRate != 48000 || a.Channels != 2 {
		t.Fatalf("audio track = %s, want AAC 48000 Hz 2ch", a)
	}
	if src := r.Stream().Info().Source; !strings.HasPrefix(src, "rtmp 127.0.0.1:") {
		t.Fatalf("stream source = %q, want the RTMP peer", src)
	}
	rtmpCheckDecodable(t, r, 320, 240)
}

// TestRTMPOBSStyleStreamKeyWithQueryPublishesTheName publishes the way OBS
// "Custom" does (server rtmp://host/live, key cam1?…): ffmpeg's
// rtmp_playpath sends the key alone in the publish command, as OBS does.
func TestRTMPOBSStyleStreamKeyWithQueryPublishesTheName(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newRTMPTestEnv(t, RTMPConfig{})
	testutil.FFmpegPublish(t, clip, "flv", "rtmp://"+env.addr()+"/live",
		"-rtmp_app", "live", "-rtmp_playpath", "obs1?token=abc")
	r := env.waitStream(t, "live/obs1")
	srtWaitKeyframe(t, r)
}

func TestRTMPSecondPublisherRefusedWhileFirstKeepsFlowing(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newRTMPTestEnv(t, RTMPConfig{})
	testutil.FFmpegPublish(t, clip, "flv", env.url("live/cam1"))
	r := env.waitStream(t, "live/cam1")
	source := r.Stream().Info().Source
	counter := srtCount(t, r)

	second := testutil.FFmpegPublish(t, clip, "flv", env.url("live/cam1"))
	if err := second.Wait(t, 15*time.Second); err == nil {
		t.Fatal("second ffmpeg publisher exited cleanly, want a refused publish")
	}
	testutil.Eventually(t, 5*time.Second, "rejection log for the second publisher", func() bool {
		return env.logs.has("rtmp publish rejected", "live/cam1 is already being published")
	})
	if out := second.Output(); !strings.Contains(out, "already being published") {
		t.Errorf("the second publisher was not told why; its output:\n%s", out)
	}

	before := counter.video.Load()
	testutil.Eventually(t, 10*time.Second, "first publisher still flowing after the refusal", func() bool {
		return counter.video.Load() >= before+30
	})
	s, ok := env.hub.Lookup("live/cam1")
	if !ok || s.Info().Source != source {
		t.Fatalf("stream source changed from %q (still published: %v)", source, ok)
	}
	select {
	case <-counter.done:
		t.Fatalf("reader of the first publisher ended: %v", counter.err)
	default:
	}
}

func TestRTMPRefusesUnsupportedAudioCodecsNamingThem(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Audio: "aac"})
	env := newRTMPTestEnv(t, RTMPConfig{})
	for _, tc := range []struct {
		name, path string
		args       []string
	}{
		// MP3 is a codec the RTMP library knows; Speex one it does not.
		{"MP3", "live/mp3", []string{"-c:a", "libmp3lame", "-ar", "44100"}},
		{"Speex", "live/speex", []string{"-c:a", "libspeex", "-ar", "16000", "-ac", "1"}},
	} {
		args := []string{"-hide_banner", "-loglevel", "warning", "-re", "-i", clip, "-t", "8", "-c:v", "copy"}
		args = append(args, tc.args...)
		args = append(args, "-f", "flv", env.url(tc.path))
		p := testutil.Start(t, "ffmpeg", args...)
		testutil.Eventually(t, 15*time.Second, tc.name+" refused with the codec named", func() bool {
			return env.logs.has("rtmp publish refused", "codec="+tc.name, "stream="+tc.path)
		})
		if _, ok := env.hub.Lookup(tc.path); ok {
			t.Fatalf("%s was published with %s audio", tc.path, tc.name)
		}
		_ = p
	}
}

// rtmpHEVCParams encodes a short H.265 clip and returns its VPS, SPS, PPS
// and first access unit (the IDR with its parameter sets).
func rtmpHEVCParams(t *testing.T) (vps, sps, pps []byte, au [][]byte) {
	t.Helper()
	testutil.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "clip.hevc")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
		"testsrc2=size=320x240:rate=30", "-frames:v", "1", "-c:v", "libx265", "-preset", "ultrafast",
		"-x265-params", "log-level=error", "-f", "hevc", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("encode H.265: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var nalus h264.AnnexB // H.265 uses the same start codes
	if err := nalus.Unmarshal(b); err != nil {
		t.Fatalf("split H.265 Annex B: %v", err)
	}
	for _, n := range nalus {
		switch (n[0] >> 1) & 0x3f {
		case 32:
			vps = n
		case 33:
			sps = n
		case 34:
			pps = n
		}
	}
	if vps == nil || sps == nil || pps == nil {
		t.Fatalf("no VPS/SPS/PPS among %d NAL units", len(nalus))
	}
	return vps, sps, pps, nalus
}

// TestRTMPRefusesH265OverEnhancedRTMPNamingIt publishes H.265 the way
// enhanced RTMP carries it (FourCC hvc1 video tags). This ffmpeg (5.1)
// cannot write HEVC in FLV, so the publisher is gortmplib's own client.
func TestRTMPRefusesH265OverEnhancedRTMPNamingIt(t *testing.T) {
	t.Parallel()
	vps, sps, pps, au := rtmpHEVCParams(t)
	env := newRTMPTestEnv(t, RTMPConfig{})

	u, _ := url.Parse(env.url("live/hevc"))
	c := &gortmplib.Client{URL: u, Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		t.Fatalf("RTMP client: %v", err)
	}
	defer c.Close()
	c.NetConn().SetDeadline(time.Now().Add(10 * time.Second))
	track := &gortmplib.Track{Codec: &rtmpcodecs.H265{VPS: vps, SPS: sps, PPS: pps}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{track}}
	if err := w.Initialize(); err != nil {
		t.Fatalf("write enhanced-RTMP sequence start: %v", err)
	}
	// 3 s of the same picture: more than the server probes.
	for i := 0; i < 90; i++ {
		d := time.Duration(i) * time.Second / 30
		if err := w.WriteH265(track, d, d, au); err != nil {
			break // the server hung up: what is expected
		}
	}
	testutil.Eventually(t, 10*time.Second, "H.265 refused with the codec named", func() bool {
		return env.logs.has("rtmp publish refused", "codec=H265", "stream=live/hevc")
	})
	// The server closes the connection (EOF, or a reset when our last
	// writes were left unread).
	c.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c.NetConn()); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection not closed by the server: %v", err)
		}
	}
	if _, ok := env.hub.Lookup("live/hevc"); ok {
		t.Fatal("H.265 stream was published")
	}
}

func TestRTMPRefusesPlayInvalidAndRenditionPaths(t *testing.T) {
	t.Parallel()
	env := newRTMPTestEnv(t, RTMPConfig{})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	for _, tc := range []struct{ path, log string }{
		{"live/cam1@360p", "names a rendition"},
		{"live/..", "invalid"},
	} {
		args := []string{"-hide_banner", "-loglevel", "warning", "-re", "-i", clip, "-t", "5", "-c", "copy", "-f", "flv", env.url(tc.path)}
		p := testutil.Start(t, "ffmpeg", args...)
		if err := p.Wait(t, 15*time.Second); err == nil {
			t.Fatalf("ffmpeg publishing %s exited cleanly, want a refusal", tc.path)
		}
		// The line is written when the server's side of the connection
		// ends, which may be after ffmpeg has exited on the refusal.
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("a rejection log naming %q for %s", tc.log, tc.path), func() bool {
			return env.logs.has("rtmp publish rejected", tc.log)
		})
	}
	p := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-i", env.url("live/cam1"), "-t", "1", "-f", "null", "-")
	if err := p.Wait(t, 15*time.Second); err == nil {
		t.Fatal("ffmpeg playing over RTMP exited cleanly, want a refusal")
	}
	testutil.Eventually(t, 5*time.Second, "a rejection log for RTMP playback", func() bool {
		return env.logs.has("rtmp publish rejected", "RTMP playback is not offered")
	})
}

func TestRTMPServerSurvivesGarbageAndTruncatedHandshakes(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	// Long enough for ffmpeg's publish at the end: the library probes 2 s
	// of media before the first unit.
	env := newRTMPTestEnv(t, RTMPConfig{PublishTimeout: 4 * time.Second})

	// Every connection must be closed by the server within PublishTimeout
	// and a bit, whatever it sent.
	closedBy := func(c net.Conn, what string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(8 * time.Second))
		// EOF, or a reset when the server closed with our bytes unread.
		_, err := io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: connection not closed by the server: %v", what, err)
		}
		c.Close()
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", env.addr())
		if err != nil {
			t.Errorf("dial after garbage: %v", err)
			return nil
		}
		return c
	}
	rnd := rand.New(rand.NewSource(1))
	done := make(chan struct{})
	n := 40
	for i := 0; i < n; i++ {
		b := make([]byte, rnd.Intn(8000))
		rnd.Read(b)
		if i%2 == 0 && len(b) > 0 {
			b[0] = 3 // RTMP version: the handshake goes on into C1 and beyond
		}
		go func(b []byte) {
			defer func() { done <- struct{}{} }()
			c := dial()
			if c == nil {
				return
			}
			c.Write(b)
			closedBy(c, fmt.Sprintf("%d garbage bytes", len(b)))
		}(b)
	}
	for i := 0; i < n; i++ {
		<-done
	}
	// A truncated handshake: C0 and half of C1, then silence.
	c := dial()
	if c == nil {
		t.FailNow()
	}
	c.Write(append([]byte{3}, make([]byte, 700)...))
	closedBy(c, "truncated handshake")

	testutil.FFmpegPublish(t, clip, "flv", env.url("live/after-garbage"))
	srtWaitKeyframe(t, env.waitStream(t, "live/after-garbage"))
}

func TestRTMPPublisherDisconnectEndsStreamAndFreesPath(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4})
	env := newRTMPTestEnv(t, RTMPConfig{})
	args := []string{"-hide_banner", "-loglevel", "warning", "-re", "-i", clip, "-c", "copy", "-f", "flv", env.url("live/once")}
	p := testutil.Start(t, "ffmpeg", args...)
	r := env.waitStream(t, "live/once")
	counter := srtCount(t, r)
	if err := p.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	select {
	case <-counter.done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end after the publisher left")
	}
	testutil.Eventually(t, 5*time.Second, "path free again", func() bool {
		_, ok := env.hub.Lookup("live/once")
		return !ok && env.logs.has("rtmp publisher left", "stream=live/once")
	})
	testutil.Start(t, "ffmpeg", args...)
	srtWaitKeyframe(t, env.waitStream(t, "live/once"))
}

// rtmpSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key into dir.
func rtmpSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestRTMPSPublishReachesHub(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Audio: "aac"})
	cert, key := rtmpSelfSigned(t, t.TempDir())
	env := newRTMPTestEnv(t, RTMPConfig{TLSCert: cert, TLSKey: key})
	testutil.FFmpegPublish(t, clip, "flv", "rtmps://"+env.addr()+"/live/secure")
	r := env.waitStream(t, "live/secure")
	if src := r.Stream().Info().Source; !strings.HasPrefix(src, "rtmps 127.0.0.1:") {
		t.Fatalf("stream source = %q, want the RTMPS peer", src)
	}
	srtWaitKeyframe(t, r)

	// Plain RTMP on the RTMPS port fails the TLS handshake.
	p := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-re", "-i", clip, "-t", "3",
		"-c", "copy", "-f", "flv", env.url("live/plain"))
	if err := p.Wait(t, 20*time.Second); err == nil {
		t.Fatal("plain RTMP publish on the RTMPS port succeeded")
	}
	if _, ok := env.hub.Lookup("live/plain"); ok {
		t.Fatal("plain RTMP stream published on the RTMPS port")
	}
}

func TestRTMPServerCloseEndsStreamsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newRTMPTestEnv(t, RTMPConfig{})
	testutil.FFmpegPublish(t, clip, "flv", env.url("live/cam1"))
	counter := srtCount(t, env.waitStream(t, "live/cam1"))
	done := make(chan error, 1)
	go func() { done <- env.srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	select {
	case <-counter.done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end on Close")
	}
	if err := env.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := env.srv.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestRTMPStreamPath(t *testing.T) {
	for _, tc := range []struct {
		url, path, err string
	}{
		{"rtmp://h:1935/live/cam1", "live/cam1", ""},
		{"rtmp://h/live/cam1?token=x&user=y", "live/cam1", ""},
		{"rtmps://h:443/a/b/c", "a/b/c", ""},
		{"rtmp://h/live/cam1/", "live/cam1", ""},
		{"rtmp://h/", "", "no stream name"},
		{"rtmp://h/live/cam1@720p", "", "names a rendition"},
		{"rtmp://h/live/../x", "", "invalid"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		path, rej := rtmpStreamPath(u)
		switch {
		case tc.err == "" && (rej != nil || path != tc.path):
			t.Errorf("%s: got %q %v, want %q", tc.url, path, rej, tc.path)
		case tc.err != "" && (rej == nil || !strings.Contains(rej.reason, tc.err)):
			t.Errorf("%s: got %q %v, want a refusal with %q", tc.url, path, rej, tc.err)
		}
	}
}

func TestRTMPCodecFromLibraryErrors(t *testing.T) {
	for _, tc := range []struct{ err, codec string }{
		{"unsupported audio codec: 11", "Speex"},
		{"unsupported video codec: 4", "VP6"},
		{fmt.Sprintf("unsupported fourCC: %d", uint32('v')<<24|uint32('v')<<16|uint32('c')<<8|uint32('1')), `FourCC "vvc1"`},
		{"EOF", ""},
	} {
		got := rtmpCodecFromError(fmt.Errorf("read: %s", tc.err))
		switch {
		case tc.codec == "" && got != nil:
			t.Errorf("%s: got codec %q, want none", tc.err, got.codec)
		case tc.codec != "" && (got == nil || got.codec != tc.codec):
			t.Errorf("%s: got %v, want codec %q", tc.err, got, tc.codec)
		}
	}
}

func TestRTMPConfigValidateNamesKeys(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*RTMPConfig)
		want string
	}{
		{func(c *RTMPConfig) { c.Addr = "nonsense" }, "addr:"},
		{func(c *RTMPConfig) { c.TLSCert = "c.pem" }, "tls_cert and tls_key"},
		{func(c *RTMPConfig) { c.PublishTimeout = -1 }, "publish_timeout:"},
		{func(c *RTMPConfig) { c.ReadTimeout = -1 }, "read_timeout:"},
	} {
		c := DefaultRTMPConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error naming %q", err, tc.want)
		}
	}
	if err := DefaultRTMPConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	// A missing certificate fails at Start, naming the keys.
	srv, err := NewRTMPServer(RTMPConfig{Addr: "127.0.0.1:0", TLSCert: "/nonexistent/c.pem", TLSKey: "/nonexistent/k.pem"},
		testutil.NewHub(t, media.HubConfig{}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(); err == nil || !strings.Contains(err.Error(), "tls_cert/tls_key") {
		t.Fatalf("Start with a missing certificate = %v", err)
	}
}

func TestRTMPSilentPublisherDroppedAfterReadTimeout(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newRTMPTestEnv(t, RTMPConfig{ReadTimeout: 2 * time.Second})
	p := testutil.FFmpegPublish(t, clip, "flv", env.url("live/stall"))
	counter := srtCount(t, env.waitStream(t, "live/stall"))
	// Freeze ffmpeg: its TCP connection stays open, and silent.
	if err := p.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer p.Cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-counter.done:
	case <-time.After(8 * time.Second):
		t.Fatal("stream of a silent publisher did not end")
	}
	testutil.Eventually(t, 5*time.Second, "drop logged with the reason", func() bool {
		return env.logs.has("rtmp publisher dropped", "no data for 2s", "stream=live/stall")
	})
}

func TestRTMPPublisherWithoutMediaDroppedAfterPublishTimeout(t *testing.T) {
	t.Parallel()
	env := newRTMPTestEnv(t, RTMPConfig{PublishTimeout: time.Second})
	u, _ := url.Parse(env.url("live/idle"))
	c := &gortmplib.Client{URL: u, Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Handshake, connect and publish, then nothing.
	if err := c.Initialize(ctx); err != nil {
		t.Fatalf("RTMP client: %v", err)
	}
	defer c.Close()
	testutil.Eventually(t, 8*time.Second, "idle publisher dropped", func() bool {
		return env.logs.has("rtmp publisher dropped", "no H.264 IDR within 1s", "stream=live/idle")
	})
	// The name it held is free again.
	env.srv.mu.Lock()
	_, held := env.srv.paths["live/idle"]
	env.srv.mu.Unlock()
	if held {
		t.Fatal("live/idle still held after the drop")
	}
}

// rtmpBigIDR encodes one lossless 1280x720 IDR (hundreds of KB) and returns
// its parameter sets, its access unit and the unit's size.
func rtmpBigIDR(t *testing.T) (sps, pps []byte, au [][]byte, size int) {
	t.Helper()
	testutil.RequireTool(t, "ffmpeg")
	// One big lossless IDR, sent over and over.
	out := filepath.Join(t.TempDir(), "idr.h264")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
		"testsrc2=size=1280x720:rate=30", "-frames:v", "1", "-c:v", "libx264", "-qp", "0", "-f", "h264", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("encode H.264: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	for _, n := range nalus {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		case h264.NALUTypeIDR:
			au = append(au, n)
		}
	}
	for _, n := range au {
		size += len(n)
	}
	if sps == nil || pps == nil || size < 30000 {
		t.Fatalf("IDR of %d bytes with SPS %v PPS %v: too small to cross the window quickly", size, sps != nil, pps != nil)
	}

	return sps, pps, au, size
}

// rtmpPublishClient connects gortmplib's client to path and announces one
// H.264 track.
func rtmpPublishClient(t *testing.T, env *rtmpTestEnv, path string, sps, pps []byte) (*gortmplib.Client, *gortmplib.Writer, *gortmplib.Track) {
	t.Helper()
	u, _ := url.Parse(env.url(path))
	c := &gortmplib.Client{URL: u, Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		t.Fatalf("RTMP client: %v", err)
	}
	t.Cleanup(c.Close)
	track := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: sps, PPS: pps}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{track}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	return c, w, track
}

// TestRTMPProbeIsBoundedInBytes sends big frames that all say timestamp 0:
// the library's track probe would wait for 2 s of timestamps forever, and
// hold every byte; the server drops the publisher at its byte bound.
func TestRTMPProbeIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	sps, pps, au, _ := rtmpBigIDR(t)
	env := newRTMPTestEnv(t, RTMPConfig{PublishTimeout: 60 * time.Second})
	c, w, track := rtmpPublishClient(t, env, "live/flood", sps, pps)
	start := time.Now()
	for i := 0; ; i++ {
		c.NetConn().SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := w.WriteH264(track, 0, 0, au); err != nil {
			break // the server hung up
		}
		if c.BytesSent() > 4*rtmpMaxProbeBytes {
			t.Fatalf("server took %d bytes without tracks", c.BytesSent())
		}
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("hung up after %v, want at the byte bound, well before the publish timeout", d)
	}
	testutil.Eventually(t, 5*time.Second, "the drop is logged with its reason", func() bool {
		return env.logs.has("rtmp publish failed", "before the tracks were known", "stream=live/flood")
	})
}

// TestRTMPPublishOutlastsThePublishTimeoutWithAcknowledgements publishes
// past PublishTimeout and past the 2.5 MB acknowledgement window the
// publisher asks for (gortmplib's client does, as OBS does): the
// acknowledgements the server writes while reading must not run into the
// deadline of the publish phase.
func TestRTMPPublishOutlastsThePublishTimeoutWithAcknowledgements(t *testing.T) {
	t.Parallel()
	sps, pps, au, size := rtmpBigIDR(t)
	env := newRTMPTestEnv(t, RTMPConfig{PublishTimeout: 3 * time.Second})
	c, w, track := rtmpPublishClient(t, env, "live/long", sps, pps)
	// Drain what the server writes (acknowledgements), as a real client does.
	go io.Copy(io.Discard, c.NetConn())
	need := uint64(3 << 20)
	start := time.Now()
	for i := 0; time.Since(start) < 6*time.Second || uint64(i*size) < need; i++ {
		d := time.Duration(i) * time.Second / 30
		if wait := time.Until(start.Add(d)); wait > 0 {
			time.Sleep(wait)
		}
		c.NetConn().SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := w.WriteH264(track, d, d, au); err != nil {
			t.Fatalf("frame %d (%v in, %d bytes sent): server hung up: %v", i, d, c.BytesSent(), err)
		}
		if i > 3000 {
			t.Fatal("frames too small to cross the window")
		}
	}
	s, ok := env.hub.Lookup("live/long")
	if !ok {
		t.Fatal("stream gone")
	}
	if in := s.Info().BytesIn; in < need {
		t.Fatalf("only %d bytes reached the hub", in)
	}
}

// TestRTMPLibraryPanicEndsOnlyThatConnection sends an enhanced-RTMP H.265
// sequence start whose VPS is empty: gortmplib v1.0.1 indexes its first
// byte and panics. The panic ends that connection; a publisher on another
// connection, before and after, keeps being served.
func TestRTMPLibraryPanicEndsOnlyThatConnection(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	_, sps, pps, _ := rtmpHEVCParams(t)
	env := newRTMPTestEnv(t, RTMPConfig{})
	testutil.FFmpegPublish(t, clip, "flv", env.url("live/steady"))
	counter := srtCount(t, env.waitStream(t, "live/steady"))

	u, _ := url.Parse(env.url("live/poison"))
	c := &gortmplib.Client{URL: u, Publish: true}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Initialize(ctx); err != nil {
		t.Fatalf("RTMP client: %v", err)
	}
	defer c.Close()
	track := &gortmplib.Track{Codec: &rtmpcodecs.H265{VPS: []byte{}, SPS: sps, PPS: pps}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{track}}
	w.Initialize() // the server may already be gone
	testutil.Eventually(t, 10*time.Second, "the panic is logged for that connection", func() bool {
		return env.logs.has("rtmp connection panic", "stream=live/poison")
	})
	c.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c.NetConn()); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the panicking connection was not closed")
		}
	}
	env.srv.mu.Lock()
	_, held := env.srv.paths["live/poison"]
	env.srv.mu.Unlock()
	if held {
		t.Fatal("live/poison still held after the panic")
	}

	before := counter.video.Load()
	testutil.Eventually(t, 10*time.Second, "the other publisher still flowing", func() bool {
		return counter.video.Load() >= before+30
	})
	testutil.FFmpegPublish(t, clip, "flv", env.url("live/next"))
	srtWaitKeyframe(t, env.waitStream(t, "live/next"))
}

// TestRTMPPublishIsAuthorizedWithTheStreamKeysCredentials: the Authorize
// hook gets the user and password of the stream key's query; a publisher
// without them (or with wrong ones) is refused and told why, the right
// ones publish.
func TestRTMPPublishIsAuthorizedWithTheStreamKeysCredentials(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newRTMPTestEnv(t, RTMPConfig{Authorize: func(r auth.Request) error {
		switch {
		case r.Action != auth.ActionPublish || r.Protocol != "rtmp" || !r.IP.IsLoopback():
			return fmt.Errorf("unexpected request %+v", r)
		case r.User == "":
			return auth.ErrNoCredentials
		case r.User != "cam" || r.Pass != "secret":
			return auth.ErrBadCredentials
		}
		return nil
	}})
	for _, key := range []string{"cam1", "cam1?user=cam&pass=wrong"} {
		p := testutil.FFmpegPublish(t, clip, "flv", "rtmp://"+env.addr()+"/live", "-rtmp_app", "live", "-rtmp_playpath", key)
		if err := p.Wait(t, 15*time.Second); err == nil {
			t.Fatalf("publisher with key %q was not refused", key)
		}
	}
	if _, ok := env.hub.Lookup("live/cam1"); ok {
		t.Fatal("a refused publisher's stream is in the hub")
	}
	if !env.logs.has("Unauthorized") {
		t.Errorf("no refusal logged:\n%s", env.logs)
	}
	testutil.FFmpegPublish(t, clip, "flv", "rtmp://"+env.addr()+"/live", "-rtmp_app", "live", "-rtmp_playpath", "cam1?user=cam&pass=secret")
	srtWaitKeyframe(t, env.waitStream(t, "live/cam1"))
}
