package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	srt "github.com/datarhei/gosrt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// srtLogs collects a test server's log lines.
type srtLogs struct{ testutil.LogBuffer }

// has tells whether one log line contains every part.
func (l *srtLogs) has(parts ...string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// count is the number of log lines containing s.
func (l *srtLogs) count(s string) int {
	return strings.Count(l.String(), s)
}

type srtTestEnv struct {
	srv  *SRTServer
	hub  *media.Hub
	logs *srtLogs
	port int
}

// newSRTTestEnv starts an SRT server on a loopback port with its own hub;
// its logs are printed when the test fails.
func newSRTTestEnv(t *testing.T, cfg SRTConfig) *srtTestEnv {
	t.Helper()
	logs := &srtLogs{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub := testutil.NewHub(t, media.HubConfig{}, log)
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	srv, err := NewSRTServer(cfg, hub, log)
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
	return &srtTestEnv{srv: srv, hub: hub, logs: logs, port: srv.Addr().(*net.UDPAddr).Port}
}

func (e *srtTestEnv) addr() string { return fmt.Sprintf("127.0.0.1:%d", e.port) }

// url is what ffmpeg publishes to (its latency option is in microseconds).
func (e *srtTestEnv) url(path string) string {
	return fmt.Sprintf("srt://%s?streamid=publish:%s&latency=120000", e.addr(), path)
}

// waitStream waits for path to be published and subscribes to it.
func (e *srtTestEnv) waitStream(t *testing.T, path string) *media.Reader {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, path+" published in the hub", func() bool {
		_, ok := e.hub.Lookup(path)
		return ok
	})
	r, err := e.hub.Subscribe(path, "test")
	if err != nil {
		t.Fatalf("subscribe %s: %v", path, err)
	}
	t.Cleanup(r.Close)
	return r
}

// srtNext reads the next unit or fails the test after d.
func srtNext(t *testing.T, r *media.Reader, d time.Duration) *media.Unit {
	t.Helper()
	select {
	case u, ok := <-r.C():
		if !ok {
			t.Fatalf("stream %s ended while reading", r.Stream().Path())
		}
		return u
	case <-time.After(d):
		t.Fatalf("no unit from %s within %v", r.Stream().Path(), d)
		return nil
	}
}

// srtWaitKeyframe reads until a decodable keyframe (IDR with SPS and PPS).
func srtWaitKeyframe(t *testing.T, r *media.Reader) *media.Unit {
	t.Helper()
	video := r.Description().VideoTrack()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		u := srtNext(t, r, time.Until(deadline))
		if u.Track == video && u.Key {
			if !srtHasNALU(u.Data, h264.NALUTypeSPS) || !srtHasNALU(u.Data, h264.NALUTypePPS) ||
				!srtHasNALU(u.Data, h264.NALUTypeIDR) {
				t.Fatalf("keyframe without SPS, PPS and IDR: %d NAL units", len(u.Data))
			}
			return u
		}
	}
	t.Fatal("no keyframe within 15s")
	return nil
}

func srtHasNALU(au [][]byte, typ h264.NALUType) bool {
	for _, n := range au {
		if len(n) > 0 && h264.NALUType(n[0]&0x1f) == typ {
			return true
		}
	}
	return false
}

// srtDial connects a gosrt caller with the given stream id.
func srtDial(addr, streamID, passphrase string) (srt.Conn, error) {
	conf := srt.DefaultConfig()
	conf.StreamId = streamID
	conf.Passphrase = passphrase
	conf.ConnectionTimeout = 5 * time.Second
	return srt.Dial("srt", addr, conf)
}

func TestSRTPublishH264AACReachesHubDecodable(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Audio: "aac"})
	env := newSRTTestEnv(t, SRTConfig{})
	testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/cam1"))
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
	if src := r.Stream().Info().Source; !strings.HasPrefix(src, "srt 127.0.0.1:") {
		t.Fatalf("stream source = %q, want the SRT peer", src)
	}

	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	first := srtWaitKeyframe(t, r)
	var (
		videoUnits, audioUnits, frames int
		firstPTS                       = first.PTS
		lastVideo, lastAudio           = first.PTS - 1, time.Duration(-1)
	)
	deadline := time.Now().Add(20 * time.Second)
	for u := first; ; u = srtNext(t, r, time.Until(deadline)) {
		switch u.Track {
		case 0:
			if u.PTS <= lastVideo || u.DTS > u.PTS {
				t.Fatalf("video unit %d: PTS %v DTS %v after PTS %v", videoUnits, u.PTS, u.DTS, lastVideo)
			}
			lastVideo = u.PTS
			videoUnits++
			fs, err := dec.Decode(u.Data, int64(u.PTS))
			if err != nil {
				t.Fatalf("decode video unit %d: %v", videoUnits, err)
			}
			for _, f := range fs {
				if f.Width != 320 || f.Height != 240 {
					t.Fatalf("decoded %dx%d, want 320x240", f.Width, f.Height)
				}
			}
			frames += len(fs)
		case 1:
			if u.PTS <= lastAudio || len(u.Data) == 0 || len(u.Data[0]) == 0 {
				t.Fatalf("audio unit %d: PTS %v after %v, %d AUs", audioUnits, u.PTS, lastAudio, len(u.Data))
			}
			lastAudio = u.PTS
			audioUnits++
		}
		if videoUnits >= 60 && frames >= 60 && audioUnits >= 10 {
			break
		}
	}
	// 90 kHz timestamps must come out in real time units: 30 fps.
	span := lastVideo - firstPTS
	want := time.Duration(videoUnits-1) * time.Second / 30
	if d := span - want; d < -want/20 || d > want/20 {
		t.Fatalf("%d video units span %v of PTS, want %v (30 fps)", videoUnits, span, want)
	}
}

func TestSRTPublishH264OpusWithAccessControlStreamID(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Audio: "opus"})
	env := newSRTTestEnv(t, SRTConfig{})
	// Named in SRT access control syntax, as OBS and srt-live-transmit can.
	testutil.FFmpegPublish(t, clip, "mpegts", fmt.Sprintf("srt://%s?latency=120000", env.addr()),
		"-srt_streamid", "#!::r=live/opus,m=publish")
	r := env.waitStream(t, "live/opus")
	ai := r.Description().AudioTrack()
	if ai < 0 {
		t.Fatalf("tracks = %v, want an Opus track", r.Stream().Info().Tracks)
	}
	if a := r.Description().Tracks[ai]; a.Codec != media.CodecOpus || a.Channels != 2 {
		t.Fatalf("audio track = %s, want Opus 2ch", a)
	}
	opus := 0
	deadline := time.Now().Add(15 * time.Second)
	for opus < 10 {
		u := srtNext(t, r, time.Until(deadline))
		if u.Track == ai {
			if len(u.Data) == 0 || len(u.Data[0]) == 0 {
				t.Fatal("empty Opus unit")
			}
			opus++
		}
	}
}

func TestSRTPublishRefusesUnsupportedCodecsNamingThem(t *testing.T) {
	t.Parallel()
	env := newSRTTestEnv(t, SRTConfig{})
	hevc := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 3, VideoCodec: "libx265"})
	mpeg2 := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 3, VideoCodec: "mpeg2video"})
	h264Clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})

	testutil.FFmpegPublish(t, hevc, "mpegts", env.url("live/hevc"))
	testutil.FFmpegPublish(t, mpeg2, "mpegts", env.url("live/mpeg2"))
	// H.264 with MPEG-1 Layer II audio: the audio codec is refused too.
	testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-re", "-stream_loop", "-1", "-i", h264Clip,
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-map", "0:v", "-map", "1:a",
		"-c:v", "copy", "-c:a", "mp2", "-f", "mpegts", env.url("live/mp2"))

	for _, c := range []struct{ path, msg string }{
		{"live/hevc", "srt publish live/hevc: codec H265 not supported: Gradient carries H.264 video with AAC or Opus audio"},
		{"live/mpeg2", "srt publish live/mpeg2: codec MPEG-1/2 Video not supported"},
		{"live/mp2", "srt publish live/mp2: codec MPEG-1/2 Audio not supported"},
	} {
		testutil.Eventually(t, 20*time.Second, "refusal naming the codec for "+c.path, func() bool {
			return env.logs.has("srt publish refused", c.msg)
		})
		if _, ok := env.hub.Lookup(c.path); ok {
			t.Fatalf("%s was published despite its codec", c.path)
		}
	}

	testutil.FFmpegPublish(t, h264Clip, "mpegts", env.url("live/ok"))
	srtWaitKeyframe(t, env.waitStream(t, "live/ok"))
}

// srtCounter drains a reader in the background and counts its video units.
type srtCounter struct {
	video atomic.Int64
	done  chan struct{}
	err   error
}

func srtCount(t *testing.T, r *media.Reader) *srtCounter {
	c := &srtCounter{done: make(chan struct{})}
	video := r.Description().VideoTrack()
	go func() {
		defer close(c.done)
		for {
			u, err := r.Read()
			if err != nil {
				c.err = err
				return
			}
			if u.Track == video {
				c.video.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		r.Close()
		<-c.done
	})
	return c
}

func TestSRTSecondPublisherRefusedWhileFirstKeepsFlowing(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newSRTTestEnv(t, SRTConfig{})
	testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/cam1"))
	r := env.waitStream(t, "live/cam1")
	source := r.Stream().Info().Source
	counter := srtCount(t, r)

	second := testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/cam1"))
	if err := second.Wait(t, 15*time.Second); err == nil {
		t.Fatal("second ffmpeg publisher exited cleanly, want a refused connection")
	}
	testutil.Eventually(t, 5*time.Second, "rejection log for the second publisher", func() bool {
		return env.logs.has("srt publish rejected", "live/cam1 is already being published", "code=1407")
	})

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

// srtHandshake builds an SRT handshake control packet (destination socket
// 0) carrying cif as its control information field.
func srtHandshake(cif []byte) []byte {
	b := make([]byte, 16, 16+len(cif))
	b[0] = 0x80 // control packet, type 0 (handshake)
	binary.BigEndian.PutUint32(b[8:], 1234)
	return append(b, cif...)
}

// srtConclusionCIF is a 48-byte HSv5 conclusion CIF with the extension
// flags set, plus extra.
func srtConclusionCIF(extra ...byte) []byte {
	c := make([]byte, 48)
	binary.BigEndian.PutUint32(c[0:], 5)           // version
	binary.BigEndian.PutUint16(c[6:], 0x0005)      // extension field: HSREQ | CONFIG
	binary.BigEndian.PutUint32(c[12:], 1500)       // MTU
	binary.BigEndian.PutUint32(c[16:], 8192)       // flow window
	binary.BigEndian.PutUint32(c[20:], 0xFFFFFFFF) // conclusion
	binary.BigEndian.PutUint32(c[24:], 0x1234)     // socket id
	binary.BigEndian.PutUint32(c[28:], 0xdeadbeef) // cookie
	return append(c, extra...)
}

func TestSRTListenerSurvivesGarbageDatagramsAndMalformedHandshakes(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newSRTTestEnv(t, SRTConfig{})

	c, err := net.Dial("udp", env.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rnd := rand.New(rand.NewSource(1))
	send := func(b []byte) {
		if _, err := c.Write(b); err != nil {
			t.Fatalf("send datagram: %v", err)
		}
	}
	for i := 0; i < 300; i++ {
		b := make([]byte, rnd.Intn(1500))
		rnd.Read(b)
		if i%3 == 0 && len(b) > 16 {
			// Look like a handshake to socket 0 so that it reaches the parser.
			copy(b, srtHandshake(nil))
		}
		send(b)
	}
	induction := make([]byte, 48)
	binary.BigEndian.PutUint32(induction[0:], 4)
	binary.BigEndian.PutUint32(induction[20:], 1)
	malformed := [][]byte{
		{},
		srtHandshake(nil),
		srtHandshake(make([]byte, 47)),
		srtHandshake(induction),
		srtHandshake(srtConclusionCIF(0x00)), // 1 byte of extension: truncated header
		srtHandshake(srtConclusionCIF(0x00, 0x01, 0x00, 0x03)),                                        // HSREQ claiming 12 bytes, none there
		srtHandshake(srtConclusionCIF(0x00, 0x05, 0xff, 0xff, 1, 2)),                                  // stream id claiming 256 KB
		srtHandshake(srtConclusionCIF(0x00, 0x01, 0x00, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)), // bad cookie
	}
	// The garbage may have filled the socket buffer: resend until the
	// truncated handshake is seen.
	testutil.Eventually(t, 10*time.Second, "the truncated handshake reached the server and was ignored", func() bool {
		for _, b := range malformed {
			send(b)
		}
		return env.logs.has("srt handshake ignored", "malformed SRT handshake")
	})

	testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/after-garbage"))
	srtWaitKeyframe(t, env.waitStream(t, "live/after-garbage"))
}

func TestSRTRejectsInvalidStreamIDsAtHandshake(t *testing.T) {
	t.Parallel()
	env := newSRTTestEnv(t, SRTConfig{})
	cases := []struct{ sid, reason string }{
		{"publish:live/../x", "invalid stream name"},
		{"publish:a@b", "renditions are made inside the network"},
		{"publish:live/cam\x01", "control character"},
		{"publish:live/cam\n", "control character"},
		{"publish:", "invalid stream name"},
		{"publish:/live", "invalid stream name"},
		{"live cam", "invalid stream name"},
		{"", "no stream id"},
		{"read:live/cam1", "SRT read is not supported"},
		{"#!::r=live/cam1", "SRT read is not supported"},
		{"#!::r=live/cam1,m=bidirectional", "only m=publish"},
		{"#!::m=publish", "invalid stream name"},
		{"#!::r=live/cam1,m=publish,t=file", "only t=stream"},
	}
	for _, c := range cases {
		conn, err := srtDial(env.addr(), c.sid, "")
		if err == nil {
			conn.Close()
			t.Fatalf("stream id %q accepted", c.sid)
		}
		if !strings.Contains(err.Error(), "rejected") {
			t.Fatalf("stream id %q: %v, want a handshake rejection", c.sid, err)
		}
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("rejection log for %q", c.sid), func() bool {
			return env.logs.has("srt publish rejected", c.reason)
		})
	}
	if n := env.logs.count("srt publish rejected"); n != len(cases) {
		t.Fatalf("%d rejection log lines for %d refused stream ids", n, len(cases))
	}

	// The accepted forms.
	for _, c := range []struct{ sid, path string }{
		{"#!::r=live/acl,m=publish,u=alice", "live/acl"},
		{"live/bare", "live/bare"},
		{"publish:live/prefixed", "live/prefixed"},
	} {
		conn, err := srtDial(env.addr(), c.sid, "")
		if err != nil {
			t.Fatalf("stream id %q refused: %v", c.sid, err)
		}
		testutil.Eventually(t, 5*time.Second, "connect log for "+c.path, func() bool {
			return env.logs.has("srt publisher connected", "stream="+c.path)
		})
		conn.Close()
	}
}

func TestSRTPassphraseRequiredAndChecked(t *testing.T) {
	t.Parallel()
	const secret = "gradient-secret-1"
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newSRTTestEnv(t, SRTConfig{Passphrase: secret})

	for _, c := range []struct{ pass, reason string }{
		{"", "passphrase required"},
		{"not-the-secret", "wrong passphrase"},
	} {
		conn, err := srtDial(env.addr(), "publish:live/enc", c.pass)
		if err == nil {
			conn.Close()
			t.Fatalf("passphrase %q accepted", c.pass)
		}
		testutil.Eventually(t, 5*time.Second, "rejection log: "+c.reason, func() bool {
			return env.logs.has("srt publish rejected", c.reason)
		})
	}

	testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/enc")+"&passphrase="+secret)
	srtWaitKeyframe(t, env.waitStream(t, "live/enc"))
}

func TestSRTPublisherDisconnectEndsStreamAndFreesPath(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newSRTTestEnv(t, SRTConfig{})
	p := testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/cam1"))
	r := env.waitStream(t, "live/cam1")
	srtWaitKeyframe(t, r)

	if err := p.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	// Faster than SRT's 5 s peer idle timeout and the 10 s read timeout:
	// the publisher's shutdown itself ends the stream.
	deadline := time.After(4 * time.Second)
	for ended := false; !ended; {
		select {
		case _, ok := <-r.C():
			ended = !ok
		case <-deadline:
			t.Fatal("stream did not end within 4s of the publisher leaving")
		}
	}
	if _, err := r.Read(); !errors.Is(err, media.ErrStreamEnded) {
		t.Fatalf("Read after the publisher left = %v, want ErrStreamEnded", err)
	}
	testutil.Eventually(t, 5*time.Second, "publisher-left log", func() bool {
		return env.logs.has("srt publisher left", "stream=live/cam1")
	})

	testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/cam1"))
	srtWaitKeyframe(t, env.waitStream(t, "live/cam1"))
}

// srtTSFile remuxes the first seconds of clip into an MPEG-TS file.
func srtTSFile(t *testing.T, clip string, seconds int) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clip.ts")
	p := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", clip, "-t", fmt.Sprint(seconds),
		"-c", "copy", "-f", "mpegts", out)
	if err := p.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("ffmpeg remux: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSRTSilentPublisherDroppedAfterReadTimeout(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Audio: "aac"})
	ts := srtTSFile(t, clip, 2)
	env := newSRTTestEnv(t, SRTConfig{ReadTimeout: time.Second})

	conn, err := srtDial(env.addr(), "publish:live/quiet", "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(ts) > 0 {
		<-tick.C
		for i := 0; i < 8 && len(ts) > 0; i++ {
			n := min(len(ts), 1316)
			if _, err := conn.Write(ts[:n]); err != nil {
				t.Fatalf("write TS: %v", err)
			}
			ts = ts[n:]
		}
	}
	sent := time.Now()
	testutil.Eventually(t, 10*time.Second, "live/quiet published", func() bool {
		return env.logs.has("stream published", "stream=live/quiet")
	})
	// The connection stays open but silent: the read timeout, not SRT's
	// 5 s peer idle timeout, must end the stream.
	testutil.Eventually(t, 10*time.Second, "silent publisher dropped", func() bool {
		return env.logs.has("srt publisher dropped", "stream=live/quiet", "no data for 1s")
	})
	if el := time.Since(sent); el > 4*time.Second {
		t.Fatalf("silent publisher dropped after %v, want about 1s", el)
	}
	if _, ok := env.hub.Lookup("live/quiet"); ok {
		t.Fatal("stream of a dropped publisher still in the hub")
	}
}

func TestSRTPublisherWithoutVideoDroppedAfterPublishTimeout(t *testing.T) {
	t.Parallel()
	env := newSRTTestEnv(t, SRTConfig{PublishTimeout: 500 * time.Millisecond})
	conn, err := srtDial(env.addr(), "publish:live/idle", "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testutil.Eventually(t, 5*time.Second, "publisher without an IDR dropped", func() bool {
		return env.logs.has("srt publisher dropped", "stream=live/idle", "no H.264 IDR with SPS/PPS within 500ms")
	})
	// The path is free again.
	conn2, err := srtDial(env.addr(), "publish:live/idle", "")
	if err != nil {
		t.Fatalf("path not released after the drop: %v", err)
	}
	conn2.Close()
}

func TestSRTServerCloseEndsStreamsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30})
	env := newSRTTestEnv(t, SRTConfig{})
	testutil.FFmpegPublish(t, clip, "mpegts", env.url("live/cam1"))
	r := env.waitStream(t, "live/cam1")
	srtWaitKeyframe(t, r)

	done := make(chan error, 1)
	go func() { done <- env.srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}
	for {
		if _, err := r.Read(); err != nil {
			if !errors.Is(err, media.ErrStreamEnded) {
				t.Fatalf("Read after Close = %v", err)
			}
			break
		}
	}
	if _, ok := env.hub.Lookup("live/cam1"); ok {
		t.Fatal("stream still published after Close")
	}
	if err := env.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := env.srv.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestParseSRTStreamID(t *testing.T) {
	for _, c := range []struct {
		sid, path string
		code      srt.RejectionReason
	}{
		{"publish:live/cam1", "live/cam1", 0},
		{"live/cam1", "live/cam1", 0},
		{"#!::r=live/cam1,m=publish", "live/cam1", 0},
		{"#!::m=publish,r=live/cam1,u=bob,s=abc,t=stream", "live/cam1", 0},
		{"read:live/cam1", "", srt.REJX_BAD_MODE},
		{"#!::r=live/cam1", "", srt.REJX_BAD_MODE},
		{"#!::r=live/cam1,m=request", "", srt.REJX_BAD_MODE},
		{"#!::r=live/cam1,m=publish,t=auth", "", srt.REJX_NOTSUP_MEDIA},
		{"#!::r=live/cam1,r=x,m=publish", "", srt.REJX_BAD_REQUEST},
		{"#!::r", "", srt.REJX_BAD_REQUEST},
		{"", "", srt.REJX_BAD_REQUEST},
		{"publish:live/cam1@360p", "", srt.REJX_BAD_REQUEST},
		{"publish:live/../etc", "", srt.REJX_BAD_REQUEST},
		{"publish:live/cam1:user:pass", "", srt.REJX_BAD_REQUEST},
	} {
		path, rej := parseSRTStreamID(c.sid)
		switch {
		case c.code == 0 && (rej != nil || path != c.path):
			t.Errorf("parseSRTStreamID(%q) = %q, %v; want %q", c.sid, path, rej, c.path)
		case c.code != 0 && (rej == nil || rej.code != c.code):
			t.Errorf("parseSRTStreamID(%q) = %q, %+v; want rejection %d", c.sid, path, rej, c.code)
		}
	}
}

func FuzzParseSRTStreamID(f *testing.F) {
	for _, s := range []string{"publish:live/cam1", "#!::r=live/cam1,m=publish", "read:x", "live/a@b", "#!::,,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sid string) {
		path, rej := parseSRTStreamID(sid)
		if rej == nil {
			if err := media.ValidateName(path); err != nil {
				t.Fatalf("accepted %q as path %q: %v", sid, path, err)
			}
		} else if rej.code == 0 || rej.reason == "" {
			t.Fatalf("rejection without code or reason: %+v", rej)
		}
	})
}

// srtTestSPS is a valid 1920x1080 baseline SPS.
var srtTestSPS = []byte{
	0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02,
	0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
	0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20,
}

func TestTSDemuxerTimestampsContinueAcrossPTSWrap(t *testing.T) {
	video := &mpegts.Track{Codec: &codecs.H264{}}
	audio := &mpegts.Track{Codec: &codecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: 2, ChannelCount: 2}}}
	var buf bytes.Buffer
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{video, audio}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	const start = int64(1<<33 - 90000) // one second before the 33-bit wrap
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	aacAU := []byte{0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c}
	// Audio before the first IDR and a non-IDR frame are not published.
	if err := w.WriteMPEG4Audio(audio, start-3000, [][]byte{aacAU}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteH264(video, start-3000, start-3000, [][]byte{{0x41, 0x9a, 0x01}}); err != nil {
		t.Fatal(err)
	}
	const frames = 60
	for i := int64(0); i < frames; i++ {
		ts := (start + i*3000) & (1<<33 - 1)
		au := [][]byte{{0x41, 0x9a, byte(i)}}
		if i%30 == 0 {
			au = [][]byte{srtTestSPS, pps, {0x65, 0x88, byte(i)}}
		}
		if err := w.WriteH264(video, ts, ts, au); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteMPEG4Audio(audio, ts, [][]byte{aacAU}); err != nil {
			t.Fatal(err)
		}
	}

	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	var r *media.Reader
	d, err := newTSDemuxer(&buf, func(desc media.Description) (*media.Publisher, error) {
		pub, err := hub.Publish("live/wrap", desc, "test")
		if err == nil {
			r, err = hub.Subscribe("live/wrap", "test")
		}
		return pub, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.run(); !errors.Is(err, io.EOF) {
		t.Fatalf("run = %v, want EOF", err)
	}
	if r == nil {
		t.Fatal("stream never published")
	}
	d.publisher().Close()

	var videoPTS, audioPTS []time.Duration
	for {
		u, err := r.Read()
		if err != nil {
			break
		}
		if u.Track == 0 {
			if len(videoPTS) == 0 && (!u.Key || !srtHasNALU(u.Data, h264.NALUTypeIDR)) {
				t.Fatal("first unit is not the IDR")
			}
			videoPTS = append(videoPTS, u.PTS)
		} else {
			audioPTS = append(audioPTS, u.PTS)
		}
	}
	if len(videoPTS) < frames-1 {
		t.Fatalf("%d video units, want %d", len(videoPTS), frames)
	}
	for i, p := range videoPTS {
		if want := time.Duration(i) * time.Second / 30; p != want {
			t.Fatalf("video unit %d PTS %v, want %v (continuous across the wrap)", i, p, want)
		}
	}
	if len(audioPTS) == 0 || audioPTS[0] < 0 {
		t.Fatalf("audio PTS %v: want units from the first IDR on only", audioPTS)
	}
}

func ExampleNewSRTServer() {
	hub, err := media.NewHub(media.DefaultHubConfig(), slog.Default())
	if err != nil {
		panic(err)
	}
	cfg := DefaultSRTConfig()
	cfg.Latency = 200 * time.Millisecond
	srv, err := NewSRTServer(cfg, hub, slog.Default())
	if err != nil {
		panic(err)
	}
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer srv.Close()
	// A broadcaster then publishes live/cam1 with:
	//   ffmpeg -re -i in.mp4 -c copy -f mpegts 'srt://node:8890?streamid=publish:live/cam1'
}
