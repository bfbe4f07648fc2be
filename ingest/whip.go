package ingest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/rtcmedia"
	"github.com/gradient-cdn/gradient/media"
)

// whipNACKInterval is how often missing video packets are asked for.
const whipNACKInterval = 20 * time.Millisecond

// MaxWHIPOfferSize bounds a WHIP offer body; a larger one is answered 413.
const MaxWHIPOfferSize = 64 << 10

// WHIPConfig tunes WHIP publishing. DefaultWHIPConfig gives the defaults;
// NewWHIPServer fills the zero fields of a hand-built config from it. It
// is the `whip` section of a node's configuration (WHIP rides on the HTTP
// port and the WebRTC ICE port, so it has no address of its own).
type WHIPConfig struct {
	// MediaTimeout drops a publisher that sends no RTP for this long, or
	// whose video has not produced a decodable keyframe this long after
	// its offer was answered. Default 10s.
	MediaTimeout time.Duration `yaml:"media_timeout"`
	// KeyframeInterval is how often the publisher is asked for a keyframe
	// (RTCP PLI): browsers send one only when asked, and HLS segments and
	// joining viewers need them. Default 2s.
	KeyframeInterval time.Duration `yaml:"keyframe_interval"`
	// MaxSessions bounds the WHIP sessions of the node; an offer beyond
	// is answered 503. Default 64. In a node's configuration 0 turns WHIP
	// off (its URLs answer 404); NewWHIPServer reads 0 as the default.
	MaxSessions int `yaml:"max_sessions"`
	// NACKWait is how long a publisher's video packets that follow a gap
	// in the sequence numbers wait for the missing ones, which are asked
	// for again by RTCP NACK (every 20 ms, browsers and OBS resend them):
	// a gap filled in time is no loss. One still open then is: the access
	// units it touched are dropped and video waits for a keyframe, asked
	// for by PLI. The wait delays video only while a gap is open. Default
	// 150ms (longer than the publisher's round trip); at most 1s; negative
	// turns NACKs off (a gap is a loss at once).
	NACKWait time.Duration `yaml:"nack_wait"`
	// Registerer, if set, receives the WHIP metrics (sessions, refused
	// offers, lost packets).
	Registerer prometheus.Registerer `yaml:"-"`
}

// DefaultWHIPConfig returns the WHIP defaults.
func DefaultWHIPConfig() WHIPConfig {
	return WHIPConfig{MediaTimeout: 10 * time.Second, KeyframeInterval: 2 * time.Second, MaxSessions: 64, NACKWait: 150 * time.Millisecond}
}

// MaxWHIPSessions bounds max_sessions: each session holds a peer
// connection, its goroutines and buffers.
const MaxWHIPSessions = 10000

// Validate checks every field and names a bad one by its YAML key.
// max_sessions 0 is valid (WHIP off, in a node's configuration).
func (c WHIPConfig) Validate() error {
	switch {
	case c.MediaTimeout <= 0:
		return fmt.Errorf("media_timeout: %v must be > 0", c.MediaTimeout)
	case c.KeyframeInterval <= 0:
		return fmt.Errorf("keyframe_interval: %v must be > 0", c.KeyframeInterval)
	case c.KeyframeInterval > c.MediaTimeout:
		return fmt.Errorf("keyframe_interval: %v must not exceed media_timeout (%v): a publisher that sends keyframes only when asked would be dropped first",
			c.KeyframeInterval, c.MediaTimeout)
	case c.MaxSessions < 0 || c.MaxSessions > MaxWHIPSessions:
		return fmt.Errorf("max_sessions: %d must be 0 (WHIP off) to %d", c.MaxSessions, MaxWHIPSessions)
	case c.NACKWait > time.Second:
		return fmt.Errorf("nack_wait: %v must be at most 1s (negative: NACKs off)", c.NACKWait)
	}
	return nil
}

// NewAPIFunc builds a WebRTC API with the given codecs and interceptors on
// the node's shared ICE UDP port (egress.WebRTC.NewAPI).
type NewAPIFunc func(*webrtc.MediaEngine, *interceptor.Registry) (*webrtc.API, error)

// WHIPServer takes WebRTC publishers (WHIP, RFC 9725): H.264 video and
// Opus audio, received on the same ICE UDP port as WHEP viewers, become a
// hub stream. It serves the Router's "/<stream>/whip" URLs.
type WHIPServer struct {
	cfg    WHIPConfig
	hub    *media.Hub
	log    *slog.Logger
	newAPI NewAPIFunc
	// transcode, if set (SetTranscoder), takes publishers that offer VP8
	// or VP9 video and no H.264.
	transcode NewVideoTranscoder

	mu       sync.Mutex
	api      *webrtc.API
	apiVPX   *webrtc.API // VP8 and VP9 with Opus, with cfg.Transcode
	closed   bool
	sessions map[string]*whipSession
	byPath   map[string]*whipSession
	wg       sync.WaitGroup

	lost      atomic.Uint64 // RTP packets found missing, every session
	recovered atomic.Uint64 // video packets that filled a gap in time

	mSessions prometheus.GaugeFunc
	mRejected *prometheus.CounterVec
	mLost     prometheus.CounterFunc
	mRecov    prometheus.CounterFunc
}

// NewWHIPServer returns a WHIP ingest publishing into hub, or the config's
// error. newAPI gives it the shared WebRTC API once Start is called.
func NewWHIPServer(cfg WHIPConfig, hub *media.Hub, newAPI NewAPIFunc, log *slog.Logger) (*WHIPServer, error) {
	defaults.Fill(&cfg, DefaultWHIPConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("whip: %w", err)
	}
	if hub == nil || newAPI == nil {
		return nil, errors.New("whip: nil hub or API constructor")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &WHIPServer{cfg: cfg, hub: hub, log: log.With("component", "whip"), newAPI: newAPI,
		sessions: map[string]*whipSession{}, byPath: map[string]*whipSession{}}
	s.mSessions = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gradient_whip_sessions", Help: "Current WHIP (WebRTC publish) sessions, connected or connecting.",
	}, func() float64 { return float64(s.Sessions()) })
	s.mRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gradient_whip_rejected_offers_total", Help: "WHIP offers refused, by HTTP status.",
	}, []string{"status"})
	s.mLost = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gradient_whip_lost_packets_total", Help: "RTP packets of WHIP publishers lost for good (not recovered by NACK in nack_wait; video then waits for a keyframe).",
	}, func() float64 { return float64(s.LostPackets()) })
	s.mRecov = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gradient_whip_recovered_packets_total", Help: "Video packets of WHIP publishers that arrived after a gap had opened before them, in time to fill it (retransmitted after a NACK, or reordered).",
	}, func() float64 { return float64(s.RecoveredPackets()) })
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.mSessions, s.mRejected, s.mLost, s.mRecov} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("whip metrics: %w", err)
			}
		}
	}
	return s, nil
}

// whipH264Profiles are the H.264 profiles received (profile_idc and
// constraints; any level): constrained baseline, baseline, main, high and
// constrained high, as browsers offer them.
var whipH264Profiles = []string{"42e01f", "42001f", "4d001f", "64001f", "640c1f"}

// SetTranscoder, called before Start, makes the server take publishers
// that offer VP8 or VP9 video and no H.264 (a browser without an H.264
// encoder): newTranscoder makes their video H.264 on this node (a node
// gives serverlet.NewIngestTranscoder). Without it such offers are
// answered 406, naming the codecs offered.
func (s *WHIPServer) SetTranscoder(newTranscoder NewVideoTranscoder) { s.transcode = newTranscoder }

// Start builds the WebRTC API (after the WHEP egress started).
func (s *WHIPServer) Start() error {
	api, err := s.buildAPI(func(me *webrtc.MediaEngine, fb []webrtc.RTCPFeedback) error {
		return rtcmedia.RegisterH264Opus(me, whipH264Profiles, fb)
	})
	if err != nil {
		return err
	}
	var apiVPX *webrtc.API
	if s.transcode != nil {
		// A second API for offers without H.264: given both, pion would
		// answer with the offer's first codec, and browsers list VP8
		// before H.264.
		if apiVPX, err = s.buildAPI(rtcmedia.RegisterVPXOpus); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.api, s.apiVPX = api, apiVPX
	s.mu.Unlock()
	s.log.Info("whip ingest ready", "transcodes", map[bool]string{true: "VP8, VP9 to H.264", false: "none"}[apiVPX != nil])
	return nil
}

// buildAPI builds a WebRTC API whose codecs register registers, with
// the RTCP feedback and interceptors WHIP ingest uses.
func (s *WHIPServer) buildAPI(register func(*webrtc.MediaEngine, []webrtc.RTCPFeedback) error) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	if s.cfg.NACKWait > 0 {
		fb = append(fb, webrtc.RTCPFeedback{Type: "nack"})
	}
	if err := register(me, fb); err != nil {
		return nil, fmt.Errorf("whip: %w", err)
	}
	// Receiver reports and transport-wide congestion control feedback, so
	// that a browser's bandwidth estimate follows the path; NACKs for
	// video's missing packets, while they may still fill their gap
	// (readTrack).
	ir := &interceptor.Registry{}
	if s.cfg.NACKWait > 0 {
		gen, err := nack.NewGeneratorInterceptor(nack.GeneratorInterval(whipNACKInterval),
			nack.GeneratorMaxNacksPerPacket(uint16(s.cfg.NACKWait/whipNACKInterval)+1))
		if err != nil {
			return nil, fmt.Errorf("whip: NACK generator: %w", err)
		}
		ir.Add(gen)
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, fmt.Errorf("whip: RTCP reports: %w", err)
	}
	if err := webrtc.ConfigureTWCCSender(me, ir); err != nil {
		return nil, fmt.Errorf("whip: TWCC: %w", err)
	}
	api, err := s.newAPI(me, ir)
	if err != nil {
		return nil, fmt.Errorf("whip: %w", err)
	}
	return api, nil
}

// Close ends every WHIP session (their streams end).
func (s *WHIPServer) Close() error {
	s.mu.Lock()
	s.closed = true
	list := make([]*whipSession, 0, len(s.sessions))
	for _, x := range s.sessions {
		list = append(list, x)
	}
	s.mu.Unlock()
	for _, x := range list {
		x.close(errors.New("whip ingest closed"))
	}
	s.wg.Wait()
	return nil
}

// Sessions is the number of WHIP sessions, connected or connecting.
func (s *WHIPServer) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// LostPackets counts the RTP packets of every session found missing (by
// their sequence numbers) and not recovered in nack_wait, since the start.
func (s *WHIPServer) LostPackets() uint64 { return s.lost.Load() }

// RecoveredPackets counts the video packets that arrived after a gap had
// opened before them and filled it in time (retransmissions asked for by
// NACK, or packets reordered on the way).
func (s *WHIPServer) RecoveredPackets() uint64 { return s.recovered.Load() }

// whipError is a refused offer: status and reason, logged and sent.
type whipError struct {
	status int
	reason string
}

func (e *whipError) Error() string { return e.reason }

func refuse(status int, format string, args ...any) *whipError {
	return &whipError{status: status, reason: fmt.Sprintf(format, args...)}
}

// ServeStream implements the Router's StreamHandler for WHIP:
//
//	POST    /<stream>/whip       SDP offer → 201 with the SDP answer and
//	                             Location /<stream>/whip/<session>
//	DELETE  /<stream>/whip/<id>  ends the session and unpublishes the stream
//	PATCH   /<stream>/whip/<id>  405: the offer must carry every candidate
//	OPTIONS                      CORS preflight
func (s *WHIPServer) ServeStream(rw http.ResponseWriter, r *http.Request, path, rest string) {
	h := rw.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "OPTIONS, POST, PATCH, DELETE")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, ETag, Accept-Post")
	if rest == "whip" {
		switch r.Method {
		case http.MethodOptions:
			h.Set("Allow", "OPTIONS, POST")
			h.Set("Accept-Post", "application/sdp")
			rw.WriteHeader(http.StatusNoContent)
		case http.MethodPost:
			s.serveOffer(rw, r, path)
		default:
			h.Set("Allow", "OPTIONS, POST")
			http.Error(rw, fmt.Sprintf("method %s not allowed on a WHIP endpoint; POST an SDP offer", r.Method), http.StatusMethodNotAllowed)
		}
		return
	}
	id, ok := strings.CutPrefix(rest, "whip/")
	if !ok {
		http.NotFound(rw, r)
		return
	}
	h.Set("Allow", "OPTIONS, DELETE")
	if r.Method == http.MethodOptions {
		rw.WriteHeader(http.StatusNoContent)
		return
	}
	s.mu.Lock()
	x := s.sessions[id]
	s.mu.Unlock()
	if x == nil || x.path != path {
		http.Error(rw, "no such WHIP session", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodDelete:
		x.close(errors.New("publisher deleted the session"))
		rw.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		http.Error(rw, "trickle ICE and ICE restarts are not supported: send a new offer with all candidates", http.StatusMethodNotAllowed)
	default:
		http.Error(rw, fmt.Sprintf("method %s not allowed on a WHIP session", r.Method), http.StatusMethodNotAllowed)
	}
}

func (s *WHIPServer) serveOffer(rw http.ResponseWriter, r *http.Request, path string) {
	answer, x, err := s.acceptOffer(rw, r, path)
	if err != nil {
		var we *whipError
		if !errors.As(err, &we) {
			we = &whipError{status: http.StatusInternalServerError, reason: err.Error()}
		}
		if we.status == http.StatusServiceUnavailable {
			rw.Header().Set("Retry-After", "5")
		}
		s.mRejected.WithLabelValues(strconv.Itoa(we.status)).Inc()
		s.log.Info("rejected whip offer", "stream", path, "remote", r.RemoteAddr, "status", we.status, "reason", we.reason)
		http.Error(rw, we.reason, we.status)
		return
	}
	rw.Header().Set("Content-Type", "application/sdp")
	rw.Header().Set("Location", "/"+path+"/whip/"+x.id)
	rw.Header().Set("ETag", `"`+x.id+`"`)
	rw.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(rw, answer)
}

// offerCodecs are the codecs an offer's media sections list.
type offerCodecs struct {
	video, audio []string // codec names as offered, e.g. "VP8", "H264", "opus"
	h264, opus   bool
	vpx          bool // VP8 or VP9 video offered
}

// parseOffer checks that body is an SDP offer with H.264 video.
func parseOffer(body []byte) (offerCodecs, *whipError) {
	var oc offerCodecs
	if len(strings.TrimSpace(string(body))) == 0 {
		return oc, refuse(http.StatusBadRequest, "empty offer: POST an SDP offer")
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(string(body)); err != nil {
		return oc, refuse(http.StatusBadRequest, "malformed SDP offer: %v", err)
	}
	seen := map[string]bool{}
	for _, m := range sd.MediaDescriptions {
		kind := m.MediaName.Media
		if kind != "video" && kind != "audio" {
			continue
		}
		for _, a := range m.Attributes {
			if a.Key != "rtpmap" {
				continue
			}
			// "96 VP8/90000"
			_, enc, ok := strings.Cut(a.Value, " ")
			if !ok {
				continue
			}
			name, _, _ := strings.Cut(enc, "/")
			if !seen[kind+name] {
				seen[kind+name] = true
				if kind == "video" {
					oc.video = append(oc.video, name)
				} else {
					oc.audio = append(oc.audio, name)
				}
			}
			switch {
			case kind == "video" && strings.EqualFold(name, "H264"):
				oc.h264 = true
			case kind == "video" && (strings.EqualFold(name, "VP8") || strings.EqualFold(name, "VP9")):
				oc.vpx = true
			case kind == "audio" && strings.EqualFold(name, "opus"):
				oc.opus = true
			}
		}
	}
	if len(oc.video) == 0 {
		return oc, refuse(http.StatusBadRequest, "offer has no video media section with codecs: WHIP publishing needs H.264 video")
	}
	if !oc.h264 {
		var media []string
		for _, c := range oc.video {
			if !isRTPHelper(c) {
				media = append(media, c)
			}
		}
		sort.Strings(media)
		return oc, refuse(http.StatusNotAcceptable, "offer's video codecs %s are not carried: WHIP publishing takes H.264 video (packetization-mode=1) with Opus audio",
			strings.Join(media, ", "))
	}
	return oc, nil
}

// isRTPHelper tells the codec names that are no media codec of their own.
func isRTPHelper(name string) bool {
	switch strings.ToLower(name) {
	case "rtx", "red", "ulpfec", "flexfec-03", "telephone-event", "cn":
		return true
	}
	return false
}

// answerHas tells whether the answer accepted a media section of kind
// with codec (its port is not 0 and it lists the codec).
func answerHas(answer, kind, codec string) bool {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(answer); err != nil {
		return false
	}
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != kind || m.MediaName.Port.Value == 0 {
			continue
		}
		for _, a := range m.Attributes {
			if a.Key == "rtpmap" && strings.Contains(strings.ToLower(a.Value), " "+strings.ToLower(codec)+"/") {
				return true
			}
		}
	}
	return false
}

func (s *WHIPServer) acceptOffer(rw http.ResponseWriter, r *http.Request, path string) (string, *whipSession, error) {
	s.mu.Lock()
	api, apiVPX, closed := s.api, s.apiVPX, s.closed
	s.mu.Unlock()
	if api == nil || closed {
		return "", nil, refuse(http.StatusServiceUnavailable, "whip ingest not running")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/sdp" {
			return "", nil, refuse(http.StatusUnsupportedMediaType, "content type %q is not application/sdp", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxWHIPOfferSize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", nil, refuse(http.StatusRequestEntityTooLarge, "offer larger than %d bytes", MaxWHIPOfferSize)
		}
		return "", nil, refuse(http.StatusBadRequest, "read offer: %v", err)
	}
	if _, rendition, err := media.ParsePath(path); err != nil {
		return "", nil, refuse(http.StatusBadRequest, "%v", err)
	} else if rendition != "" {
		// Renditions ("live/cam1@360p") are made inside the network.
		return "", nil, refuse(http.StatusBadRequest, "publishing a rendition is not allowed: publish the source stream")
	}
	oc, we := parseOffer(body)
	transcode := we != nil && we.status == http.StatusNotAcceptable && oc.vpx && apiVPX != nil
	switch {
	case transcode:
		api = apiVPX // no H.264 offered: VP8 or VP9, made H.264 here
	case we != nil && we.status == http.StatusNotAcceptable && apiVPX != nil:
		return "", nil, refuse(http.StatusNotAcceptable, "%s (or VP8 or VP9, transcoded to H.264 here)", we.reason)
	case we != nil:
		return "", nil, we
	}
	if _, live := s.hub.Lookup(path); live {
		return "", nil, refuse(http.StatusConflict, "stream %s is already being published", path)
	}

	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", nil, refuse(http.StatusInternalServerError, "create peer connection: %v", err)
	}
	x := newWHIPSession(s, path, r.RemoteAddr, pc)
	fail := func(e error) (string, *whipSession, error) {
		_ = pc.Close()
		return "", nil, e
	}
	pc.OnTrack(x.onTrack)
	pc.OnConnectionStateChange(x.onState)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(body)}); err != nil {
		return fail(refuse(http.StatusBadRequest, "unusable SDP offer: %v", err))
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fail(refuse(http.StatusBadRequest, "cannot answer offer: %v", err))
	}
	if err := pc.SetLocalDescription(answer); err != nil {
		return fail(refuse(http.StatusBadRequest, "cannot answer offer: %v", err))
	}
	select {
	case <-gathered:
	case <-r.Context().Done():
		return fail(refuse(http.StatusRequestTimeout, "client went away"))
	case <-time.After(10 * time.Second):
		return fail(refuse(http.StatusInternalServerError, "ICE gathering did not complete"))
	}
	sdpAnswer := pc.LocalDescription().SDP
	if transcode {
		if !answerHas(sdpAnswer, "video", "VP8") && !answerHas(sdpAnswer, "video", "VP9") {
			return fail(refuse(http.StatusNotAcceptable, "offer's video codecs %s cannot be received: WHIP publishing takes H.264, or VP8 or VP9 made H.264 here",
				strings.Join(oc.video, ", ")))
		}
	} else if !answerHas(sdpAnswer, "video", "H264") {
		return fail(refuse(http.StatusNotAcceptable, "offer's H.264 (%s) cannot be received: WHIP publishing takes H.264 with packetization-mode=1 in a profile of %s",
			strings.Join(oc.video, ", "), strings.Join(whipH264Profiles, ", ")))
	}
	withAudio := answerHas(sdpAnswer, "audio", "opus")
	if len(oc.audio) > 0 && !withAudio {
		s.log.Info("whip publisher's audio is not carried: only Opus is", "stream", path, "offered", oc.audio)
	}
	if err := x.prepare(withAudio); err != nil {
		return fail(refuse(http.StatusInternalServerError, "prepare depacketizer: %v", err))
	}

	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fail(refuse(http.StatusServiceUnavailable, "whip ingest not running"))
	case s.byPath[path] != nil:
		s.mu.Unlock()
		return fail(refuse(http.StatusConflict, "stream %s is already being published", path))
	case len(s.sessions) >= s.cfg.MaxSessions:
		s.mu.Unlock()
		return fail(refuse(http.StatusServiceUnavailable, "node is at its WHIP session limit (%d)", s.cfg.MaxSessions))
	}
	s.sessions[x.id] = x
	s.byPath[path] = x
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		x.watch()
	}()
	s.log.Info("whip session started", "stream", path, "session", x.id, "remote", r.RemoteAddr, "audio", withAudio, "transcode", transcode)
	return sdpAnswer, x, nil
}

// remove unregisters x.
func (s *WHIPServer) remove(x *whipSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[x.id] == x {
		delete(s.sessions, x.id)
	}
	if s.byPath[x.path] == x {
		delete(s.byPath, x.path)
	}
}

func newWHIPID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
