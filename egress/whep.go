package egress

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/gradient-cdn/gradient/internal/connlimit"
	"github.com/gradient-cdn/gradient/media"
)

// MaxOfferSize bounds a WHEP offer body; a larger one is answered 413.
const MaxOfferSize = 64 << 10

// ServeStream implements StreamHandler for WHEP (draft-ietf-wish-whep):
//
//	POST    /<stream>/whep       SDP offer → 201 with the SDP answer and
//	                             Location /<stream>/whep/<session>
//	DELETE  /<stream>/whep/<id>  ends the session
//	PATCH   /<stream>/whep/<id>  405: trickle ICE and ICE restarts are not
//	                             supported, the offer must carry every candidate
//	OPTIONS                      CORS preflight
func (w *WebRTC) ServeStream(rw http.ResponseWriter, r *http.Request, path, rest string) {
	setWHEPCORS(rw.Header())
	if rest == "whep" {
		switch r.Method {
		case http.MethodOptions:
			rw.Header().Set("Allow", "OPTIONS, POST")
			rw.Header().Set("Accept-Post", "application/sdp")
			rw.WriteHeader(http.StatusNoContent)
		case http.MethodPost:
			w.serveOffer(rw, r, path)
		default:
			rw.Header().Set("Allow", "OPTIONS, POST")
			http.Error(rw, fmt.Sprintf("method %s not allowed on a WHEP endpoint; POST an SDP offer", r.Method), http.StatusMethodNotAllowed)
		}
		return
	}
	id, ok := strings.CutPrefix(rest, "whep/")
	if !ok {
		http.NotFound(rw, r)
		return
	}
	rw.Header().Set("Allow", "OPTIONS, DELETE")
	if r.Method == http.MethodOptions {
		rw.WriteHeader(http.StatusNoContent)
		return
	}
	s := w.session(id)
	if s == nil || s.path != path {
		http.Error(rw, "no such WHEP session", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodDelete:
		s.close(nil)
		rw.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		http.Error(rw, "trickle ICE and ICE restarts are not supported: send a new offer with all candidates", http.StatusMethodNotAllowed)
	default:
		http.Error(rw, fmt.Sprintf("method %s not allowed on a WHEP session", r.Method), http.StatusMethodNotAllowed)
	}
}

func setWHEPCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "OPTIONS, POST, PATCH, DELETE")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Post")
}

// offerError is a refused offer: the HTTP status and the reason, which is
// both logged (once) and sent to the client.
type offerError struct {
	status int
	reason string
	err    error
}

func (e *offerError) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}

func (w *WebRTC) serveOffer(rw http.ResponseWriter, r *http.Request, path string) {
	answer, s, err := w.acceptOffer(rw, r, path)
	if err != nil {
		var oe *offerError
		if !errors.As(err, &oe) {
			oe = &offerError{status: HTTPStatus(err), reason: "whep offer refused", err: err}
		}
		if oe.status == http.StatusServiceUnavailable {
			rw.Header().Set("Retry-After", "5")
		}
		w.mRejected.WithLabelValues(strconv.Itoa(oe.status)).Inc()
		// Logged once a minute per client and status: a flood of bogus
		// offers is counted (gradient_webrtc_rejected_offers_total), not logged each.
		if rejectLog.Allow(fmt.Sprintf("%p %s %d", w, clientHost(r.RemoteAddr), oe.status)) {
			w.log.Info("rejected whep offer", "stream", path, "remote", r.RemoteAddr, "status", oe.status, "reason", oe.Error())
		}
		http.Error(rw, oe.Error(), oe.status)
		return
	}
	rw.Header().Set("Content-Type", "application/sdp")
	rw.Header().Set("Location", "/"+path+"/whep/"+s.id)
	rw.Header().Set("ETag", `"`+s.id+`"`)
	rw.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(rw, answer)
}

// checkOfferType refuses a Content-Type other than application/sdp (an
// absent one is accepted).
func checkOfferType(ct string) *offerError {
	if ct == "" {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/sdp" {
		return &offerError{status: http.StatusUnsupportedMediaType, reason: fmt.Sprintf("content type %q is not application/sdp", ct)}
	}
	return nil
}

// rejectLog lets one line a minute through per node, client and status.
var rejectLog = connlimit.NewEvery(time.Minute)

// MaxOfferMedia is the most media sections (m= lines) a WHEP offer may
// have; beyond, it is refused with 400.
const MaxOfferMedia = 4

// checkOffer parses an offer body (already bounded by MaxOfferSize) and
// says which media sections it has; an offer without a video section, or
// one that is not SDP, is refused with a 400.
func checkOffer(body []byte) (hasVideo, hasAudio bool, oe *offerError) {
	if len(strings.TrimSpace(string(body))) == 0 {
		return false, false, &offerError{status: http.StatusBadRequest, reason: "empty offer: POST an SDP offer"}
	}
	var parsed sdp.SessionDescription
	if err := parsed.UnmarshalString(string(body)); err != nil {
		return false, false, &offerError{status: http.StatusBadRequest, reason: "malformed SDP offer", err: err}
	}
	if n := len(parsed.MediaDescriptions); n > MaxOfferMedia {
		// A viewer receives one video and one audio track: an offer with
		// dozens of sections would only cost the node transceivers.
		return false, false, &offerError{status: http.StatusBadRequest, reason: fmt.Sprintf("offer has %d media sections, at most %d allowed", n, MaxOfferMedia)}
	}
	for _, m := range parsed.MediaDescriptions {
		switch m.MediaName.Media {
		case "video":
			hasVideo = true
		case "audio":
			hasAudio = true
		}
	}
	if !hasVideo {
		return false, false, &offerError{status: http.StatusBadRequest, reason: "offer has no video media section"}
	}
	return hasVideo, hasAudio, nil
}

// acceptOffer validates the offer, negotiates a PeerConnection and joins
// it to its stream's feed.
func (w *WebRTC) acceptOffer(rw http.ResponseWriter, r *http.Request, path string) (string, *whepSession, error) {
	w.mu.Lock()
	api, closed := w.api, w.closed
	w.mu.Unlock()
	if api == nil || closed {
		return "", nil, &offerError{status: http.StatusServiceUnavailable, reason: "webrtc egress not running"}
	}
	if oe := checkOfferType(r.Header.Get("Content-Type")); oe != nil {
		return "", nil, oe
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxOfferSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", nil, &offerError{status: http.StatusRequestEntityTooLarge, reason: fmt.Sprintf("offer larger than %d bytes", MaxOfferSize)}
		}
		return "", nil, &offerError{status: http.StatusBadRequest, reason: "read offer", err: err}
	}
	_, hasAudio, oe := checkOffer(body)
	if oe != nil {
		return "", nil, oe
	}

	// One client may not hold more than MaxSessionsPerClient sessions:
	// checked before anything is built for it (and again when the session
	// is added).
	client := clientHost(r.RemoteAddr)
	if w.clientSessions(client) >= w.cfg.MaxSessionsPerClient {
		return "", nil, &offerError{status: http.StatusTooManyRequests, reason: fmt.Sprintf("this client holds %d WebRTC sessions, the most allowed", w.cfg.MaxSessionsPerClient)}
	}
	// Only a valid offer may start a rendition: the request is checked
	// first, so anonymous junk cannot hold transcode slots.
	st, ok := w.hub.Lookup(path)
	if !ok {
		// A rendition nobody makes yet ("live/cam1@360p") is started on
		// demand by the hub's rendition provider; the feed subscribes for real.
		pr, err := w.hub.SubscribeContext(r.Context(), path, "whep")
		if err != nil {
			return "", nil, fmt.Errorf("stream %s: %w", path, err)
		}
		st = pr.Stream()
		pr.Close()
	}

	desc := st.Description()
	vt := desc.Tracks[desc.VideoTrack()]
	profile := ""
	if len(vt.SPS) >= 2 {
		profile = fmt.Sprintf("%02x", vt.SPS[1])
	}
	withAudio := false
	if a := desc.AudioTrack(); a >= 0 {
		switch {
		case desc.Tracks[a].Codec != media.CodecOpus:
			w.log.Info("webrtc session gets video only: audio codec cannot play in WebRTC", "stream", path, "codec", desc.Tracks[a].Codec)
		case !hasAudio:
			w.log.Info("webrtc session gets video only: offer has no audio", "stream", path)
		default:
			withAudio = true
		}
	}

	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", nil, &offerError{status: http.StatusInternalServerError, reason: "create peer connection", err: err}
	}
	s := &whepSession{id: newSessionID(), path: path, remote: r.RemoteAddr, client: client, query: r.URL.Query(), w: w, pc: pc,
		created: time.Now(), done: make(chan struct{}), opened: make(chan struct{})}
	fail := func(e error) (string, *whepSession, error) {
		_ = pc.Close()
		return "", nil, e
	}
	vsender, err := pc.AddTrack(&sessionTrack{s: s, kind: webrtc.RTPCodecTypeVideo, profile: profile})
	if err != nil {
		return fail(&offerError{status: http.StatusInternalServerError, reason: "add video track", err: err})
	}
	var asender *webrtc.RTPSender
	if withAudio {
		if asender, err = pc.AddTrack(&sessionTrack{s: s, kind: webrtc.RTPCodecTypeAudio}); err != nil {
			return fail(&offerError{status: http.StatusInternalServerError, reason: "add audio track", err: err})
		}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(body)}); err != nil {
		return fail(&offerError{status: http.StatusBadRequest, reason: "unusable SDP offer", err: err})
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(&offerError{status: http.StatusBadRequest, reason: "cannot answer offer", err: err})
	}
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(&offerError{status: http.StatusBadRequest, reason: "cannot answer offer", err: err})
	}
	select {
	case <-gathered:
	case <-r.Context().Done():
		return fail(&offerError{status: http.StatusRequestTimeout, reason: "client went away", err: r.Context().Err()})
	case <-time.After(w.cfg.SessionTimeout):
		return fail(&offerError{status: http.StatusInternalServerError, reason: "ICE gathering did not complete"})
	}
	if s.video.Load() == nil {
		return fail(&offerError{status: http.StatusBadRequest, reason: "offer has no H.264 with packetization-mode=1"})
	}
	s.senders = []*webrtc.RTPSender{vsender}
	if asender != nil {
		s.senders = append(s.senders, asender)
	}
	if err := w.addSession(s); err != nil {
		switch {
		case errors.Is(err, ErrTooManySessions):
			return fail(&offerError{status: http.StatusServiceUnavailable, reason: "node is at its WebRTC session limit"})
		case errors.Is(err, ErrTooManyClientSessions):
			return fail(&offerError{status: http.StatusTooManyRequests, reason: fmt.Sprintf("this client holds %d WebRTC sessions, the most allowed", w.cfg.MaxSessionsPerClient)})
		case errors.Is(err, ErrWebRTCClosed):
			return fail(&offerError{status: http.StatusServiceUnavailable, reason: "webrtc egress not running"})
		}
		return fail(err)
	}
	s.watch()
	w.log.Info("webrtc session started", "stream", path, "session", s.id, "remote", r.RemoteAddr, "audio", withAudio)
	// Registered sessions may be closed from now on; their close hook
	// waits for this one.
	w.sessionOpened(s)
	close(s.opened)
	return pc.LocalDescription().SDP, s, nil
}

// clientHost is the address part of a request's remote address.
func clientHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
