package ingest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	srt "github.com/datarhei/gosrt"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/connlimit"
	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/listenaddr"
	"github.com/gradient-cdn/gradient/media"
)

// SRTConfig configures an SRTServer; DefaultSRTConfig gives the defaults.
// It is the `srt` section of a node's configuration.
type SRTConfig struct {
	// Addr is the UDP address the server listens on. Default ":8890".
	Addr string `yaml:"addr"`

	// Latency is the receive latency (SRT TSBPD delay) the server asks
	// for; the larger of it and the publisher's own wins. It is how long a
	// lost packet can be retransmitted before it is given up, and it adds
	// to the glass-to-glass delay. Default 120 ms.
	Latency time.Duration `yaml:"latency"`

	// Passphrase, when set, makes the server accept only publishers that
	// encrypt with it (SRT AES, 10 to 79 bytes, ffmpeg's
	// `passphrase=` option). Default empty: encrypted publishers are
	// refused.
	Passphrase string `yaml:"passphrase"`

	// PublishTimeout bounds the time from the handshake to the first H.264
	// IDR with SPS and PPS, when the stream appears in the hub. A
	// publisher that does not get there is dropped. Default 10 s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`

	// ReadTimeout drops a publisher that sends no data for this long, and
	// ends its stream. (A publisher that vanishes without a word is also
	// dropped after SRT's 5 s peer idle timeout.) Default 10 s.
	ReadTimeout time.Duration `yaml:"read_timeout"`

	// MaxPESBytes bounds one PES (a video frame, usually) of a publisher's
	// MPEG-TS: a PID that carries more than this without starting a new
	// PES drops the publisher. The demuxer holds a PES whole before it
	// passes it on, so this bounds what one track can make the node hold.
	// Default 8 MiB (a 4K IDR is rarely above 2 MiB).
	MaxPESBytes int64 `yaml:"max_pes_bytes"`

	// MaxBufferedBytes bounds the unfinished PES of all PIDs of one
	// publisher together (a publisher could otherwise open thousands of
	// PIDs). Default 16 MiB.
	MaxBufferedBytes int64 `yaml:"max_buffered_bytes"`

	// Authorize, when set, is asked whether a publisher may publish, with
	// the credentials of its stream id ("publish:<path>:<user>:<pass>" or
	// "#!::r=<path>,m=publish,u=<user>,s=<pass>"). ErrNoCredentials and
	// ErrBadCredentials are answered REJX_UNAUTHORIZED (1401),
	// ErrForbidden REJX_FORBIDDEN (1403). The hook logs its refusals. The
	// node sets it from the auth section. Default nil: everybody publishes.
	Authorize func(auth.Request) error `yaml:"-"`
}

// DefaultSRTConfig returns the defaults of every SRTConfig field.
func DefaultSRTConfig() SRTConfig {
	return SRTConfig{
		Addr:             ":8890",
		Latency:          120 * time.Millisecond,
		PublishTimeout:   10 * time.Second,
		ReadTimeout:      10 * time.Second,
		MaxPESBytes:      8 << 20,
		MaxBufferedBytes: 16 << 20,
	}
}

// Validate checks the fields and names a bad one by its YAML key.
func (c SRTConfig) Validate() error {
	if err := listenaddr.Check(c.Addr); err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	if c.Latency <= 0 {
		return fmt.Errorf("latency: %v must be > 0", c.Latency)
	}
	if n := len(c.Passphrase); n != 0 && (n < srt.MIN_PASSPHRASE_SIZE || n > srt.MAX_PASSPHRASE_SIZE) {
		return fmt.Errorf("passphrase: must be %d to %d bytes, got %d", srt.MIN_PASSPHRASE_SIZE, srt.MAX_PASSPHRASE_SIZE, n)
	}
	if c.PublishTimeout <= 0 {
		return fmt.Errorf("publish_timeout: %v must be > 0", c.PublishTimeout)
	}
	if c.ReadTimeout <= 0 {
		return fmt.Errorf("read_timeout: %v must be > 0", c.ReadTimeout)
	}
	if c.MaxPESBytes < 64<<10 {
		return fmt.Errorf("max_pes_bytes: %d must be at least 65536", c.MaxPESBytes)
	}
	if c.MaxBufferedBytes < c.MaxPESBytes {
		return fmt.Errorf("max_buffered_bytes: %d must be at least max_pes_bytes (%d)", c.MaxBufferedBytes, c.MaxPESBytes)
	}
	return nil
}

// withDefaults fills the zero fields of a hand-built config from
// DefaultSRTConfig.
func (c SRTConfig) withDefaults() SRTConfig {
	defaults.Fill(&c, DefaultSRTConfig())
	return c
}

// SRTServer accepts SRT publishers carrying MPEG-TS (H.264 video with AAC
// or Opus audio) and publishes their streams into the hub.
//
// A publisher names its stream in the SRT stream id, in any of these forms:
//
//	publish:live/cam1             (ffmpeg: srt://host:8890?streamid=publish:live/cam1)
//	#!::r=live/cam1,m=publish     (SRT access control syntax)
//	live/cam1                     (a bare path means publish)
//
// Reading over SRT is not offered: "read:" and "m=request" are refused at
// the handshake, as are invalid paths, rendition paths ("live/cam1@360p":
// renditions are made inside the network) and paths that are already being
// published. A stream appears in the hub at its first IDR and ends when the
// publisher leaves or stays silent for ReadTimeout.
type SRTServer struct {
	cfg SRTConfig
	hub *media.Hub
	log *slog.Logger

	mu      sync.Mutex
	ln      srt.Listener
	paths   map[string]struct{} // paths held by an accepted or accepting publisher
	conns   map[*srtConn]struct{}
	started bool
	closed  bool
	wg      sync.WaitGroup // the accept loop and one per connection
	// rejects lets one "publish rejected" line a minute through per
	// client address, code and reason (SRT: and stream id).
	rejects *connlimit.Every
}

// NewSRTServer returns a server for hub; Start binds it.
func NewSRTServer(cfg SRTConfig, hub *media.Hub, log *slog.Logger) (*SRTServer, error) {
	cfg = cfg.withDefaults()
	if hub == nil {
		return nil, errors.New("srt server: nil hub")
	}
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("srt server: %w", err)
	}
	return &SRTServer{
		cfg:     cfg,
		hub:     hub,
		log:     log.With("component", "srt"),
		paths:   map[string]struct{}{},
		rejects: connlimit.NewEvery(time.Minute),
		conns:   map[*srtConn]struct{}{},
	}, nil
}

// Start binds the UDP port and starts accepting publishers.
func (s *SRTServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("srt server: closed")
	}
	if s.started {
		return errors.New("srt server: already started")
	}
	conf := srt.DefaultConfig()
	conf.Latency = s.cfg.Latency
	ln, err := srt.Listen("srt", s.cfg.Addr, conf)
	if err != nil {
		return fmt.Errorf("srt server: %w", err)
	}
	s.ln, s.started = ln, true
	s.wg.Add(1)
	go s.acceptLoop(ln)
	s.log.Info("srt listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the bound UDP address, nil before Start.
func (s *SRTServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, disconnects every publisher (their streams end)
// and waits for the server's goroutines. It is idempotent.
func (s *SRTServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln := s.ln
	conns := make([]*srtConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.closeWith("server closing")
	}
	if ln != nil {
		ln.Close()
	}
	s.wg.Wait()
	return nil
}

// errSRTHandshake marks a handshake that made the SRT library fail.
var errSRTHandshake = errors.New("malformed SRT handshake")

func (s *SRTServer) acceptLoop(ln srt.Listener) {
	defer s.wg.Done()
	var lastIgnored time.Time
	suppressed := 0
	for {
		req, err := srtAccept(ln)
		if errors.Is(err, errSRTHandshake) {
			// One line a second at most: a flood of bad packets must not
			// become a flood of logs.
			if time.Since(lastIgnored) < time.Second {
				suppressed++
				continue
			}
			s.log.Info("srt handshake ignored", "err", err, "suppressed", suppressed)
			lastIgnored, suppressed = time.Now(), 0
			continue
		}
		if err != nil {
			if !errors.Is(err, srt.ErrListenerClosed) && !s.isClosed() {
				s.log.Error("srt listener failed", "err", err)
			}
			return
		}
		s.handle(req)
	}
}

// srtAccept waits for the next connection request. The library parses the
// handshake on this goroutine and can panic on a truncated one; that
// packet is dropped and the listener keeps serving.
func srtAccept(ln srt.Listener) (req srt.ConnRequest, err error) {
	defer func() {
		if r := recover(); r != nil {
			req, err = nil, fmt.Errorf("%w: %v", errSRTHandshake, r)
		}
	}()
	return ln.Accept2()
}

func (s *SRTServer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// srtRejection is a handshake refusal: the SRT rejection code the caller
// sees and the reason that is logged.
type srtRejection struct {
	code   srt.RejectionReason
	reason string
}

func (r *srtRejection) Error() string { return r.reason }

// handle decides on a connection request without blocking the accept loop.
func (s *SRTServer) handle(req srt.ConnRequest) {
	var claimed string // a path held for a connection not yet running
	defer func() {
		// The library decodes the caller's key material and handshake
		// fields here; a panic refuses this caller only.
		if r := recover(); r != nil {
			if claimed != "" {
				s.release(claimed)
				s.wg.Done()
			}
			req.Reject(srt.REJ_ROGUE)
			s.log.Warn("srt handshake refused", "remote", req.RemoteAddr().String(), "err", fmt.Sprintf("%s: %v", errSRTHandshake, r))
		}
	}()
	remote := req.RemoteAddr().String()
	sid, user, pass := srtCredentials(req.StreamId())
	path, rej := parseSRTStreamID(sid)
	if rej == nil && s.cfg.Authorize != nil {
		if rej = s.authorize(req, path, user, pass); rej != nil {
			// The authorizer logged it, once per client a minute.
			req.Reject(rej.code)
			return
		}
	}
	if rej == nil {
		rej = s.checkEncryption(req)
	}
	if rej == nil {
		rej = s.claim(path)
	}
	if rej != nil {
		req.Reject(rej.code)
		if s.rejects.Allow(fmt.Sprintf("%s %d %s %q", hostOf(remote), rej.code, rej.reason, sid)) { // once a minute per client, stream id and reason
			s.log.Info("srt publish rejected", "stream_id", sid, "remote", remote, "reason", rej.reason, "code", int(rej.code))
		}
		return
	}
	// s.claim reserved path and counted the connection's goroutine.
	claimed = path
	conn, err := req.Accept()
	if err != nil {
		claimed = ""
		s.release(path)
		s.wg.Done()
		s.log.Info("srt publish rejected", "stream", path, "remote", remote, "reason", err)
		return
	}
	claimed = ""
	c := &srtConn{s: s, conn: conn, path: path, remote: remote, accepted: time.Now(),
		log: s.log.With("stream", path, "remote", remote)}
	c.lastData.Store(c.accepted.UnixNano())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		s.release(path)
		s.wg.Done()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.log.Info("srt publisher connected")
	go c.run()
}

func (s *SRTServer) checkEncryption(req srt.ConnRequest) *srtRejection {
	switch {
	case s.cfg.Passphrase == "" && req.IsEncrypted():
		return &srtRejection{srt.REJ_UNSECURE, "publisher encrypts but the server has no passphrase"}
	case s.cfg.Passphrase != "" && !req.IsEncrypted():
		return &srtRejection{srt.REJ_UNSECURE, "passphrase required"}
	case s.cfg.Passphrase != "":
		if err := req.SetPassphrase(s.cfg.Passphrase); err != nil {
			return &srtRejection{srt.REJ_BADSECRET, "wrong passphrase"}
		}
	}
	return nil
}

// claim reserves path for a new publisher and counts its goroutine.
func (s *SRTServer) claim(path string) *srtRejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &srtRejection{srt.REJ_CLOSE, "server closing"}
	}
	if _, ok := s.paths[path]; ok {
		return &srtRejection{srt.REJX_CONFLICT, path + " is already being published"}
	}
	if _, ok := s.hub.Lookup(path); ok {
		return &srtRejection{srt.REJX_CONFLICT, path + " is already being published"}
	}
	s.paths[path] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *SRTServer) release(path string) {
	s.mu.Lock()
	delete(s.paths, path)
	s.mu.Unlock()
}

// authorize asks the Authorize hook whether this publisher may publish path.
func (s *SRTServer) authorize(req srt.ConnRequest, path, user, pass string) *srtRejection {
	ar := auth.Request{Action: auth.ActionPublish, Path: path, Protocol: "srt", User: user, Pass: pass}
	if a, ok := req.RemoteAddr().(*net.UDPAddr); ok {
		ar.IP = a.AddrPort().Addr().Unmap()
	}
	err := s.cfg.Authorize(ar)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrForbidden):
		return &srtRejection{srt.REJX_FORBIDDEN, err.Error()}
	}
	return &srtRejection{srt.REJX_UNAUTHORIZED, err.Error()}
}

// srtCredentials takes the credentials out of a stream id and returns the
// stream id without them, for parseSRTStreamID: "publish:<path>:<user>:<pass>"
// (MediaMTX's form; the password may hold colons) and the u= and s= keys of
// "#!::…" (which parseSRTStreamID ignores). Neither the user nor the
// password is ever logged with the stream id.
func srtCredentials(sid string) (rest, user, pass string) {
	if body, ok := strings.CutPrefix(sid, "publish:"); ok {
		if p, cred, ok := strings.Cut(body, ":"); ok {
			user, pass, _ = strings.Cut(cred, ":")
			return "publish:" + p, user, pass
		}
		return sid, "", ""
	}
	if body, ok := strings.CutPrefix(sid, "#!::"); ok {
		var keep []string
		for _, kv := range strings.Split(body, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch {
			case k == "u" && user == "":
				user = v
			case k == "s" && pass == "":
				pass = v
			default: // a repeated u or s stays, for parseSRTStreamID to refuse
				keep = append(keep, kv)
			}
		}
		return "#!::" + strings.Join(keep, ","), user, pass
	}
	return sid, "", ""
}

// parseSRTStreamID returns the stream path a publisher asks for, or why it
// is refused.
func parseSRTStreamID(sid string) (string, *srtRejection) {
	var path string
	switch {
	case sid == "":
		return "", &srtRejection{srt.REJX_BAD_REQUEST, "no stream id: publish with streamid=publish:<stream>"}
	case strings.HasPrefix(sid, "#!::"):
		keys := map[string]string{}
		for _, kv := range strings.Split(sid[len("#!::"):], ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return "", &srtRejection{srt.REJX_BAD_REQUEST, fmt.Sprintf("malformed stream id entry %q", kv)}
			}
			if _, dup := keys[k]; dup {
				return "", &srtRejection{srt.REJX_BAD_REQUEST, fmt.Sprintf("stream id key %q repeated", k)}
			}
			keys[k] = v
		}
		switch m := keys["m"]; m {
		case "publish":
		case "", "request":
			return "", &srtRejection{srt.REJX_BAD_MODE, "SRT read is not supported (use m=publish to publish; watch over WebRTC, HLS or RTSP)"}
		default:
			return "", &srtRejection{srt.REJX_BAD_MODE, fmt.Sprintf("mode m=%q is not supported, only m=publish", m)}
		}
		if t, ok := keys["t"]; ok && t != "stream" {
			return "", &srtRejection{srt.REJX_NOTSUP_MEDIA, fmt.Sprintf("type t=%q is not supported, only t=stream", t)}
		}
		path = keys["r"]
	case strings.HasPrefix(sid, "publish:"):
		path = sid[len("publish:"):]
	case strings.HasPrefix(sid, "read:"):
		return "", &srtRejection{srt.REJX_BAD_MODE, "SRT read is not supported (watch over WebRTC, HLS or RTSP)"}
	default:
		path = sid
	}
	_, rendition, err := media.ParsePath(path)
	if err != nil {
		return "", &srtRejection{srt.REJX_BAD_REQUEST, err.Error()}
	}
	if rendition != "" {
		// A broadcaster publishes the source; "@<rendition>" names what the
		// serverlets make from it.
		return "", &srtRejection{srt.REJX_BAD_REQUEST, fmt.Sprintf(
			"%q names a rendition: renditions are made inside the network, publish the bare stream name", path)}
	}
	return path, nil
}

// srtConn is one accepted publisher.
type srtConn struct {
	s        *SRTServer
	conn     srt.Conn
	path     string
	remote   string
	accepted time.Time
	log      *slog.Logger

	lastData  atomic.Int64 // Unix ns of the last bytes read
	bytesIn   atomic.Uint64
	published atomic.Bool

	mu     sync.Mutex
	reason string // why the server closed the connection, if it did
}

// closeWith closes the connection, remembering the first reason given.
func (c *srtConn) closeWith(reason string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = reason
	}
	c.mu.Unlock()
	c.conn.Close()
}

func (c *srtConn) closeReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

func (c *srtConn) run() {
	defer c.s.wg.Done()

	stop := make(chan struct{})
	watchdogDone := make(chan struct{})
	go func() {
		defer close(watchdogDone)
		c.watchdog(stop)
	}()

	pub, err := c.demux()
	close(stop)
	<-watchdogDone
	c.conn.Close()
	if pub != nil {
		pub.Close()
	}

	c.s.mu.Lock()
	delete(c.s.conns, c)
	delete(c.s.paths, c.path)
	c.s.mu.Unlock()

	var codecErr *tsCodecError
	var limitErr *tsLimitError
	switch reason := c.closeReason(); {
	case errors.As(err, &codecErr):
		c.log.Warn("srt publish refused", "err", err)
	case errors.As(err, &limitErr):
		c.log.Warn("srt publisher dropped: over a buffering cap", "err", err, "bytes_in", c.bytesIn.Load())
	case reason != "":
		c.log.Info("srt publisher dropped", "reason", reason, "bytes_in", c.bytesIn.Load(),
			"duration", time.Since(c.accepted).Round(time.Millisecond))
	case errors.Is(err, io.EOF):
		c.log.Info("srt publisher left", "bytes_in", c.bytesIn.Load(),
			"duration", time.Since(c.accepted).Round(time.Millisecond))
	default:
		c.log.Warn("srt publish failed", "err", err, "bytes_in", c.bytesIn.Load())
	}
}

// demux reads the connection until it ends and returns the hub publisher,
// if the stream got that far. A panic in the demuxer on hostile input ends
// this connection only.
func (c *srtConn) demux() (pub *media.Publisher, err error) {
	var d *tsDemuxer
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("srt publish %s: MPEG-TS demuxer panic: %v", c.path, r)
			c.log.Error("srt demuxer panic", "panic", r, "stack", string(debug.Stack()))
		}
		if d != nil {
			pub = d.publisher()
			if n := d.decodeErrors(); n > 0 {
				c.log.Info("srt MPEG-TS decode errors", "count", n)
			}
		}
	}()
	cfg := c.s.cfg
	d, err = newTSDemuxer(newTSLimiter(&srtDataReader{c: c}, cfg.MaxPESBytes, cfg.MaxBufferedBytes), c.publish)
	if err != nil {
		return nil, fmt.Errorf("srt publish %s: %w", c.path, err)
	}
	err = d.run()
	if !errors.Is(err, io.EOF) {
		err = fmt.Errorf("srt publish %s: %w", c.path, err)
	}
	return nil, err
}

func (c *srtConn) publish(desc media.Description) (*media.Publisher, error) {
	pub, err := c.s.hub.Publish(c.path, desc, "srt "+c.remote)
	if err != nil {
		return nil, err
	}
	c.published.Store(true)
	return pub, nil
}

// watchdog drops a publisher that is silent for ReadTimeout or has not
// published within PublishTimeout. SRT connections have no read deadline.
func (c *srtConn) watchdog(stop <-chan struct{}) {
	cfg := c.s.cfg
	every := min(cfg.ReadTimeout, cfg.PublishTimeout) / 10
	every = max(10*time.Millisecond, min(every, time.Second))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if !c.published.Load() && now.Sub(c.accepted) > cfg.PublishTimeout {
				c.closeWith(fmt.Sprintf("no H.264 IDR with SPS/PPS within %v", cfg.PublishTimeout))
				return
			}
			if now.Sub(time.Unix(0, c.lastData.Load())) > cfg.ReadTimeout {
				c.closeWith(fmt.Sprintf("no data for %v", cfg.ReadTimeout))
				return
			}
		}
	}
}

// srtDataReader reads the connection's payload and notes when data came.
type srtDataReader struct{ c *srtConn }

func (r *srtDataReader) Read(p []byte) (int, error) {
	n, err := r.c.conn.Read(p)
	if n > 0 {
		r.c.lastData.Store(time.Now().UnixNano())
		r.c.bytesIn.Add(uint64(n))
	}
	return n, err
}
