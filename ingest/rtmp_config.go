package ingest

import (
	"errors"
	"fmt"
	"github.com/gradient-cdn/gradient/auth"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/listenaddr"
)

// RTMPConfig configures an RTMPServer; DefaultRTMPConfig gives the
// defaults. It is the `rtmp` section of a node's configuration.
type RTMPConfig struct {
	// Addr is the TCP address the server listens on. Default ":1935",
	// the port OBS and every RTMP encoder assume.
	Addr string `yaml:"addr"`

	// TLSCert and TLSKey, when both set, are the PEM certificate chain and
	// key files that turn the port into RTMPS (RTMP inside TLS, the
	// `rtmps://` URLs of OBS and ffmpeg): plain RTMP is then no longer
	// accepted on it. Default empty: plain RTMP.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`

	// PublishTimeout bounds the time from the TCP connection to the first
	// H.264 IDR, when the stream appears in the hub: the handshake, the
	// connect and publish commands and the library's track probing (about
	// 2 s of media) all happen within it. A publisher that does not get
	// there is dropped, so that a stalled or hostile connection cannot hold
	// a stream name or a goroutine. Default 10 s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`

	// ReadTimeout drops a publisher that sends nothing for this long, and
	// ends its stream. Default 10 s.
	ReadTimeout time.Duration `yaml:"read_timeout"`

	// Authorize, when set, is asked whether a publisher may publish, with
	// the credentials of its stream key's query (MediaMTX's form:
	// "cam1?user=cam&pass=secret", or "?token=…"). A refused publisher
	// is told why and disconnected. Default nil: everybody publishes.
	Authorize func(auth.Request) error `yaml:"-"`
}

// DefaultRTMPConfig returns the defaults of every RTMPConfig field.
func DefaultRTMPConfig() RTMPConfig {
	return RTMPConfig{
		Addr:           ":1935",
		PublishTimeout: 10 * time.Second,
		ReadTimeout:    10 * time.Second,
	}
}

// Validate checks the fields and names a bad one by its YAML key. The TLS
// files are read by Start, not here: validation does no I/O.
func (c RTMPConfig) Validate() error {
	if err := listenaddr.Check(c.Addr); err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("tls_cert and tls_key: set both for RTMPS, or neither")
	}
	if c.PublishTimeout <= 0 {
		return fmt.Errorf("publish_timeout: %v must be > 0", c.PublishTimeout)
	}
	if c.ReadTimeout <= 0 {
		return fmt.Errorf("read_timeout: %v must be > 0", c.ReadTimeout)
	}
	return nil
}

// withDefaults fills the zero fields of a hand-built config from
// DefaultRTMPConfig.
func (c RTMPConfig) withDefaults() RTMPConfig {
	defaults.Fill(&c, DefaultRTMPConfig())
	return c
}
