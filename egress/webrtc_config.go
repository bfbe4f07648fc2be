package egress

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
