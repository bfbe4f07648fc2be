package egress

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/rtcmedia"
	"github.com/gradient-cdn/gradient/media"
)

// ErrTooManySessions is returned when MaxSessions is reached.
var ErrTooManySessions = errors.New("too many WebRTC sessions")

// ErrTooManyClientSessions is returned when a client address holds
// MaxSessionsPerClient sessions.
var ErrTooManyClientSessions = errors.New("too many WebRTC sessions from this client")

// WebRTC serves streams to WebRTC viewers over WHEP. Per stream path it
// holds one hub reader and packetizes every access unit once; the same RTP
// packets are then written to every session of the stream (each with its
// own SSRC, payload type and SRTP context). All sessions share one UDP
// port (ICE UDP mux) and the node is an ICE-lite agent.
type WebRTC struct {
	cfg WebRTCConfig
	hub *media.Hub
	log *slog.Logger

	conn *batchConn
	mux  ice.UDPMux
	api  *webrtc.API
	se   webrtc.SettingEngine // the api's settings, shared by NewAPI (WHIP)

	mu       sync.Mutex
	started  bool
	closed   bool
	sessions map[string]*whepSession
	feeds    map[string]*feed
	wg       sync.WaitGroup // feed and RTCP reader goroutines
	closing  sync.WaitGroup // sessions removed whose close hook has not returned

	mSessions prometheus.Gauge
	mLatency  prometheus.Histogram
	mRejected *prometheus.CounterVec

	mGSOMessages, mGSOPackets prometheus.Counter
	mNACKDropped              prometheus.Counter

	latMu   sync.Mutex
	latRing []time.Duration
	latNext int
	latFull bool
}

// NewWebRTC returns a WHEP egress reading from hub, or the config's error.
// It does no I/O: Start binds its port. log may be nil (slog.Default()).
func NewWebRTC(cfg WebRTCConfig, hub *media.Hub, log *slog.Logger) (*WebRTC, error) {
	defaults.Fill(&cfg, DefaultWebRTCConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webrtc egress: %w", err)
	}
	if hub == nil {
		return nil, errors.New("webrtc egress: nil hub")
	}
	if log == nil {
		log = slog.Default()
	}
	w := &WebRTC{
		cfg:      cfg,
		hub:      hub,
		log:      log.With("component", "webrtc"),
		sessions: map[string]*whepSession{},
		feeds:    map[string]*feed{},
		latRing:  make([]time.Duration, cfg.LatencySamples),
	}
	w.mSessions = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gradient_webrtc_sessions", Help: "Current WebRTC (WHEP) sessions, connected or connecting.",
	})
	w.mLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gradient_webrtc_egress_latency_seconds",
		Help:    "Time from a video access unit's arrival at the node to the write of its last RTP packet to every WebRTC session of the stream.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	})
	w.mRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gradient_webrtc_rejected_offers_total", Help: "WHEP offers refused, by HTTP status.",
	}, []string{"status"})
	w.mGSOMessages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gradient_webrtc_gso_messages_total",
		Help: "UDP GSO messages sent to WebRTC sessions: runs of RTP packets to one session that the kernel segments.",
	})
	w.mGSOPackets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gradient_webrtc_gso_packets_total", Help: "Datagrams sent to WebRTC sessions inside UDP GSO messages.",
	})
	w.mNACKDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gradient_webrtc_nack_dropped_total",
		Help: "Packets NACKed by WebRTC sessions and not resent: over the session's webrtc.retransmit_rate.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.mSessions, w.mLatency, w.mRejected, w.mGSOMessages, w.mGSOPackets, w.mNACKDropped} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("webrtc egress metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Start binds the ICE UDP port and builds the WebRTC API.
func (w *WebRTC) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.New("webrtc egress: closed")
	}
	if w.started {
		return errors.New("webrtc egress: already started")
	}
	laddr, err := net.ResolveUDPAddr("udp", w.cfg.ICEUDPAddr)
	if err != nil {
		return fmt.Errorf("webrtc egress: ICE UDP address %q: %w", w.cfg.ICEUDPAddr, err)
	}
	uc, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return fmt.Errorf("webrtc egress: listen %s: %w", w.cfg.ICEUDPAddr, err)
	}
	conn := newBatchConn(uc, w.cfg.GSO, w.log, w.mGSOMessages, w.mGSOPackets)
	lf := pionLogs{w.log}
	mux := webrtc.NewICEUDPMux(lf.NewLogger("ice-mux"), conn)
	se, err := w.settingEngine(conn, mux, lf)
	if err != nil {
		_ = mux.Close()
		_ = conn.Close()
		return err
	}
	api, err := w.newAPI(se)
	if err != nil {
		_ = mux.Close()
		_ = conn.Close()
		return err
	}
	w.conn, w.mux, w.api, w.se, w.started = conn, mux, api, se, true
	w.log.Info("webrtc egress listening", "ice_udp", conn.LocalAddr().String(), "advertise", w.cfg.AdvertiseIPs)
	return nil
}

// Addr is the bound ICE UDP address (nil before Start).
func (w *WebRTC) Addr() net.Addr {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn == nil {
		return nil
	}
	return w.conn.LocalAddr()
}

// H.264 profiles answered; the payload type is the one the offer uses.
var h264Profiles = []string{"42e01f", "42001f", "4d001f", "64001f"}

func (w *WebRTC) newAPI(se webrtc.SettingEngine) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	if err := rtcmedia.RegisterH264Opus(me, h264Profiles, fb); err != nil {
		return nil, fmt.Errorf("webrtc egress: %w", err)
	}

	// Only RTCP sender reports (for A/V sync); NACKs are answered from the
	// stream's shared packet ring rather than a per-session buffer.
	ir := &interceptor.Registry{}
	sr, err := report.NewSenderInterceptor()
	if err != nil {
		return nil, fmt.Errorf("webrtc egress: sender reports: %w", err)
	}
	ir.Add(sr)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// settingEngine is the ICE and DTLS setup of every PeerConnection on the
// node's one ICE UDP port: WHEP's and WHIP's (NewAPI).
func (w *WebRTC) settingEngine(conn *batchConn, mux ice.UDPMux, lf logging.LoggerFactory) (webrtc.SettingEngine, error) {
	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEUDPMux(mux)
	se.SetLite(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	se.SetICETimeouts(w.cfg.SessionTimeout/2, w.cfg.SessionTimeout/2, 2*time.Second)
	if ip, ok := conn.LocalAddr().(*net.UDPAddr); ok && ip.IP.IsLoopback() {
		se.SetIncludeLoopbackCandidate(true)
	}
	if len(w.cfg.AdvertiseIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        w.cfg.AdvertiseIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			return se, fmt.Errorf("webrtc egress: advertise IPs: %w", err)
		}
	}
	return se, nil
}

// NewAPI builds a WebRTC API with its own codecs and interceptors whose
// PeerConnections share the WHEP egress's ICE UDP port and ICE/DTLS
// settings: WHIP ingest receives on the same port. It fails before Start
// and after Close.
func (w *WebRTC) NewAPI(me *webrtc.MediaEngine, ir *interceptor.Registry) (*webrtc.API, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started || w.closed {
		return nil, errors.New("webrtc egress not running")
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(w.se)), nil
}

// Sessions is the number of current sessions, connected or connecting.
func (w *WebRTC) Sessions() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sessions)
}

// EgressLatency returns the recent egress latency samples, oldest first:
// per video access unit, the time from its arrival at the node
// (Unit.Received) to the write of its last RTP packet to every session.
func (w *WebRTC) EgressLatency() []time.Duration {
	w.latMu.Lock()
	defer w.latMu.Unlock()
	if !w.latFull {
		return append([]time.Duration(nil), w.latRing[:w.latNext]...)
	}
	out := make([]time.Duration, 0, len(w.latRing))
	out = append(out, w.latRing[w.latNext:]...)
	return append(out, w.latRing[:w.latNext]...)
}

func (w *WebRTC) recordLatency(received, sent time.Time) {
	if received.IsZero() {
		return
	}
	d := sent.Sub(received)
	w.latMu.Lock()
	w.latRing[w.latNext] = d
	w.latNext++
	if w.latNext == len(w.latRing) {
		w.latNext, w.latFull = 0, true
	}
	w.latMu.Unlock()
	w.mLatency.Observe(d.Seconds())
	if w.cfg.OnVideoSent != nil {
		w.cfg.OnVideoSent(received, sent)
	}
}

// Close ends every session and stream reader and releases the UDP port.
func (w *WebRTC) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	sessions := make([]*whepSession, 0, len(w.sessions))
	for _, s := range w.sessions {
		sessions = append(sessions, s)
	}
	w.mu.Unlock()
	for _, s := range sessions {
		s.close(ErrWebRTCClosed)
	}
	w.mu.Lock()
	for _, f := range w.feeds {
		f.stop()
	}
	w.feeds = map[string]*feed{}
	w.mu.Unlock()
	w.wg.Wait()
	w.closing.Wait() // hooks of sessions that ended on their own meanwhile
	var err error
	if w.mux != nil {
		err = w.mux.Close()
	}
	if w.conn != nil {
		_ = w.conn.Close()
	}
	return err
}

// addSession registers s with the feed of its stream, creating the feed
// (one hub reader) when s is its first session.
func (w *WebRTC) addSession(s *whepSession) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrWebRTCClosed
	}
	if len(w.sessions) >= w.cfg.MaxSessions {
		return ErrTooManySessions
	}
	if w.clientSessionsLocked(s.client) >= w.cfg.MaxSessionsPerClient {
		return ErrTooManyClientSessions
	}
	f, ok := w.feeds[s.path]
	if ok {
		// A feed still draining a stream that ended (and may have been
		// published again) must not take new sessions.
		if st, live := w.hub.Lookup(s.path); !live || st != f.reader.Stream() {
			delete(w.feeds, s.path)
			ok = false
		}
	}
	if !ok {
		r, err := w.hub.Subscribe(s.path, "webrtc")
		if err != nil {
			return err
		}
		f = newFeed(w, s.path, r)
		w.feeds[s.path] = f
		w.wg.Add(1)
		go f.run()
	}
	s.feed = f
	f.add(s)
	w.sessions[s.id] = s
	w.mSessions.Set(float64(len(w.sessions)))
	for i, sender := range s.senders {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			s.readRTCP(sender, i == 0)
		}()
	}
	return nil
}

// clientSessions counts the sessions of a client address.
func (w *WebRTC) clientSessions(client string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clientSessionsLocked(client)
}

func (w *WebRTC) clientSessionsLocked(client string) int {
	n := 0
	for _, x := range w.sessions {
		if x.client == client {
			n++
		}
	}
	return n
}

// removeSession unregisters s; the last session of a stream stops its feed.
// When it removes s it counts s in w.closing, which the caller marks done
// once the close hook returned, so that Close waits for every hook.
func (w *WebRTC) removeSession(s *whepSession) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sessions[s.id] != s {
		return false
	}
	w.closing.Add(1)
	delete(w.sessions, s.id)
	w.mSessions.Set(float64(len(w.sessions)))
	f := s.feed
	if f != nil && f.remove(s) == 0 {
		if w.feeds[f.path] == f {
			delete(w.feeds, f.path)
		}
		f.stop()
	}
	return true
}

// feedEnded is called by a feed whose stream ended: its sessions close.
func (w *WebRTC) feedEnded(f *feed) {
	w.mu.Lock()
	if w.feeds[f.path] == f {
		delete(w.feeds, f.path)
	}
	w.mu.Unlock()
	for _, s := range f.list() {
		s.close(ErrSessionStreamEnded)
	}
}

// HasSession tells whether the WHEP session id (the last element of its
// Location) is still open, connected or connecting.
func (w *WebRTC) HasSession(id string) bool {
	return w.session(id) != nil
}

func (w *WebRTC) session(id string) *whepSession {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sessions[id]
}
