package egress

import (
	"errors"
	"net/url"
)

// WebRTC session hooks, gortsplib style: WebRTCConfig.Handler may implement
// any of these interfaces. Hooks run on the goroutine that opened or ended
// the session, never with the egress's locks held, and must not block for
// long.

// SessionOpenCtx describes a WHEP session that was just created.
type SessionOpenCtx struct {
	// ID is the session's id, the last element of its Location.
	ID string
	// Path is the stream path watched, with its rendition ("live/cam1@360p").
	Path string
	// Query is the query of the WHEP offer's URL.
	Query url.Values
	// Device is the viewer's device class: Query.Get("device").
	Device string
}

// SessionCloseCtx describes a WHEP session that ended.
type SessionCloseCtx struct {
	ID, Path, Device string
	// Err says why it ended: nil when the client DELETEd it, else
	// ErrSessionNotConnected, ErrSessionConnectionLost, ErrSessionStreamEnded
	// or ErrWebRTCClosed.
	Err error
}

// WebRTCHandlerOnSessionOpen is told when a WHEP offer was answered with a
// new session (before the 201 leaves).
type WebRTCHandlerOnSessionOpen interface {
	OnSessionOpen(*SessionOpenCtx)
}

// WebRTCHandlerOnSessionClose is told, exactly once, when a session that
// OnSessionOpen saw ends, however it ends; always after its OnSessionOpen.
type WebRTCHandlerOnSessionClose interface {
	OnSessionClose(*SessionCloseCtx)
}

// Why a session ended (SessionCloseCtx.Err).
var (
	// ErrSessionNotConnected: ICE and DTLS did not complete within
	// WebRTCConfig.SessionTimeout of the answer.
	ErrSessionNotConnected = errors.New("webrtc session not connected within session timeout")
	// ErrSessionConnectionLost: the connection failed (the viewer was
	// unreachable for SessionTimeout) or the viewer closed it.
	ErrSessionConnectionLost = errors.New("webrtc session connection lost")
	// ErrSessionStreamEnded: the stream the session watched ended.
	ErrSessionStreamEnded = errors.New("webrtc session's stream ended")
	// ErrWebRTCClosed: the WebRTC egress was closed.
	ErrWebRTCClosed = errors.New("webrtc egress closed")
)

// sessionOpened calls the open hook, if any, for s.
func (w *WebRTC) sessionOpened(s *whepSession) {
	if h, ok := w.cfg.Handler.(WebRTCHandlerOnSessionOpen); ok {
		h.OnSessionOpen(&SessionOpenCtx{ID: s.id, Path: s.path, Query: s.query, Device: s.query.Get("device")})
	}
}

// sessionClosed calls the close hook, if any, for s.
func (w *WebRTC) sessionClosed(s *whepSession, err error) {
	if h, ok := w.cfg.Handler.(WebRTCHandlerOnSessionClose); ok {
		h.OnSessionClose(&SessionCloseCtx{ID: s.id, Path: s.path, Device: s.query.Get("device"), Err: err})
	}
}
