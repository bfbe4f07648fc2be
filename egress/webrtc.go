package egress

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv6"

	"github.com/gradient-cdn/gradient/media"
)

// WebRTCConfig configures the WebRTC (WHEP) egress. The zero value is
// usable; see the field defaults.
type WebRTCConfig struct {
	// ICEUDPAddr is the one UDP address every WebRTC session shares (ICE
	// UDP mux). Default ":8189". Use "127.0.0.1:0" in tests.
	ICEUDPAddr string

	// AdvertiseIPs are the IPs put into the host ICE candidates instead of
	// the bound interfaces' addresses (1:1 NAT, e.g. a cloud VM's public
	// IP). Default: the addresses of the bound interface(s).
	AdvertiseIPs []string

	// SessionTimeout bounds how long a session may take to connect after
	// its answer, and how long a connected session may stay unreachable
	// before it is removed. Default 10 s.
	SessionTimeout time.Duration

	// MaxSessions caps the concurrent sessions of this node; an offer
	// beyond it is answered 503. Default 2000.
	MaxSessions int

	// PayloadMaxSize is the largest RTP payload sent, in bytes. Default 1200,
	// which fits common tunnels and VPNs.
	PayloadMaxSize int

	// RetransmitPackets is how many recent video RTP packets per stream are
	// kept to answer NACKs. They are shared by every session of the stream.
	// Default 512 (about 2 s at 2 Mbps).
	RetransmitPackets int

	// LatencySamples is the size of the ring of egress latency samples
	// returned by EgressLatency. Default 4096.
	LatencySamples int

	// OnVideoSent, if set, is called for every video access unit once its
	// last RTP packet was written to every session of the stream, with the
	// time the node received the unit and the time of that write. It runs
	// on the stream's send goroutine and must not block.
	OnVideoSent func(received, sent time.Time)

	// DisableGSO turns UDP generic segmentation offload off. By default
	// (Linux) the RTP packets of one access unit to one session leave in
	// one UDP_SEGMENT message that the kernel cuts into datagrams late in
	// its send path; GSO turns itself off if the kernel refuses it.
	DisableGSO bool

	// Registerer, if set, receives the component's Prometheus metrics:
	// gradient_webrtc_sessions, gradient_webrtc_egress_latency_seconds,
	// gradient_webrtc_rejected_offers_total, gradient_webrtc_gso_messages_total
	// and gradient_webrtc_gso_packets_total.
	Registerer prometheus.Registerer

	// Logger receives the log lines. Default slog.Default().
	Logger *slog.Logger
}

func (c WebRTCConfig) withDefaults() WebRTCConfig {
	if c.ICEUDPAddr == "" {
		c.ICEUDPAddr = ":8189"
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 2000
	}
	if c.PayloadMaxSize <= 0 {
		c.PayloadMaxSize = 1200
	}
	if c.RetransmitPackets <= 0 {
		c.RetransmitPackets = 512
	}
	if c.LatencySamples <= 0 {
		c.LatencySamples = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// ErrTooManySessions is returned when MaxSessions is reached.
var ErrTooManySessions = errors.New("too many WebRTC sessions")

var errEgressClosed = errors.New("webrtc egress closed")

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

	mu       sync.Mutex
	started  bool
	closed   bool
	sessions map[string]*whepSession
	feeds    map[string]*feed
	wg       sync.WaitGroup // feed and RTCP reader goroutines

	mSessions prometheus.Gauge
	mLatency  prometheus.Histogram
	mRejected *prometheus.CounterVec

	mGSOMessages, mGSOPackets prometheus.Counter

	latMu   sync.Mutex
	latRing []time.Duration
	latNext int
	latFull bool
}

// NewWebRTC returns a WHEP egress reading from hub. Start binds its port.
func NewWebRTC(cfg WebRTCConfig, hub *media.Hub, log *slog.Logger) (*WebRTC, error) {
	cfg = cfg.withDefaults()
	if hub == nil {
		return nil, errors.New("webrtc egress: nil hub")
	}
	if log == nil {
		log = cfg.Logger
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
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.mSessions, w.mLatency, w.mRejected, w.mGSOMessages, w.mGSOPackets} {
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
	conn := newBatchConn(uc, !w.cfg.DisableGSO, w.log, w.mGSOMessages, w.mGSOPackets)
	lf := pionLogs{w.log}
	mux := webrtc.NewICEUDPMux(lf.NewLogger("ice-mux"), conn)
	api, err := w.newAPI(conn, mux, lf)
	if err != nil {
		_ = mux.Close()
		_ = conn.Close()
		return err
	}
	w.conn, w.mux, w.api, w.started = conn, mux, api, true
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

func (w *WebRTC) newAPI(conn *batchConn, mux ice.UDPMux, lf logging.LoggerFactory) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for i, p := range h264Profiles {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p,
				RTCPFeedback: fb,
			},
			PayloadType: webrtc.PayloadType(102 + 2*i),
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("webrtc egress: register H264: %w", err)
		}
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
		},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("webrtc egress: register Opus: %w", err)
	}

	// Only RTCP sender reports (for A/V sync); NACKs are answered from the
	// stream's shared packet ring rather than a per-session buffer.
	ir := &interceptor.Registry{}
	sr, err := report.NewSenderInterceptor()
	if err != nil {
		return nil, fmt.Errorf("webrtc egress: sender reports: %w", err)
	}
	ir.Add(sr)

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
			return nil, fmt.Errorf("webrtc egress: advertise IPs: %w", err)
		}
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
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
		s.close("egress closed")
	}
	w.mu.Lock()
	for _, f := range w.feeds {
		f.stop()
	}
	w.feeds = map[string]*feed{}
	w.mu.Unlock()
	w.wg.Wait()
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
		return errEgressClosed
	}
	if len(w.sessions) >= w.cfg.MaxSessions {
		return ErrTooManySessions
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

// removeSession unregisters s; the last session of a stream stops its feed.
func (w *WebRTC) removeSession(s *whepSession) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sessions[s.id] != s {
		return
	}
	delete(w.sessions, s.id)
	w.mSessions.Set(float64(len(w.sessions)))
	f := s.feed
	if f != nil && f.remove(s) == 0 {
		if w.feeds[f.path] == f {
			delete(w.feeds, f.path)
		}
		f.stop()
	}
}

// feedEnded is called by a feed whose stream ended: its sessions close.
func (w *WebRTC) feedEnded(f *feed) {
	w.mu.Lock()
	if w.feeds[f.path] == f {
		delete(w.feeds, f.path)
	}
	w.mu.Unlock()
	for _, s := range f.list() {
		s.close("stream ended")
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

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// whepSession is one viewer's PeerConnection.
type whepSession struct {
	id     string
	path   string
	remote string
	w      *WebRTC
	pc     *webrtc.PeerConnection
	feed   *feed // set by addSession, before the feed sees the session

	senders []*webrtc.RTPSender // video first, then audio if sent

	video, audio atomic.Pointer[binding]
	ready        atomic.Bool // connected: the feed writes to it
	waitKey      bool        // owned by the feed goroutine
	created      time.Time

	closeOnce sync.Once
	done      chan struct{}
}

// binding is a negotiated outgoing RTP stream of a session.
type binding struct {
	ssrc uint32
	pt   uint8
	ws   webrtc.TrackLocalWriter
}

func (s *whepSession) close(reason string) {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ready.Store(false)
		s.w.removeSession(s)
		_ = s.pc.Close()
		s.w.log.Info("webrtc session closed", "stream", s.path, "session", s.id, "remote", s.remote,
			"reason", reason, "duration", time.Since(s.created).Round(time.Millisecond))
	})
}

// watch follows the connection state: the session becomes ready when
// connected, and is removed when it fails, closes or does not connect in
// time.
func (s *whepSession) watch() {
	timer := time.AfterFunc(s.w.cfg.SessionTimeout, func() {
		if !s.ready.Load() {
			s.close("not connected within session timeout")
		}
	})
	s.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			timer.Stop()
			select {
			case <-s.done:
			default:
				s.ready.Store(true)
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			timer.Stop()
			go s.close("connection " + st.String())
		}
	})
}

// readRTCP consumes a sender's RTCP (so that interceptors see reports)
// and answers NACKs from the feed's packet ring. It ends when the
// PeerConnection closes.
func (s *whepSession) readRTCP(sender *webrtc.RTPSender, video bool) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		if !video {
			continue
		}
		for _, p := range pkts {
			if n, ok := p.(interface{ PacketList() []uint16 }); ok {
				if b := s.video.Load(); b != nil && s.feed != nil {
					s.feed.retransmit(b, n.PacketList())
				}
			}
		}
	}
}

// sessionTrack is the TrackLocal of one session; binding hands the
// negotiated SSRC, payload type and writer to the session, and the feed
// writes the shared packets through it.
type sessionTrack struct {
	s       *whepSession
	kind    webrtc.RTPCodecType
	profile string // H.264 profile_idc of the stream, as 2 hex digits
}

func (t *sessionTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	c, ok := t.pick(ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), ws: ctx.WriteStream()}
	if t.kind == webrtc.RTPCodecTypeVideo {
		t.s.video.Store(b)
	} else {
		t.s.audio.Store(b)
	}
	return c, nil
}

// pick chooses the negotiated codec: H.264 with packetization-mode=1,
// the stream's own profile if offered, else constrained baseline, else any;
// Opus for audio.
func (t *sessionTrack) pick(cs []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	if t.kind == webrtc.RTPCodecTypeAudio {
		for _, c := range cs {
			if strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus) {
				return c, true
			}
		}
		return webrtc.RTPCodecParameters{}, false
	}
	best, score := webrtc.RTPCodecParameters{}, 0
	for _, c := range cs {
		if !strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) {
			continue
		}
		f := strings.ToLower(c.SDPFmtpLine)
		if !strings.Contains(f, "packetization-mode=1") {
			continue
		}
		sc := 1
		if i := strings.Index(f, "profile-level-id="); i >= 0 && len(f) >= i+17+6 {
			pl := f[i+17 : i+17+6]
			switch {
			case t.profile != "" && pl[:2] == t.profile:
				sc = 3
			case pl[:4] == "42e0":
				sc = 2
			}
		}
		if sc > score {
			best, score = c, sc
		}
	}
	return best, score > 0
}

func (t *sessionTrack) Unbind(webrtc.TrackLocalContext) error {
	if t.kind == webrtc.RTPCodecTypeVideo {
		t.s.video.Store(nil)
	} else {
		t.s.audio.Store(nil)
	}
	return nil
}

func (t *sessionTrack) ID() string {
	if t.kind == webrtc.RTPCodecTypeVideo {
		return "video"
	}
	return "audio"
}

func (t *sessionTrack) RID() string               { return "" }
func (t *sessionTrack) StreamID() string          { return "gradient" }
func (t *sessionTrack) Kind() webrtc.RTPCodecType { return t.kind }

// feed is the single reader of one stream for all its WebRTC sessions: it
// packetizes each access unit once and writes the packets to every
// session.
type feed struct {
	w      *WebRTC
	path   string
	reader *media.Reader
	video  int // track index of H.264
	audio  int // track index of Opus, or -1 (AAC is not sent)

	sessions atomic.Pointer[[]*whepSession] // copy-on-write, under w.mu
	stopped  atomic.Bool

	enc          rtph264.Encoder
	sps, pps     []byte
	videoTS      uint32 // random RTP timestamp bases
	audioTS      uint32
	audioSeq     uint16
	hdr          rtp.Header // scratch header of the send goroutine
	firstReadyAt time.Time

	ringMu sync.Mutex
	ring   []*rtp.Packet // recent video packets by sequence number
}

func newFeed(w *WebRTC, path string, r *media.Reader) *feed {
	desc := r.Description()
	f := &feed{w: w, path: path, reader: r, video: desc.VideoTrack(), audio: -1,
		ring: make([]*rtp.Packet, w.cfg.RetransmitPackets)}
	if a := desc.AudioTrack(); a >= 0 && desc.Tracks[a].Codec == media.CodecOpus {
		f.audio = a
	}
	if f.video >= 0 {
		f.sps, f.pps = desc.Tracks[f.video].SPS, desc.Tracks[f.video].PPS
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	f.videoTS = binary.BigEndian.Uint32(rnd[:4])
	f.audioTS = binary.BigEndian.Uint32(rnd[4:])
	f.audioSeq = uint16(rnd[0])<<8 | uint16(rnd[5])
	f.enc = rtph264.Encoder{PayloadType: 96, PayloadMaxSize: w.cfg.PayloadMaxSize, PacketizationMode: 1}
	_ = f.enc.Init() // cannot fail with packetization mode 1
	empty := []*whepSession{}
	f.sessions.Store(&empty)
	return f
}

// add and remove run under w.mu.
func (f *feed) add(s *whepSession) {
	s.waitKey = true
	old := *f.sessions.Load()
	n := make([]*whepSession, len(old), len(old)+1)
	copy(n, old)
	n = append(n, s)
	f.sessions.Store(&n)
}

func (f *feed) remove(s *whepSession) int {
	old := *f.sessions.Load()
	n := make([]*whepSession, 0, len(old))
	for _, x := range old {
		if x != s {
			n = append(n, x)
		}
	}
	f.sessions.Store(&n)
	return len(n)
}

func (f *feed) list() []*whepSession { return *f.sessions.Load() }

// stop ends the feed's goroutine (its last session left or the egress
// closes); its sessions are not closed by it.
func (f *feed) stop() {
	if f.stopped.CompareAndSwap(false, true) {
		f.reader.Close()
	}
}

func (f *feed) run() {
	defer f.w.wg.Done()
	for u := range f.reader.C() {
		switch u.Track {
		case f.video:
			f.writeVideo(u)
		case f.audio:
			f.writeAudio(u)
		}
	}
	if !f.stopped.Load() {
		f.w.log.Info("stream ended: closing its webrtc sessions", "stream", f.path, "sessions", len(f.list()))
		f.w.feedEnded(f)
	}
}

// withParameterSets returns the AU with SPS and PPS in front when it is an
// IDR that lacks them, and remembers in-band parameter sets.
func (f *feed) withParameterSets(u *media.Unit) [][]byte {
	hasSPS, hasPPS := false, false
	for _, n := range u.Data {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			hasSPS, f.sps = true, n
		case h264.NALUTypePPS:
			hasPPS, f.pps = true, n
		}
	}
	if !u.Key || (hasSPS && hasPPS) {
		return u.Data
	}
	au := make([][]byte, 0, len(u.Data)+2)
	if !hasSPS {
		au = append(au, f.sps)
	}
	if !hasPPS {
		au = append(au, f.pps)
	}
	return append(au, u.Data...)
}

func (f *feed) writeVideo(u *media.Unit) {
	au := f.withParameterSets(u)
	pkts, err := f.enc.Encode(au)
	if err != nil || len(pkts) == 0 {
		return
	}
	ts := f.videoTS + uint32(int64(u.PTS)*90000/int64(time.Second))
	f.ringMu.Lock()
	for _, p := range pkts {
		p.Timestamp = ts
		f.ring[int(p.SequenceNumber)%len(f.ring)] = p
	}
	f.ringMu.Unlock()
	sent := false
	f.w.conn.begin()
	for _, s := range f.list() {
		b := s.video.Load()
		if b == nil || !s.ready.Load() {
			continue
		}
		if s.waitKey {
			if !u.Key {
				continue
			}
			s.waitKey = false
		}
		for _, p := range pkts {
			// f.hdr, not a local: a local would escape to the heap
			// through the interface call, once per packet and session.
			f.hdr = p.Header
			f.hdr.PayloadType, f.hdr.SSRC = b.pt, b.ssrc
			_, _ = b.ws.WriteRTP(&f.hdr, p.Payload)
		}
		sent = true
	}
	f.w.conn.end()
	if sent {
		f.w.recordLatency(u.Received, time.Now())
	}
}

func (f *feed) writeAudio(u *media.Unit) {
	ts := f.audioTS + uint32(int64(u.PTS)*48000/int64(time.Second))
	f.w.conn.begin()
	defer f.w.conn.end()
	for _, pkt := range u.Data {
		h := rtp.Header{Version: 2, SequenceNumber: f.audioSeq, Timestamp: ts}
		f.audioSeq++
		for _, s := range f.list() {
			b := s.audio.Load()
			if b == nil || !s.ready.Load() || s.waitKey {
				continue
			}
			f.hdr = h
			f.hdr.PayloadType, f.hdr.SSRC = b.pt, b.ssrc
			_, _ = b.ws.WriteRTP(&f.hdr, pkt)
		}
		ts += uint32(opus.PacketDuration2(pkt))
	}
}

// retransmit resends the requested video packets that are still in the
// ring to one session.
func (f *feed) retransmit(b *binding, seqs []uint16) {
	for _, seq := range seqs {
		f.ringMu.Lock()
		p := f.ring[int(seq)%len(f.ring)]
		f.ringMu.Unlock()
		if p == nil || p.SequenceNumber != seq {
			continue
		}
		h := p.Header
		h.PayloadType, h.SSRC = b.pt, b.ssrc
		_, _ = b.ws.WriteRTP(&h, p.Payload)
	}
}

// batchConn is the ICE mux's UDP socket. While a feed fans a unit out
// (between begin and end) it queues outgoing datagrams and sends them with
// one sendmmsg call per batch: on a node with hundreds of viewers the
// per-packet system call is most of the egress CPU. Outside a fan-out
// (handshakes, STUN, reports) datagrams go out at once.
//
// With GSO (Linux, unless WebRTCConfig.DisableGSO), each run of queued
// datagrams to one address that gsoGroupEnd accepts is one message of the
// batch, with a UDP_SEGMENT control message: the kernel walks its send
// path once per run instead of once per datagram.
type batchConn struct {
	*net.UDPConn
	pc  *ipv6.PacketConn // works for IPv4 sockets too: Linux sendmmsg takes any sockaddr
	log *slog.Logger

	mu       sync.Mutex
	batching int
	n        int                             // queued datagrams
	bufs     [][]byte                        // queued datagrams' bytes
	dsts     []net.Addr                      // and destinations
	keys     []netip.AddrPort                // and destinations to compare (zero if not a UDP address)
	msgs     []ipv6.Message                  // the messages of one sendmmsg, built by pack
	first    []int                           // first datagram of each message; first[len] = n
	oob      [][]byte                        // each message's room for a UDP_SEGMENT cmsg
	addrs    map[netip.AddrPort]*net.UDPAddr // viewers' addresses, to not allocate one per datagram
	dropped  atomic.Uint64

	gso                    bool // under mu: send runs as GSO messages
	mGSOMessages, mGSOPkts prometheus.Counter
}

// batchSize is how many datagrams are queued before a flush. A GSO run cut
// by a flush leaves as two messages; in the WHEP fan-out bench a queue of
// 256 made no fewer messages per datagram nor less CPU than 64.
const batchSize = 64

// newBatchConn wraps c; gso asks for GSO, which is used if the socket
// takes UDP_SEGMENT. The counters may be nil.
func newBatchConn(c *net.UDPConn, gso bool, log *slog.Logger, gsoMessages, gsoPackets prometheus.Counter) *batchConn {
	if log == nil {
		log = slog.Default()
	}
	if gso {
		if err := gsoProbe(c); err != nil {
			log.Info("webrtc: UDP GSO not available, sending datagrams one by one", "error", err)
			gso = false
		}
	}
	if gsoMessages == nil {
		gsoMessages = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
	}
	if gsoPackets == nil {
		gsoPackets = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
	}
	b := &batchConn{UDPConn: c, pc: ipv6.NewPacketConn(c), log: log,
		bufs: make([][]byte, batchSize), dsts: make([]net.Addr, batchSize), keys: make([]netip.AddrPort, batchSize),
		msgs: make([]ipv6.Message, batchSize), first: make([]int, batchSize+1), oob: make([][]byte, batchSize),
		addrs: map[netip.AddrPort]*net.UDPAddr{}, gso: gso, mGSOMessages: gsoMessages, mGSOPkts: gsoPackets}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, 0, 1500)
		if gso {
			b.oob[i] = make([]byte, 0, gsoCmsgSpace)
		}
	}
	return b
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.batching++
	c.mu.Unlock()
}

func (c *batchConn) end() {
	c.mu.Lock()
	c.batching--
	c.flushLocked()
	c.mu.Unlock()
}

func (c *batchConn) queue(b []byte, addr net.Addr, ap netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching == 0 {
		return false
	}
	if addr == nil {
		ua, ok := c.addrs[ap]
		if !ok {
			if len(c.addrs) >= 1<<14 {
				clear(c.addrs)
			}
			ua = net.UDPAddrFromAddrPort(ap)
			c.addrs[ap] = ua
		}
		addr = ua
	} else if ua, ok := addr.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
	}
	if c.n == len(c.bufs) {
		c.flushLocked()
	}
	c.bufs[c.n] = append(c.bufs[c.n][:0], b...)
	c.dsts[c.n] = addr
	c.keys[c.n] = ap
	c.n++
	return true
}

// pack fills c.msgs with the queued datagrams from p on, each run that
// gsoGroupEnd accepts as one GSO message, except the datagrams before
// single, sent alone. It returns the number of messages.
func (c *batchConn) pack(p, single int) int {
	m := 0
	for ; p < c.n; m++ {
		end := p + 1
		if c.gso && p >= single {
			end = gsoGroupEnd(c.bufs, c.keys, p, c.n)
		}
		msg := &c.msgs[m]
		msg.Buffers = c.bufs[p:end]
		msg.Addr = c.dsts[p]
		msg.OOB = nil
		if end-p > 1 {
			msg.OOB = putGSOCmsg(c.oob[m], len(c.bufs[p]))
		}
		c.first[m] = p
		p = end
	}
	c.first[m] = c.n
	return m
}

func (c *batchConn) flushLocked() {
	var gsoMsgs, gsoPkts, used int
	// p is the first datagram not sent yet; the ones before single are
	// sent alone (the rest of a GSO message the kernel refused).
	for p, single := 0, 0; p < c.n; {
		nm := c.pack(p, single)
		used = max(used, nm)
		k, err := c.pc.WriteBatch(c.msgs[:nm], 0)
		k = max(k, 0)
		for _, m := range c.msgs[:k] {
			if len(m.Buffers) > 1 {
				gsoMsgs++
				gsoPkts += len(m.Buffers)
			}
		}
		p = c.first[k]
		if err == nil {
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			c.dropped.Add(uint64(c.n - p))
			break
		}
		if k >= nm {
			continue
		}
		if m := c.msgs[k]; len(m.Buffers) > 1 {
			// Never lose packets to GSO: send this run's datagrams one
			// by one, and stop using GSO if the kernel refuses it.
			if gsoRefused(err) {
				c.gso = false
				c.log.Warn("webrtc: the kernel refused a UDP GSO message; sending datagrams one by one from now on", "error", err)
			}
			single = p + len(m.Buffers)
			continue
		}
		// Skip the datagram the kernel refused (e.g. unreachable
		// destination) and send the rest.
		p++
		c.dropped.Add(1)
	}
	for i := 0; i < c.n; i++ {
		c.dsts[i] = nil
	}
	for i := range c.msgs[:used] {
		c.msgs[i].Addr = nil
	}
	c.n = 0
	if gsoMsgs > 0 {
		c.mGSOMessages.Add(float64(gsoMsgs))
		c.mGSOPkts.Add(float64(gsoPkts))
	}
}

// WriteTo implements net.PacketConn.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.queue(b, addr, netip.AddrPort{}) {
		return len(b), nil
	}
	return c.UDPConn.WriteTo(b, addr)
}

// WriteToAddrPort is what the ICE mux uses to write.
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.queue(b, nil, addr) {
		return len(b), nil
	}
	return c.UDPConn.WriteToUDPAddrPort(b, addr)
}

// ReadFromAddrPort is what the ICE mux uses to read.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.UDPConn.ReadFromUDPAddrPort(b)
}

// pionLogs routes pion's log lines to slog: errors at Info (pion reports
// every closed socket of a departing viewer as an error), the rest at Debug.
type pionLogs struct{ log *slog.Logger }

func (p pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{p.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) Trace(msg string)                  {}
func (l pionLogger) Tracef(format string, args ...any) {}
func (l pionLogger) Debug(msg string)                  { l.log.Debug(msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l pionLogger) Info(msg string)                   { l.log.Debug(msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l pionLogger) Warn(msg string)                   { l.log.Debug(msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l pionLogger) Error(msg string)                  { l.log.Info(msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelInfo, format, args) }
func (l pionLogger) logf(lv slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), lv) {
		l.log.Log(context.Background(), lv, fmt.Sprintf(format, args...))
	}
}
