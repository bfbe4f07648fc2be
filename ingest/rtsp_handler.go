package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/gradient-cdn/gradient/internal/rtpdepay"
	"github.com/gradient-cdn/gradient/media"
)

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

// OnConnOpen gives the connection SetupTimeout to RECORD or PLAY.
func (h *rtspHandler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	s, conn := h.s, ctx.Conn
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setup[conn] = time.AfterFunc(s.cfg.SetupTimeout, func() {
		s.mu.Lock()
		_, waiting := s.setup[conn]
		delete(s.setup, conn)
		s.mu.Unlock()
		if waiting {
			s.log.Info("rtsp connection closed: no RECORD or PLAY in time", "remote", conn.NetConn().RemoteAddr().String(),
				"setup_timeout", s.cfg.SetupTimeout)
			conn.Close()
		}
	})
}

// setupDone marks a connection as recording or playing: the setup deadline
// no longer applies to it.
func (s *RTSPServer) setupDone(conn *gortsplib.ServerConn) {
	s.mu.Lock()
	if t, ok := s.setup[conn]; ok {
		t.Stop()
		delete(s.setup, conn)
	}
	s.mu.Unlock()
}

// OnConnClose releases the streams the connection described.
func (h *rtspHandler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s := h.s
	s.setupDone(ctx.Conn)
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
	h.s.setupDone(conn)
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
	s.setupDone(ctx.Conn)
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
