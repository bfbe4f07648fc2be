package ingest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/listenaddr"
)

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

	// TLSCert and TLSKey, when both set, are the PEM certificate chain and
	// key files that turn the port into RTSPS (RTSP inside TLS; the UDP
	// transport then carries SRTP). Relays from other nodes then pull
	// over rtsps://, verifying the certificate against their
	// overlay.peer_ca. Default none: plain RTSP.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`

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

	// SetupTimeout bounds the time from a connection's opening to its
	// RECORD or PLAY. A connection still short of either then is closed:
	// an ANNOUNCE that never records would otherwise hold the stream name
	// (the real encoder gets 409) and an idle connection its goroutines
	// for as long as it stays open. Default 10 s.
	SetupTimeout time.Duration `yaml:"setup_timeout"`

	// MaxConnsPerIP is how many connections one client address may hold
	// open; a connection beyond is closed at once (the refusal is logged
	// once a minute per address). Loopback clients are exempt unless
	// LimitLoopback. Default 64; negative: no limit.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`

	// LimitLoopback applies MaxConnsPerIP to loopback clients too (the
	// node sets it from its limit_loopback). Default false.
	LimitLoopback bool `yaml:"-"`

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

	// Credentials, when set, guards publishing (publish true, checked at
	// ANNOUNCE) and reading (checked at DESCRIBE and SETUP) of path. It is
	// given the user the client named ("" when it sent no credentials) and
	// answers open to let the request in without credentials, or the
	// password that user must prove; "" refuses the user. The proof is
	// RTSP Digest (MD5 or SHA-256): no password crosses the network. A
	// refused request is answered 401 with a Digest challenge. Default nil:
	// everybody is let in.
	Credentials func(user, path string, publish bool) (pass string, open bool) `yaml:"-"`

	// Authorize, when set, replaces Credentials: every publish (ANNOUNCE)
	// and read (DESCRIBE, SETUP) is put to it as an auth.Request with the
	// client's address and credentials: a Basic password in Pass, a
	// Digest proof in VerifyPass (only a password known in clear can be
	// checked so). ErrNoCredentials and ErrBadCredentials are answered 401
	// with a challenge, ErrForbidden 403. The node sets it from the auth
	// section, with relay users in front. Default nil.
	Authorize func(auth.Request) error `yaml:"-"`

	// BasicAuth challenges with Basic instead of Digest when Authorize is
	// set. Hashed passwords and the http and jwt methods need the
	// password itself, which Digest never sends; Basic sends it in clear,
	// so use it on a trusted network or a tunnel. (Clients pick Digest
	// whenever it is offered, so the two are not offered together.)
	// Default false.
	BasicAuth bool `yaml:"-"`
}

// DefaultRTSPConfig returns the defaults of every RTSPConfig field.
func DefaultRTSPConfig() RTSPConfig {
	return RTSPConfig{
		Addr:           ":8554",
		UDPRTPAddr:     ":8000",
		UDPRTCPAddr:    ":8001",
		ReadTimeout:    10 * time.Second,
		WriteTimeout:   10 * time.Second,
		SetupTimeout:   10 * time.Second,
		MaxConnsPerIP:  64,
		WriteQueueSize: 512,
		WriteCoalesce:  5 * time.Millisecond,
	}
}

// Validate checks the fields and names a bad one by its YAML key.
func (c RTSPConfig) Validate() error {
	if err := listenaddr.Check(c.Addr); err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls_cert and tls_key: set both for RTSPS, or neither")
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
			p, _ := strconv.Atoi(port)
			if p == 0 || p%2 != 0 {
				return fmt.Errorf("udp_rtp_addr: %q: the RTP port must be even and not 0", c.UDPRTPAddr)
			}
			if err := listenaddr.Check(c.UDPRTCPAddr); err != nil {
				return fmt.Errorf("udp_rtcp_addr: %w", err)
			}
			// gortsplib refuses a pair that is not consecutive at start.
			_, rport, _ := net.SplitHostPort(c.UDPRTCPAddr)
			if r, _ := strconv.Atoi(rport); r != p+1 {
				return fmt.Errorf("udp_rtcp_addr: %q: the RTCP port must be the RTP port plus one (%d)", c.UDPRTCPAddr, p+1)
			}
		}
	}
	if c.ReadTimeout <= 0 {
		return fmt.Errorf("read_timeout: %v must be > 0", c.ReadTimeout)
	}
	if c.WriteTimeout <= 0 {
		return fmt.Errorf("write_timeout: %v must be > 0", c.WriteTimeout)
	}
	if c.SetupTimeout <= 0 {
		return fmt.Errorf("setup_timeout: %v must be > 0", c.SetupTimeout)
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
