package egress

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/internal/listenaddr"
)

// WebRTCConfig configures the WebRTC (WHEP) egress: the node's `webrtc`
// section. DefaultWebRTCConfig gives the defaults; NewWebRTC fills the
// zero fields of a hand-built config from it, but GSO (a boolean is taken
// as given: build from DefaultWebRTCConfig() to keep GSO on).
type WebRTCConfig struct {
	// ICEUDPAddr is the one UDP address every WebRTC session shares (ICE
	// UDP mux). Default ":8189". Use "127.0.0.1:0" in tests.
	ICEUDPAddr string `yaml:"ice_udp_addr"`

	// AdvertiseIPs are the IPs put into the host ICE candidates instead of
	// the bound interfaces' addresses (1:1 NAT, e.g. a cloud VM's public
	// IP). Default none: the addresses of the bound interface(s).
	AdvertiseIPs []string `yaml:"advertise_ips"`

	// SessionTimeout bounds how long a session may take to connect after
	// its answer, and how long a connected session may stay unreachable
	// before it is removed. Default 10s.
	SessionTimeout time.Duration `yaml:"session_timeout"`

	// MaxSessions caps the concurrent sessions of this node; an offer
	// beyond it is answered 503. Default 2000.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerClient caps the concurrent sessions of one client
	// address, checked before any PeerConnection is built; an offer beyond
	// it is answered 429. Default 20 (a household behind one NAT).
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`

	// PayloadMaxSize is the largest RTP payload sent, in bytes. Default 1200,
	// which fits common tunnels and VPNs.
	PayloadMaxSize int `yaml:"payload_max_size"`

	// RetransmitPackets is how many recent video RTP packets per stream are
	// kept to answer NACKs. They are shared by every session of the stream.
	// Default 512 (about 2 s at 2 Mbps).
	RetransmitPackets int `yaml:"retransmit_packets"`

	// RetransmitRate bounds the packets one session is resent in answer to
	// its NACKs, per second (with a one-second burst): a viewer that NACKs
	// everything cannot make the node send its stream many times over.
	// Default 500 (a 4 Mbit/s stream is ~400 packets/s; real loss asks for
	// a fraction of that).
	RetransmitRate int `yaml:"retransmit_rate"`

	// LatencySamples is the size of the ring of egress latency samples
	// returned by EgressLatency. Default 4096.
	LatencySamples int `yaml:"latency_samples"`

	// GSO sends the RTP packets of one access unit to one session as one
	// UDP generic segmentation offload message (Linux), which the kernel
	// cuts into datagrams late in its send path: it cuts the node's CPU
	// per viewer. GSO turns itself off where the kernel refuses it.
	// Default true.
	GSO bool `yaml:"gso"`

	// OnVideoSent, if set, is called for every video access unit once its
	// last RTP packet was written to every session of the stream, with the
	// time the node received the unit and the time of that write. It runs
	// on the stream's send goroutine and must not block.
	OnVideoSent func(received, sent time.Time) `yaml:"-"`

	// Registerer, if set, receives the component's Prometheus metrics:
	// gradient_webrtc_sessions, gradient_webrtc_egress_latency_seconds,
	// gradient_webrtc_rejected_offers_total, gradient_webrtc_gso_messages_total
	// and gradient_webrtc_gso_packets_total.
	Registerer prometheus.Registerer `yaml:"-"`

	// Handler, if set, is told about sessions: it may implement any of
	// WebRTCHandlerOnSessionOpen and WebRTCHandlerOnSessionClose.
	Handler any `yaml:"-"`
}

// DefaultWebRTCConfig returns the WebRTC egress defaults.
func DefaultWebRTCConfig() WebRTCConfig {
	return WebRTCConfig{
		ICEUDPAddr:           ":8189",
		SessionTimeout:       10 * time.Second,
		MaxSessions:          2000,
		MaxSessionsPerClient: 20,
		PayloadMaxSize:       1200,
		RetransmitPackets:    512,
		RetransmitRate:       500,
		LatencySamples:       4096,
		GSO:                  true,
	}
}

// Validate checks every field and names the bad one by its YAML key.
func (c WebRTCConfig) Validate() error {
	if err := listenaddr.Check(c.ICEUDPAddr); err != nil {
		return fmt.Errorf("ice_udp_addr: %w", err)
	}
	for i, ip := range c.AdvertiseIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("advertise_ips[%d]: %q is not an IP address", i, ip)
		}
	}
	switch {
	case c.SessionTimeout <= 0:
		return errors.New("session_timeout: must be > 0")
	case c.MaxSessions <= 0:
		return errors.New("max_sessions: must be > 0")
	case c.MaxSessionsPerClient <= 0:
		return errors.New("max_sessions_per_client: must be > 0")
	case c.PayloadMaxSize < 100 || c.PayloadMaxSize > 1460:
		return fmt.Errorf("payload_max_size: %d is not 100 to 1460 bytes", c.PayloadMaxSize)
	case c.RetransmitRate <= 0:
		return errors.New("retransmit_rate: must be > 0")
	case c.RetransmitPackets <= 0:
		return errors.New("retransmit_packets: must be > 0")
	case c.LatencySamples <= 0:
		return errors.New("latency_samples: must be > 0")
	}
	return nil
}
