package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	rtmpcodecs "github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/connlimit"
	"github.com/gradient-cdn/gradient/media"
)

// rtmpSupported is appended to every codec refusal so that a broadcaster
// knows what to send instead.
const rtmpSupported = "Gradient takes H.264 video with AAC audio over RTMP"

// rtmpCodecError refuses a stream that carries a codec the hub does not.
type rtmpCodecError struct{ codec string }

func (e *rtmpCodecError) Error() string {
	return "codec " + e.codec + " not supported: " + rtmpSupported
}

// RTMPServer accepts RTMP (and, with a certificate, RTMPS) publishers
// carrying H.264 video with optional AAC audio, as OBS, ffmpeg and most
// hardware encoders send it, and publishes their streams into the hub.
//
// The stream path is the RTMP application followed by the stream key: OBS
// "Custom" with server rtmp://host:1935/live and key cam1, and ffmpeg
// publishing to rtmp://host:1935/live/cam1, both publish live/cam1. A
// query after the key ("cam1?token=…") is not part of the name.
//
// Playing over RTMP is not offered, and invalid paths, rendition paths
// ("live/cam1@360p": renditions are made inside the network) and paths
// already being published are refused before the publisher is told to
// start. Codecs other than H.264 and AAC (enhanced-RTMP H.265, AV1, VP9,
// Opus; Speex, MP3, G.711 …) are refused with a log line naming the codec.
// A stream appears in the hub at its first IDR and ends when the publisher
// leaves or stays silent for ReadTimeout.
type RTMPServer struct {
	cfg RTMPConfig
	hub *media.Hub
	log *slog.Logger

	mu      sync.Mutex
	ln      net.Listener
	paths   map[string]struct{} // paths held by a publisher, from its publish command on
	conns   map[net.Conn]struct{}
	started bool
	closed  bool
	wg      sync.WaitGroup // the accept loop and one per connection
	// rejects lets one "publish rejected" line a minute through per
	// client address, code and reason (SRT: and stream id).
	rejects *connlimit.Every
}

// NewRTMPServer returns a server for hub; Start binds it.
func NewRTMPServer(cfg RTMPConfig, hub *media.Hub, log *slog.Logger) (*RTMPServer, error) {
	cfg = cfg.withDefaults()
	if hub == nil {
		return nil, errors.New("rtmp server: nil hub")
	}
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rtmp server: %w", err)
	}
	return &RTMPServer{
		cfg:     cfg,
		hub:     hub,
		log:     log.With("component", "rtmp"),
		paths:   map[string]struct{}{},
		rejects: connlimit.NewEvery(time.Minute),
		conns:   map[net.Conn]struct{}{},
	}, nil
}

// Start loads the TLS certificate, if any, binds the TCP port and starts
// accepting publishers.
func (s *RTMPServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("rtmp server: closed")
	}
	if s.started {
		return errors.New("rtmp server: already started")
	}
	var tlsConf *tls.Config
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("rtmp server: tls_cert/tls_key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rtmp server: %w", err)
	}
	scheme := "rtmp"
	if tlsConf != nil {
		ln, scheme = tls.NewListener(ln, tlsConf), "rtmps"
	}
	s.ln, s.started = ln, true
	s.wg.Add(1)
	go s.acceptLoop(ln, scheme)
	s.log.Info("rtmp listening", "addr", ln.Addr().String(), "tls", tlsConf != nil)
	return nil
}

// Addr is the bound TCP address, nil before Start.
func (s *RTMPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, disconnects every publisher (their streams end)
// and waits for the server's goroutines. It is idempotent.
func (s *RTMPServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln := s.ln
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	s.wg.Wait()
	return nil
}

func (s *RTMPServer) acceptLoop(ln net.Listener, scheme string) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: wait, do not spin.
				time.Sleep(50 * time.Millisecond)
				continue
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if !closed {
				s.log.Error("rtmp listener failed", "err", err)
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(nc, scheme)
	}
}

// serve runs one connection. Whatever happens in it, including a panic of
// the RTMP library on hostile input, ends this connection only.
func (s *RTMPServer) serve(nc net.Conn, scheme string) {
	c := &rtmpConn{s: s, nc: nc, scheme: scheme, remote: nc.RemoteAddr().String(), accepted: time.Now()}
	c.log = s.log.With("remote", c.remote)
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("rtmp connection panic", "stream", c.path, "panic", r, "stack", string(debug.Stack()))
		}
		nc.Close()
		if c.pub != nil {
			c.pub.Close()
		}
		s.mu.Lock()
		delete(s.conns, nc)
		if c.claimed {
			delete(s.paths, c.path)
		}
		s.mu.Unlock()
		s.wg.Done()
	}()
	err := c.run()
	c.logEnd(err)
}

// claim reserves path for a publisher: one publisher per path, whatever
// protocol holds it.
func (s *RTMPServer) claim(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server closing")
	}
	if _, ok := s.paths[path]; ok {
		return fmt.Errorf("%s is already being published", path)
	}
	if _, ok := s.hub.Lookup(path); ok {
		return fmt.Errorf("%s is already being published", path)
	}
	s.paths[path] = struct{}{}
	return nil
}

// rtmpMaxProbeBytes bounds what a publisher may send before its tracks
// are known: 2 s of a 100 Mbit/s stream fit.
const rtmpMaxProbeBytes = 64 << 20

// rtmpProbeConn fails reads beyond limit bytes received until done.
type rtmpProbeConn struct {
	*gortmplib.ServerConn
	limit uint64
	done  bool
}

func (p *rtmpProbeConn) Read() (message.Message, error) {
	if !p.done && p.BytesReceived() > p.limit {
		return nil, fmt.Errorf("more than %d MiB before the tracks were known", rtmpMaxProbeBytes>>20)
	}
	return p.ServerConn.Read()
}

// rtmpRefusal is a publish refused before it started: the publisher gets
// an onStatus error with code, and reason is logged.
type rtmpRefusal struct {
	code   string
	reason string
}

func (r *rtmpRefusal) Error() string { return r.reason }

// rtmpStreamPath returns the stream path of a publish URL (the connect
// command's tcUrl joined with the stream key), or why it is refused.
func rtmpStreamPath(u *url.URL) (string, *rtmpRefusal) {
	if u == nil {
		return "", &rtmpRefusal{"NetStream.Publish.BadName", "no stream name"}
	}
	// The query after the key (credentials, tokens) is not the name.
	path := strings.Trim(u.Path, "/")
	if path == "" {
		return "", &rtmpRefusal{"NetStream.Publish.BadName",
			"no stream name: publish to rtmp://host/<app>/<key>, e.g. rtmp://host:1935/live/cam1"}
	}
	_, rendition, err := media.ParsePath(path)
	if err != nil {
		return "", &rtmpRefusal{"NetStream.Publish.BadName", err.Error()}
	}
	if rendition != "" {
		return "", &rtmpRefusal{"NetStream.Publish.BadName", fmt.Sprintf(
			"%q names a rendition: renditions are made inside the network, publish the bare stream name", path)}
	}
	return path, nil
}

// rtmpConn is one TCP connection, from the handshake to the end of its
// stream.
type rtmpConn struct {
	s        *RTMPServer
	nc       net.Conn
	scheme   string
	remote   string
	accepted time.Time
	log      *slog.Logger

	path    string
	claimed bool
	sc      *gortmplib.ServerConn

	video, audio *media.Track
	audioIdx     int
	base         time.Duration // DTS of the first IDR
	pub          *media.Publisher
	startErr     error // why the hub refused the stream, if it did
}

// authorize asks the Authorize hook whether this publisher may publish
// path, with the credentials of its stream key's query.
func (c *rtmpConn) authorize(path string) *rtmpRefusal {
	if c.s.cfg.Authorize == nil {
		return nil
	}
	q := c.sc.URL.Query()
	ar := auth.Request{Action: auth.ActionPublish, Path: path, Protocol: "rtmp",
		User: q.Get("user"), Pass: q.Get("pass"), Token: q.Get("token")}
	if a, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		ar.IP = a.AddrPort().Addr().Unmap()
	}
	if err := c.s.cfg.Authorize(ar); err != nil {
		return &rtmpRefusal{"NetStream.Publish.Unauthorized", err.Error()}
	}
	return nil
}

func (c *rtmpConn) run() error {
	cfg := c.s.cfg
	// The whole way to the first IDR is bounded by one deadline.
	publishBy := c.accepted.Add(cfg.PublishTimeout)
	c.nc.SetDeadline(publishBy)

	c.sc = &gortmplib.ServerConn{RW: c.nc}
	if err := c.sc.Initialize(); err != nil {
		return fmt.Errorf("rtmp handshake: %w", err)
	}
	if err := c.sc.AcceptConn(); err != nil {
		return fmt.Errorf("rtmp connect: %w", err)
	}
	if !c.sc.Publish {
		return c.refuse(&rtmpRefusal{"NetStream.Play.Failed",
			"RTMP playback is not offered: watch over WebRTC, HLS or RTSP"})
	}
	path, rej := rtmpStreamPath(c.sc.URL)
	if rej != nil {
		return c.refuse(rej)
	}
	c.path = path
	c.log = c.log.With("stream", path)
	if rej := c.authorize(path); rej != nil {
		return c.refuse(rej)
	}
	if err := c.s.claim(path); err != nil {
		return c.refuse(&rtmpRefusal{"NetStream.Publish.BadName", err.Error()})
	}
	c.claimed = true
	c.log.Info("rtmp publisher connected", "tls", c.scheme == "rtmps")

	// Initialize reads ahead (about 2 s of media timestamps) to learn the
	// tracks and keeps what it read to replay it to Read. Timestamps are
	// the publisher's word: the probe is bounded in bytes so that one that
	// never advances them cannot make the node hold gigabytes.
	if err := c.sc.AcceptAction(); err != nil {
		return fmt.Errorf("rtmp publish %s: %w", path, err)
	}
	probe := &rtmpProbeConn{ServerConn: c.sc, limit: c.sc.BytesReceived() + rtmpMaxProbeBytes}
	r := &gortmplib.Reader{Conn: probe}
	err := r.Initialize()
	probe.done = true
	if err != nil {
		if cerr := rtmpCodecFromError(err); cerr != nil {
			return cerr
		}
		return fmt.Errorf("rtmp publish %s: read tracks: %w", path, err)
	}
	if err := c.setupTracks(r); err != nil {
		return err
	}

	for {
		deadline := time.Now().Add(cfg.ReadTimeout)
		if c.pub == nil && publishBy.Before(deadline) {
			deadline = publishBy
		}
		// Write too: reading answers pings and acknowledges the bytes
		// received, and those writes must not hit the publish deadline.
		c.nc.SetDeadline(deadline)
		if err := r.Read(); err != nil {
			if cerr := rtmpCodecFromError(err); cerr != nil {
				return cerr
			}
			return err
		}
	}
}

// refuse tells the publisher why it cannot publish, in the onStatus
// error encoders print ("Server error: …"), and ends the connection.
func (c *rtmpConn) refuse(r *rtmpRefusal) error {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.sc.Write(&message.CommandAMF0{
		ChunkStreamID:   5,
		MessageStreamID: 0x1000000,
		Name:            "onStatus",
		Arguments: []any{
			nil,
			amf0.Object{
				{Key: "level", Value: "error"},
				{Key: "code", Value: r.code},
				{Key: "description", Value: r.reason},
			},
		},
	})
	return r
}

// setupTracks checks the probed tracks, one H.264 and at most one AAC, and
// routes their data.
func (c *rtmpConn) setupTracks(r *gortmplib.Reader) error {
	var videoTrack, audioTrack *gortmplib.Track
	for _, t := range r.Tracks() {
		switch codec := t.Codec.(type) {
		case *rtmpcodecs.H264:
			if videoTrack != nil {
				return &rtmpCodecError{"H264 (a second video track)"}
			}
			videoTrack = t
			c.video = &media.Track{Codec: media.CodecH264,
				SPS: append([]byte(nil), codec.SPS...), PPS: append([]byte(nil), codec.PPS...)}
		case *rtmpcodecs.MPEG4Audio:
			if audioTrack != nil {
				return &rtmpCodecError{"AAC (a second audio track)"}
			}
			if codec.Config == nil {
				return fmt.Errorf("rtmp publish %s: AAC without AudioSpecificConfig", c.path)
			}
			audioTrack = t
			conf := *codec.Config
			c.audio = &media.Track{Codec: media.CodecAAC, AAC: &conf, SampleRate: conf.SampleRate,
				Channels: tsAACChannels(&conf)}
		default:
			return &rtmpCodecError{rtmpCodecName(t.Codec)}
		}
	}
	if videoTrack == nil {
		return &rtmpCodecError{"none (no H264 video track)"}
	}
	r.OnDataH264(videoTrack, c.onH264)
	if audioTrack != nil {
		c.audioIdx = 1
		r.OnDataMPEG4Audio(audioTrack, c.onAAC)
	}
	return nil
}

func (c *rtmpConn) onH264(pts, dts time.Duration, au [][]byte) {
	idr, vcl := false, false
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch typ := h264.NALUType(n[0] & 0x1f); typ {
		case h264.NALUTypeIDR:
			idr, vcl = true, true
		case h264.NALUTypeSPS:
			c.video.SPS = append([]byte(nil), n...)
		case h264.NALUTypePPS:
			c.video.PPS = append([]byte(nil), n...)
		default:
			if typ >= h264.NALUTypeNonIDR && typ < h264.NALUTypeIDR {
				vcl = true
			}
		}
	}
	if !vcl {
		// An AVC sequence header: its SPS/PPS go in front of the next IDR.
		return
	}
	if c.pub == nil {
		if !idr {
			return // wait for a decodable start
		}
		if err := c.start(dts); err != nil {
			// Ends the connection: the read loop fails on the closed socket.
			c.startErr = err
			c.nc.Close()
			return
		}
	}
	if idr {
		// Make every keyframe decodable on its own, as readers start there.
		au = media.WithParameterSets(au, c.video.SPS, c.video.PPS)
	}
	c.pub.Write(&media.Unit{
		Track:    0,
		PTS:      pts - c.base,
		DTS:      dts - c.base,
		Data:     au,
		Key:      idr,
		Received: time.Now(),
	})
}

func (c *rtmpConn) onAAC(pts time.Duration, au []byte) {
	if c.pub == nil || pts < c.base || len(au) == 0 {
		return // audio before the first IDR has nothing to play with
	}
	t := pts - c.base
	c.pub.Write(&media.Unit{Track: c.audioIdx, PTS: t, DTS: t, Data: [][]byte{au}, Key: true, Received: time.Now()})
}

// start publishes the stream at the first IDR.
func (c *rtmpConn) start(dts time.Duration) error {
	desc := media.Description{Tracks: []*media.Track{{Codec: media.CodecH264, SPS: c.video.SPS, PPS: c.video.PPS}}}
	if c.audio != nil {
		desc.Tracks = append(desc.Tracks, c.audio)
	}
	pub, err := c.s.hub.Publish(c.path, desc, c.scheme+" "+c.remote)
	if err != nil {
		return fmt.Errorf("rtmp publish %s: %w", c.path, err)
	}
	c.pub, c.base = pub, dts
	return nil
}

func (c *rtmpConn) logEnd(err error) {
	var (
		codecErr *rtmpCodecError
		rej      *rtmpRefusal
		ne       net.Error
	)
	if c.startErr != nil {
		err = c.startErr
	}
	bytesIn := uint64(0)
	if c.sc != nil {
		bytesIn = rtmpBytesIn(c.sc)
	}
	switch {
	case errors.As(err, &codecErr):
		c.log.Warn("rtmp publish refused", "codec", codecErr.codec, "err", err)
	case errors.As(err, &rej):
		// Once a minute per client, code and reason: a publisher retrying
		// with a wrong key must not flood the log.
		if c.s.rejects.Allow(fmt.Sprintf("%s %s %s", hostOf(c.remote), rej.code, rej.reason)) {
			c.log.Info("rtmp publish rejected", "reason", rej.reason, "code", rej.code)
		}
	case c.path == "" && errors.As(err, &ne) && ne.Timeout():
		c.log.Info("rtmp connection dropped",
			"reason", fmt.Sprintf("no publish command within %v", c.s.cfg.PublishTimeout), "bytes_in", bytesIn)
	case c.pub == nil && errors.As(err, &ne) && ne.Timeout():
		c.log.Info("rtmp publisher dropped",
			"reason", fmt.Sprintf("no H.264 IDR within %v", c.s.cfg.PublishTimeout), "bytes_in", bytesIn)
	case errors.As(err, &ne) && ne.Timeout():
		c.log.Info("rtmp publisher dropped", "reason", fmt.Sprintf("no data for %v", c.s.cfg.ReadTimeout),
			"bytes_in", bytesIn, "duration", time.Since(c.accepted).Round(time.Millisecond))
	case c.path == "":
		// Port scanners, health checks, garbage: not worth a warning.
		c.log.Debug("rtmp connection closed before publishing", "err", err)
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		c.log.Info("rtmp publisher left", "bytes_in", bytesIn,
			"duration", time.Since(c.accepted).Round(time.Millisecond))
	default:
		c.log.Warn("rtmp publish failed", "err", err, "bytes_in", bytesIn)
	}
}

// rtmpBytesIn reads the library's byte counter, which is nil when the
// handshake never began.
func rtmpBytesIn(sc *gortmplib.ServerConn) (n uint64) {
	defer func() { _ = recover() }()
	return sc.BytesReceived()
}

// The RTMP library refuses the codecs it does not know while decoding a
// message, with these errors; they are turned into refusals naming the
// codec.
var (
	rtmpUnsupportedCodecRE  = regexp.MustCompile(`unsupported (audio|video) codec: (\d+)`)
	rtmpUnsupportedFourCCRE = regexp.MustCompile(`unsupported fourCC: (\d+)`)
)

// rtmpCodecFromError returns the codec refusal an error of the RTMP
// library stands for, or nil.
func rtmpCodecFromError(err error) *rtmpCodecError {
	msg := err.Error()
	if m := rtmpUnsupportedCodecRE.FindStringSubmatch(msg); m != nil {
		id, _ := strconv.Atoi(m[2])
		if m[1] == "audio" {
			return &rtmpCodecError{rtmpAudioCodecName(id)}
		}
		return &rtmpCodecError{rtmpVideoCodecName(id)}
	}
	if m := rtmpUnsupportedFourCCRE.FindStringSubmatch(msg); m != nil {
		v, _ := strconv.ParseUint(m[1], 10, 32)
		return &rtmpCodecError{rtmpFourCCName(message.FourCC(v))}
	}
	return nil
}

// rtmpAudioCodecName names an FLV SoundFormat (FLV spec, audio tag).
func rtmpAudioCodecName(id int) string {
	switch id {
	case 0, 3:
		return "LPCM"
	case 1:
		return "ADPCM"
	case 2:
		return "MP3"
	case 4, 5, 6:
		return "Nellymoser"
	case 7, 8:
		return "G.711"
	case 10:
		return "AAC"
	case 11:
		return "Speex"
	case 14:
		return "MP3 8 kHz"
	case 15:
		return "device-specific audio"
	default:
		return fmt.Sprintf("FLV audio format %d", id)
	}
}

// rtmpVideoCodecName names an FLV CodecID (FLV spec, video tag).
func rtmpVideoCodecName(id int) string {
	switch id {
	case 2:
		return "Sorenson H.263"
	case 3:
		return "Screen video"
	case 4, 5:
		return "VP6"
	case 6:
		return "Screen video 2"
	case 7:
		return "H264"
	case 12:
		return "H265"
	default:
		return fmt.Sprintf("FLV video codec %d", id)
	}
}

// rtmpFourCCName names an enhanced-RTMP codec.
func rtmpFourCCName(f message.FourCC) string {
	switch f {
	case message.FourCCHEVC:
		return "H265 (hvc1)"
	case message.FourCCAV1:
		return "AV1 (av01)"
	case message.FourCCVP9:
		return "VP9 (vp09)"
	case message.FourCCAVC:
		return "H264 (avc1)"
	case message.FourCCOpus:
		return "Opus"
	case message.FourCCAC3:
		return "AC-3"
	case message.FourCCMP3:
		return "MP3"
	case message.FourCCFLAC:
		return "FLAC"
	}
	b := []byte{byte(f >> 24), byte(f >> 16), byte(f >> 8), byte(f)}
	for _, x := range b {
		if x < 0x20 || x > 0x7e {
			return fmt.Sprintf("FourCC 0x%08x", uint32(f))
		}
	}
	return fmt.Sprintf("FourCC %q", b)
}

// rtmpCodecName names a codec the RTMP library recognized.
func rtmpCodecName(c rtmpcodecs.Codec) string {
	switch c.(type) {
	case *rtmpcodecs.H264:
		return "H264"
	case *rtmpcodecs.H265:
		return "H265"
	case *rtmpcodecs.AV1:
		return "AV1"
	case *rtmpcodecs.VP9:
		return "VP9"
	case *rtmpcodecs.MPEG4Audio:
		return "AAC"
	case *rtmpcodecs.MPEG1Audio:
		return "MP3"
	case *rtmpcodecs.Opus:
		return "Opus"
	case *rtmpcodecs.FLAC:
		return "FLAC"
	case *rtmpcodecs.AC3:
		return "AC-3"
	case *rtmpcodecs.G711:
		return "G.711"
	case *rtmpcodecs.LPCM:
		return "LPCM"
	default:
		return fmt.Sprintf("%T", c)
	}
}
