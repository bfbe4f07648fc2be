package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/listenaddr"
	"github.com/gradient-cdn/gradient/internal/rtpdepay"
	"github.com/gradient-cdn/gradient/media"
)

// RTSPReadSource serves RTSP readers. egress implements it: for each stream
// path it keeps one gortsplib.ServerStream fed by one hub reader and shared
// by every RTSP reader of that path. ingest does not import egress; the
// node wires the two together through RTSPConfig.Read.
type RTSPReadSource interface {
	// Stream returns the ServerStream serving path on srv, creating it on
	// first use. release is called once the caller stops using the stream
	// (the session or connection that asked for it ends); when the last
	// user releases it, the stream may be torn down.
	// Errors wrap media.ErrInvalidName (answered 400) or media.ErrNotFound /
	// media.ErrStreamEnded (answered 404).
	Stream(srv *gortsplib.Server, path string) (stream *gortsplib.ServerStream, release func(), err error)
}

// RTSPPlayingSource is an optional interface of an RTSPReadSource. The
// server calls Playing once a reader session of stream plays, that is once
// it receives what is written to stream from then on: a source that holds
// its first units (the hub's GOP cache, which starts at an IDR) until then
// lets the reader start decoding at once instead of at the live edge, in
// the middle of a GOP or of an access unit.
type RTSPPlayingSource interface {
	Playing(stream *gortsplib.ServerStream)
}

// RTSPJoinSource is an optional interface of an RTSPReadSource. The server
// calls Join in PLAY, before the session becomes a reader of stream: a
// source whose stream already runs returns when it is about to write a
// keyframe (and waits for the reader's Playing before writing it), so that
// the reader starts there; it returns after wait at the most, and the
// reader then starts at the live edge.
type RTSPJoinSource interface {
	Join(stream *gortsplib.ServerStream, wait time.Duration)
}

// rtspJoinWait bounds how long a PLAY waits for the next keyframe of a
// running stream (RTSPJoinSource): a GOP of up to 2 s, and well within the
// read timeouts of clients and relays.
const rtspJoinWait = 2 * time.Second

// Off is the value of an address that turns its listener off (the UDP
// transport's udp_rtp_addr and udp_rtcp_addr; a node also accepts it for
// the servers' addr).
const Off = "off"

// RTSPConfig configures an RTSPServer; DefaultRTSPConfig gives the
// defaults. It is the `rtsp` section of a node's configuration.
type RTSPConfig struct {
	// Addr is the TCP address for RTSP requests and interleaved media, for
	// both publishers and readers. Default ":8554".
	Addr string `yaml:"addr"`

	// UDPRTPAddr and UDPRTCPAddr are the UDP addresses of the UDP
	// transport. The RTP port must be even and the RTCP port the next one.
	// Defaults ":8000" and ":8001" (when only the RTP address is set, the
	// RTCP one is its port plus one). "off" for both turns the UDP
	// transport off; clients then must use TCP interleaved transport.
	UDPRTPAddr  string `yaml:"udp_rtp_addr"`
	UDPRTCPAddr string `yaml:"udp_rtcp_addr"`

	// DisableUDP turns the UDP transport off, as "off" addresses do.
	// Default false.
	DisableUDP bool `yaml:"-"`

	// ReadTimeout bounds how long a publisher may stay silent (and how long
	// a request may take to arrive) before its session is closed.
	// Default 10 s.
	ReadTimeout time.Duration `yaml:"read_timeout"`

	// WriteTimeout bounds the writing of responses and interleaved packets.
	// Default 10 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`

	// WriteQueueSize is how many packets may wait for each reader session;
	// a reader whose queue is full is dropped, so that it never slows the
	// others. Must be a power of two. Default 512.
	WriteQueueSize int `yaml:"write_queue_size"`

	// PublishRenditions lets publishers push rendition paths
	// ("live/cam1@360p"). Default false: renditions are produced inside
	// the network, publishers push the source ("live/cam1").
	PublishRenditions bool `yaml:"publish_renditions"`

	// WriteCoalesce gathers the interleaved RTP packets written to each TCP
	// reader for this long and writes them with one call, instead of one
	// system call per packet. It trades at most this much added delay on
	// TCP readers (and relays) for a fraction of the CPU per reader.
	// Default 5 ms; negative disables it.
	WriteCoalesce time.Duration `yaml:"write_coalesce"`

	// Read serves DESCRIBE/SETUP/PLAY. Default nil: reading is refused
	// with 404.
	Read RTSPReadSource `yaml:"-"`

	// Authenticate, when set, decides whether a request may publish
	// (publish true, checked at ANNOUNCE) or read (checked at DESCRIBE and
	// SETUP) path. user and pass come from RTSP Basic authentication; both
	// are empty when the client sent no credentials, so the hook may allow
	// anonymous reading and still protect publishing. A refused request is
	// answered 401 with a Basic challenge. Default nil: everybody is let in.
	Authenticate func(user, pass, path string, publish bool) bool `yaml:"-"`
}

// DefaultRTSPConfig returns the defaults of every RTSPConfig field.
func DefaultRTSPConfig() RTSPConfig {
	return RTSPConfig{
		Addr:           ":8554",
		UDPRTPAddr:     ":8000",
		UDPRTCPAddr:    ":8001",
		ReadTimeout:    10 * time.Second,
		WriteTimeout:   10 * time.Second,
		WriteQueueSize: 512,
		WriteCoalesce:  5 * time.Millisecond,
	}
}

// Validate checks the fields and names a bad one by its YAML key.
func (c RTSPConfig) Validate() error {
	if err := listenaddr.Check(c.Addr); err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	if !c.DisableUDP {
		if (c.UDPRTPAddr == Off) != (c.UDPRTCPAddr == Off) {
			return errors.New("udp_rtp_addr and udp_rtcp_addr: both or neither must be off")
		}
		if c.UDPRTPAddr != Off {
			if err := listenaddr.Check(c.UDPRTPAddr); err != nil {
				return fmt.Errorf("udp_rtp_addr: %w", err)
			}
			_, port, _ := net.SplitHostPort(c.UDPRTPAddr)
			if p, _ := strconv.Atoi(port); p == 0 || p%2 != 0 {
				return fmt.Errorf("udp_rtp_addr: %q: the RTP port must be even and not 0", c.UDPRTPAddr)
			}
			if err := listenaddr.Check(c.UDPRTCPAddr); err != nil {
				return fmt.Errorf("udp_rtcp_addr: %w", err)
			}
		}
	}
	if c.ReadTimeout <= 0 {
		return fmt.Errorf("read_timeout: %v must be > 0", c.ReadTimeout)
	}
	if c.WriteTimeout <= 0 {
		return fmt.Errorf("write_timeout: %v must be > 0", c.WriteTimeout)
	}
	if c.WriteQueueSize <= 0 || c.WriteQueueSize&(c.WriteQueueSize-1) != 0 {
		return fmt.Errorf("write_queue_size: %d is not a power of two", c.WriteQueueSize)
	}
	return nil
}

// withDefaults fills the zero fields of a hand-built config from
// DefaultRTSPConfig and validates it.
func (c RTSPConfig) withDefaults() (RTSPConfig, error) {
	// An RTP port given alone takes the next one for RTCP, as RTSP pairs
	// them; UDP turned off turns both off.
	if c.UDPRTCPAddr == "" && c.UDPRTPAddr == Off {
		c.UDPRTCPAddr = Off
	}
	if c.UDPRTCPAddr == "" && c.UDPRTPAddr != "" {
		host, port, err := net.SplitHostPort(c.UDPRTPAddr)
		if p, perr := strconv.Atoi(port); err == nil && perr == nil {
			c.UDPRTCPAddr = net.JoinHostPort(host, strconv.Itoa(p+1))
		}
	}
	defaults.Fill(&c, DefaultRTSPConfig())
	if err := c.Validate(); err != nil {
		return c, err
	}
	if c.DisableUDP || c.UDPRTPAddr == Off {
		c.DisableUDP, c.UDPRTPAddr, c.UDPRTCPAddr = true, "", ""
	}
	return c, nil
}

// RTSPServer accepts RTSP publishers (ANNOUNCE/RECORD, TCP interleaved or
// UDP) into the hub and serves RTSP readers (DESCRIBE/SETUP/PLAY) through
// RTSPConfig.Read, on one port.
//
// A publisher must send H.264 video; AAC (RFC 3640 or LATM) and Opus audio
// are carried, other media are ignored, other video codecs are refused with
// 415. A path that is live is never taken over: a second publisher gets 409.
type RTSPServer struct {
	cfg RTSPConfig
	hub *media.Hub
	log *slog.Logger
	srv *gortsplib.Server

	mu         sync.Mutex
	ln         net.Listener
	started    bool
	closed     bool
	publishing map[string]*rtspPublisher              // paths reserved by RTSP publishers
	sessions   map[*gortsplib.ServerSession]*rtspSess // state of sessions that publish or read
	described  map[*gortsplib.ServerConn]map[string]func()
	playing    map[*gortsplib.ServerConn]*gortsplib.ServerStream // PLAY answered next on the connection
}

// rtspSess is what the server remembers about one gortsplib session.
type rtspSess struct {
	pub     *rtspPublisher // publishing session
	path    string         // reading session: the path it set up
	release func()         // reading session: gives the stream back
	dropped bool           // reading session: closed for being too slow
}

// NewRTSPServer returns a server publishing into hub; Start binds it.
func NewRTSPServer(cfg RTSPConfig, hub *media.Hub, log *slog.Logger) (*RTSPServer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("rtsp: %w", err)
	}
	if hub == nil {
		return nil, errors.New("rtsp: nil hub")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &RTSPServer{
		cfg:        cfg,
		hub:        hub,
		log:        log.With("component", "rtsp"),
		publishing: map[string]*rtspPublisher{},
		sessions:   map[*gortsplib.ServerSession]*rtspSess{},
		described:  map[*gortsplib.ServerConn]map[string]func(){},
		playing:    map[*gortsplib.ServerConn]*gortsplib.ServerStream{},
	}
	s.srv = &gortsplib.Server{
		Handler:        &rtspHandler{s: s},
		RTSPAddress:    cfg.Addr,
		UDPRTPAddress:  cfg.UDPRTPAddr,
		UDPRTCPAddress: cfg.UDPRTCPAddr,
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		WriteQueueSize: cfg.WriteQueueSize,
		// Called by srv.Start, under s.mu.
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			s.ln = ln
			if cfg.WriteCoalesce > 0 {
				return newCoalescingListener(ln, cfg.WriteCoalesce), nil
			}
			return ln, nil
		},
	}
	if cfg.Authenticate != nil {
		// The hook needs the password itself, which only Basic carries.
		s.srv.AuthMethods = []auth.VerifyMethod{auth.VerifyMethodBasic}
	}
	return s, nil
}

// Start binds the RTSP port (and the UDP ports) and starts serving.
func (s *RTSPServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("rtsp: server already started or closed")
	}
	// s.mu is held: the Listen hook must not take it.
	if err := s.srv.Start(); err != nil {
		return fmt.Errorf("rtsp listen %s: %w", s.cfg.Addr, err)
	}
	s.started = true
	s.log.Info("rtsp server listening", "addr", s.ln.Addr().String(), "udp_rtp", s.cfg.UDPRTPAddr, "udp_rtcp", s.cfg.UDPRTCPAddr)
	return nil
}

// Addr is the bound TCP address, nil before Start.
func (s *RTSPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Server is the underlying gortsplib server, for a RTSPReadSource that
// needs it outside of a Stream call. Valid after Start.
func (s *RTSPServer) Server() *gortsplib.Server { return s.srv }

// Close stops the server: every session is closed, every publisher's
// stream ends. It is idempotent.
func (s *RTSPServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if started {
		// Closes every connection and session; OnSessionClose and
		// OnConnClose release what they held.
		s.srv.Close()
	}
	return nil
}

// rtspStatus maps hub and name errors to an RTSP status code.
func rtspStatus(err error) base.StatusCode {
	switch {
	case errors.Is(err, media.ErrInvalidName):
		return base.StatusBadRequest
	case errors.Is(err, media.ErrNotFound), errors.Is(err, media.ErrStreamEnded):
		return base.StatusNotFound
	case errors.Is(err, media.ErrAlreadyPublished):
		return rtspStatusConflict
	case errors.Is(err, media.ErrNoCapacity):
		return base.StatusServiceUnavailable
	}
	return base.StatusInternalServerError
}

// rtspStatusConflict is HTTP's 409, which RTSP 1.0 does not list but clients
// print with its reason phrase.
const rtspStatusConflict base.StatusCode = 409

// rtspReply builds a refusal whose reason phrase tells the client why
// (ffmpeg and gortsplib print it).
func rtspReply(code base.StatusCode, reason string) *base.Response {
	r := &base.Response{StatusCode: code}
	if reason != "" {
		std := base.StatusMessages[code]
		if std == "" {
			std = "Error"
		}
		r.StatusMessage = std + " (" + rtspReason(reason) + ")"
	}
	return r
}

// rtspReason keeps a reason phrase on one printable line.
func rtspReason(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = '?'
		}
	}
	if len(b) > 300 {
		b = b[:300]
	}
	return string(b)
}

// rtspTransport names a session's transport for logs.
func rtspTransport(t *gortsplib.Transport) string {
	if t == nil {
		return ""
	}
	return t.String()
}

// rtspStreamPath turns a gortsplib path ("/live/cam1") into a stream path.
func rtspStreamPath(p string) string { return strings.TrimPrefix(p, "/") }

// authorize runs the Authenticate hook for a request. It returns nil when
// the request may go on, or the 401 answer.
func (s *RTSPServer) authorize(req *base.Request, conn *gortsplib.ServerConn, path string, publish bool) (*base.Response, error) {
	if s.cfg.Authenticate == nil {
		return nil, nil
	}
	var user, pass string
	if v, ok := req.Header["Authorization"]; ok {
		var h headers.Authorization
		if err := h.Unmarshal(v); err == nil && h.Method == headers.AuthMethodBasic {
			user, pass = h.Username, h.BasicPass
		}
	}
	if s.cfg.Authenticate(user, pass, path, publish) {
		return nil, nil
	}
	if user != "" {
		// Without credentials gortsplib answers with the challenge; with
		// wrong ones it answers 401 and closes the connection.
		s.log.Info("rtsp request refused: bad credentials", "path", path, "user", user, "publish", publish,
			"remote", conn.NetConn().RemoteAddr().String())
	}
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

// rtspHandler implements gortsplib's handler interfaces, so that RTSPServer
// itself does not export them.
type rtspHandler struct{ s *RTSPServer }

// guard turns a panic in a handler into a 500 and a log line: bad input from
// one connection must never take the node down.
func (h *rtspHandler) guard(what string, res **base.Response, err *error) {
	if r := recover(); r != nil {
		h.s.log.Error("rtsp handler panic", "request", what, "panic", fmt.Sprint(r))
		*res = &base.Response{StatusCode: base.StatusInternalServerError}
		*err = fmt.Errorf("rtsp %s: internal error", what)
	}
}

// OnConnClose releases the streams the connection described.
func (h *rtspHandler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s := h.s
	s.mu.Lock()
	rel := s.described[ctx.Conn]
	delete(s.described, ctx.Conn)
	delete(s.playing, ctx.Conn)
	s.mu.Unlock()
	for _, f := range rel {
		f()
	}
	s.log.Debug("rtsp connection closed", "remote", ctx.Conn.NetConn().RemoteAddr().String(), "err", ctx.Error)
}

// OnSessionClose ends a publisher's stream or releases a reader's stream.
func (h *rtspHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s := h.s
	s.mu.Lock()
	st := s.sessions[ctx.Session]
	delete(s.sessions, ctx.Session)
	if st != nil && st.pub != nil && s.publishing[st.pub.path] == st.pub {
		delete(s.publishing, st.pub.path)
	}
	s.mu.Unlock()
	if st == nil {
		return
	}
	if st.pub != nil {
		st.pub.close(ctx.Error)
	}
	if st.release != nil {
		st.release()
		s.log.Debug("rtsp reader left", "path", st.path, "err", ctx.Error)
	}
}

// openRead validates and authorizes a read of rawPath and gets its shared
// stream. A non-nil res is the refusal to answer with.
func (s *RTSPServer) openRead(req *base.Request, conn *gortsplib.ServerConn, rawPath, method string) (path string, stream *gortsplib.ServerStream, release func(), res *base.Response, err error) {
	path = rtspStreamPath(rawPath)
	remote := conn.NetConn().RemoteAddr().String()
	if _, _, err := media.ParsePath(path); err != nil {
		s.log.Info("rtsp read refused: invalid stream path", "path", path, "remote", remote, "err", err)
		return path, nil, nil, rtspReply(base.StatusBadRequest, err.Error()), nil
	}
	if res, err := s.authorize(req, conn, path, false); res != nil {
		return path, nil, nil, res, err
	}
	if s.cfg.Read == nil {
		return path, nil, nil, rtspReply(base.StatusNotFound, "reading is not enabled"), nil
	}
	stream, release, err = s.cfg.Read.Stream(s.srv, path)
	if err != nil {
		s.log.Debug("rtsp "+method+" refused", "path", path, "remote", remote, "err", err)
		return path, nil, nil, rtspReply(rtspStatus(err), err.Error()), nil
	}
	return path, stream, release, nil, nil
}

// OnDescribe answers with the SDP of the shared stream of the path.
func (h *rtspHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (res *base.Response, stream *gortsplib.ServerStream, err error) {
	defer h.guard("DESCRIBE", &res, &err)
	s := h.s
	path, stream, release, res, err := s.openRead(ctx.Request, ctx.Conn, ctx.Path, "describe")
	if res != nil {
		return res, nil, err
	}
	// Hold the stream until the connection closes, so that the SETUP
	// following this DESCRIBE finds the same stream; one hold per path.
	s.mu.Lock()
	m := s.described[ctx.Conn]
	if m == nil {
		m = map[string]func(){}
		s.described[ctx.Conn] = m
	}
	if _, held := m[path]; held {
		s.mu.Unlock()
		release()
	} else {
		m[path] = release
		s.mu.Unlock()
	}
	return &base.Response{StatusCode: base.StatusOK}, stream, nil
}

// OnAnnounce validates the path and the SDP and reserves the path.
func (h *rtspHandler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (res *base.Response, err error) {
	defer h.guard("ANNOUNCE", &res, &err)
	s := h.s
	path := rtspStreamPath(ctx.Path)
	remote := ctx.Conn.NetConn().RemoteAddr().String()
	_, rendition, err := media.ParsePath(path)
	if err != nil {
		s.log.Info("rtsp publish refused: invalid stream path", "path", path, "remote", remote, "err", err)
		return rtspReply(base.StatusBadRequest, err.Error()), nil
	}
	if rendition != "" && !s.cfg.PublishRenditions {
		s.log.Info("rtsp publish refused: renditions are produced by the network, publish the source stream",
			"path", path, "remote", remote)
		return rtspReply(base.StatusBadRequest, "publishing a rendition is not allowed"), nil
	}
	if res, err := s.authorize(ctx.Request, ctx.Conn, path, true); res != nil {
		return res, err
	}
	pub, err := newRTSPPublisher(s, ctx.Session, path, "rtsp "+remote, ctx.Description)
	if err != nil {
		var ce *rtpdepay.CodecError
		if errors.As(err, &ce) {
			s.log.Info("rtsp publish refused", "path", path, "remote", remote, "reason", ce.Error())
			return rtspReply(base.StatusUnsupportedMediaType, ce.Error()), nil
		}
		s.log.Info("rtsp publish refused", "path", path, "remote", remote, "err", err)
		return rtspReply(base.StatusBadRequest, err.Error()), nil
	}

	s.mu.Lock()
	_, taken := s.publishing[path]
	if !taken {
		_, taken = s.hub.Lookup(path)
	}
	if taken {
		s.mu.Unlock()
		s.log.Info("rtsp publish refused: stream is already being published", "path", path, "remote", remote)
		return rtspReply(rtspStatusConflict, "stream "+path+" is already being published"), nil
	}
	s.publishing[path] = pub
	s.sessions[ctx.Session] = &rtspSess{pub: pub}
	s.mu.Unlock()

	if err := pub.publishIfReady(); err != nil {
		s.mu.Lock()
		delete(s.publishing, path)
		delete(s.sessions, ctx.Session)
		s.mu.Unlock()
		s.log.Info("rtsp publish refused", "path", path, "remote", remote, "err", err)
		return rtspReply(rtspStatus(err), err.Error()), nil
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSetup accepts a publisher's media, or attaches a reader to the shared
// stream of the path.
func (h *rtspHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (res *base.Response, stream *gortsplib.ServerStream, err error) {
	defer h.guard("SETUP", &res, &err)
	s := h.s
	switch ctx.Session.State() {
	case gortsplib.ServerSessionStatePreRecord:
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	case gortsplib.ServerSessionStatePrePlay:
		// Further medias of the same read: the stream is already set up.
		if st := ctx.Session.SetuppedStream(); st != nil {
			return &base.Response{StatusCode: base.StatusOK}, st, nil
		}
	}
	path, stream, release, res, err := s.openRead(ctx.Request, ctx.Conn, ctx.Path, "setup")
	if res != nil {
		return res, nil, err
	}
	s.mu.Lock()
	old := s.sessions[ctx.Session]
	s.sessions[ctx.Session] = &rtspSess{path: path, release: release}
	s.mu.Unlock()
	if old != nil && old.release != nil {
		old.release()
	}
	return &base.Response{StatusCode: base.StatusOK}, stream, nil
}

// OnPlay starts a reader. The read source is told in OnResponse, once
// gortsplib has made the session a reader of its stream.
func (h *rtspHandler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	h.s.log.Debug("rtsp reader playing", "path", rtspStreamPath(ctx.Path), "remote", ctx.Conn.NetConn().RemoteAddr().String(),
		"transport", rtspTransport(ctx.Session.SetuppedTransport()))
	if st := ctx.Session.SetuppedStream(); st != nil {
		if js, ok := h.s.cfg.Read.(RTSPJoinSource); ok {
			js.Join(st, rtspJoinWait)
		}
		h.s.mu.Lock()
		h.s.playing[ctx.Conn] = st
		h.s.mu.Unlock()
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnResponse tells an RTSPPlayingSource that a reader plays. gortsplib
// answers a connection's requests one at a time, so the response after
// OnPlay is that PLAY's, and by then the session receives the stream.
func (h *rtspHandler) OnResponse(conn *gortsplib.ServerConn, res *base.Response) {
	h.s.mu.Lock()
	st, ok := h.s.playing[conn]
	delete(h.s.playing, conn)
	h.s.mu.Unlock()
	if !ok || res.StatusCode != base.StatusOK {
		return
	}
	if ps, ok := h.s.cfg.Read.(RTSPPlayingSource); ok {
		ps.Playing(st)
	}
}

// OnRecord starts turning the publisher's RTP packets into units.
func (h *rtspHandler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (res *base.Response, err error) {
	defer h.guard("RECORD", &res, &err)
	s := h.s
	s.mu.Lock()
	st := s.sessions[ctx.Session]
	s.mu.Unlock()
	if st == nil || st.pub == nil {
		return rtspReply(base.StatusBadRequest, "RECORD without ANNOUNCE"), nil
	}
	if err := st.pub.record(ctx.Session); err != nil {
		s.log.Info("rtsp publish refused", "path", st.pub.path, "remote", ctx.Conn.NetConn().RemoteAddr().String(), "err", err)
		return rtspReply(base.StatusBadRequest, err.Error()), nil
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnPacketsLost makes a publisher wait for the next IDR, since the access
// units around a loss may not decode.
func (h *rtspHandler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	h.s.mu.Lock()
	st := h.s.sessions[ctx.Session]
	h.s.mu.Unlock()
	if st != nil && st.pub != nil {
		st.pub.lost(ctx.Lost)
	}
}

// OnDecodeError logs a non-fatal decode error (bad RTP or RTCP packet).
func (h *rtspHandler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	h.s.log.Debug("rtsp decode error", "err", ctx.Error)
}

// OnStreamWriteError drops a reader whose write queue is full: it is too
// slow for the stream, and the others must not wait for it.
func (h *rtspHandler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	var full liberrors.ErrServerWriteQueueFull
	if errors.As(ctx.Error, &full) {
		h.s.mu.Lock()
		st := h.s.sessions[ctx.Session]
		first := st != nil && !st.dropped
		if first {
			st.dropped = true
		}
		h.s.mu.Unlock()
		if first {
			h.s.log.Info("rtsp reader too slow, dropped", "path", st.path)
		}
		ctx.Session.Close()
		return
	}
	h.s.log.Debug("rtsp stream write error", "err", ctx.Error)
}
