package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	rtspauth "github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/connlimit"
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
	setup      map[*gortsplib.ServerConn]*time.Timer             // connections not yet recording or playing
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
		setup:      map[*gortsplib.ServerConn]*time.Timer{},
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
			if cfg.MaxConnsPerIP > 0 {
				lc := connlimit.Config{PerIP: cfg.MaxConnsPerIP, Log: s.log, What: "rtsp"}
				if cfg.LimitLoopback {
					lc.PerLoopback = cfg.MaxConnsPerIP
				}
				ln = connlimit.Wrap(ln, lc)
			}
			if cfg.WriteCoalesce > 0 {
				return newCoalescingListener(ln, cfg.WriteCoalesce), nil
			}
			return ln, nil
		},
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("rtsp: tls_cert/tls_key: %w", err)
		}
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.Credentials != nil || cfg.Authorize != nil {
		// Digest only unless asked: Basic would send the password in clear.
		s.srv.AuthMethods = []rtspauth.VerifyMethod{rtspauth.VerifyMethodDigestSHA256, rtspauth.VerifyMethodDigestMD5}
		if cfg.Authorize != nil && cfg.BasicAuth {
			s.srv.AuthMethods = []rtspauth.VerifyMethod{rtspauth.VerifyMethodBasic}
		}
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
	s.log.Info("rtsp server listening", "addr", s.ln.Addr().String(), "tls", s.srv.TLSConfig != nil, "udp_rtp", s.cfg.UDPRTPAddr, "udp_rtcp", s.cfg.UDPRTCPAddr)
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

// authorize runs the Credentials hook for a request. It returns nil when
// the request may go on, or the 401 answer.
func (s *RTSPServer) authorize(req *base.Request, conn *gortsplib.ServerConn, path string, publish bool) (*base.Response, error) {
	if s.cfg.Authorize != nil {
		return s.authorizeRequest(req, conn, path, publish)
	}
	if s.cfg.Credentials == nil {
		return nil, nil
	}
	var user string
	if v, ok := req.Header["Authorization"]; ok {
		var h headers.Authorization
		if err := h.Unmarshal(v); err == nil {
			user = h.Username
		}
	}
	pass, open := s.cfg.Credentials(user, path, publish)
	if open {
		return nil, nil
	}
	if user == "" || pass == "" {
		// Refused either way; verifying against a user nobody has makes
		// the connection's Digest nonce, which the 401 challenge carries.
		conn.VerifyCredentials(req, "\x00", "\x00")
	} else if conn.VerifyCredentials(req, user, pass) {
		return nil, nil
	}
	if user != "" {
		// Without credentials gortsplib answers with the challenge; with
		// wrong ones it answers 401 and closes the connection.
		s.log.Info("rtsp request refused: bad credentials", "path", path, "user", logText(user), "publish", publish,
			"remote", conn.NetConn().RemoteAddr().String())
	}
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

// authorizeRequest puts a request to the Authorize hook. The hook logs its
// refusals (once per client a minute); the answers are RTSP's own: 401
// with a challenge for missing or wrong credentials, 403 for a client that
// may not do this.
func (s *RTSPServer) authorizeRequest(req *base.Request, conn *gortsplib.ServerConn, path string, publish bool) (*base.Response, error) {
	ar := auth.Request{Action: auth.ActionRead, Path: path, Protocol: "rtsp"}
	if publish {
		ar.Action = auth.ActionPublish
	}
	if a, ok := conn.NetConn().RemoteAddr().(*net.TCPAddr); ok {
		ar.IP = a.AddrPort().Addr().Unmap()
	}
	if req.URL != nil {
		ar.Query, _ = url.ParseQuery(req.URL.RawQuery)
	}
	if v, ok := req.Header["Authorization"]; ok {
		var h headers.Authorization
		if err := h.Unmarshal(v); err == nil && h.Username != "" {
			ar.User = h.Username
			switch {
			case h.Method == headers.AuthMethodBasic && s.cfg.BasicAuth:
				ar.Pass = h.BasicPass
			case h.Method == headers.AuthMethodDigest:
				user := h.Username
				ar.VerifyPass = func(pass string) bool { return pass != "" && conn.VerifyCredentials(req, user, pass) }
			}
		}
	}
	err := s.cfg.Authorize(ar)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, auth.ErrForbidden):
		return rtspReply(base.StatusForbidden, "not allowed to "+ar.Action+" "+path), nil
	}
	// The 401 carries the connection's Digest nonce, made here if no
	// credentials were checked yet. With credentials (wrong ones),
	// gortsplib answers 401 and closes the connection.
	conn.VerifyCredentials(req, "\x00", "\x00")
	return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
}

// logText bounds a client-chosen string before it is logged.
func logText(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
