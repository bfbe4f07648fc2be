package node

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/serverlet"
)

// Config is a node's whole configuration: one YAML file, every field
// optional. DefaultConfig gives the values a node runs with when the file
// leaves a field out; `gradient node --print-config` prints them.
type Config struct {
	// Name identifies the node in the cluster and in logs. Default: the host name.
	Name string `yaml:"name"`

	// Data is the node's own folder; today it holds the serverlet plugins
	// (serverlets.plugin_dir defaults to "<data>/plugins"). Default
	// "./data". Created when missing.
	Data string `yaml:"data"`

	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`

	// HTTP is the listen address of the API, HLS, WHEP, player page,
	// dashboard and /metrics. Default ":8080".
	HTTP string `yaml:"http"`

	// PProf serves Go's profiler at /debug/pprof/ on the HTTP port. Off by
	// default: that port is public, and a profile costs CPU.
	PProf bool `yaml:"pprof"`

	RTSP   RTSPConfig          `yaml:"rtsp"`
	SRT    SRTConfig           `yaml:"srt"`
	WebRTC egress.WebRTCConfig `yaml:"webrtc"` // see egress.WebRTCConfig
	HLS    egress.HLSConfig    `yaml:"hls"`    // see egress.HLSConfig
	Hub    HubConfig           `yaml:"hub"`
	Gossip GossipConfig        `yaml:"gossip"`

	// Serverlets configures the serverlets that make renditions
	// ("live/cam1@360p") on demand; see serverlet.ManagerConfig. Its
	// plugin_dir defaults to "<data>/plugins" (filled in by New).
	Serverlets serverlet.ManagerConfig `yaml:"serverlets"`
	// Overlay is the node's part in the overlay; see overlay.Config.
	Overlay overlay.Config `yaml:"overlay"`
}

// RTSPConfig configures RTSP publish, read and relay.
type RTSPConfig struct {
	// Addr is the RTSP TCP listen address. Default ":8554". Empty string
	// in the file keeps the default; "off" disables RTSP.
	Addr string `yaml:"addr"`
	// UDPRTPAddr and UDPRTCPAddr are the UDP transport's ports (RTP must be
	// even, RTCP = RTP+1). Defaults ":8000" and ":8001"; "off" disables UDP
	// transport (TCP interleaved still works).
	UDPRTPAddr  string `yaml:"udp_rtp_addr"`
	UDPRTCPAddr string `yaml:"udp_rtcp_addr"`
}

// SRTConfig configures SRT publish.
type SRTConfig struct {
	// Addr is the SRT UDP listen address. Default ":8890"; "off" disables SRT.
	Addr string `yaml:"addr"`
	// Latency is SRT's receive latency. Default 120ms.
	Latency time.Duration `yaml:"latency"`
	// Passphrase, when set, is required of publishers (10 to 79 characters).
	Passphrase string `yaml:"passphrase"`
}

// HubConfig tunes the stream table.
type HubConfig struct {
	// ReaderQueue is how many units a reader may lag before it skips to the
	// next keyframe. Default 512.
	ReaderQueue int `yaml:"reader_queue"`
	// GOPCacheUnits caps the keyframe cache for new readers. Default 2048.
	GOPCacheUnits int `yaml:"gop_cache_units"`
}

// GossipConfig configures cluster membership.
type GossipConfig struct {
	// Addr is the gossip TCP+UDP listen address. Default ":7946"; "off"
	// runs the node alone.
	Addr string `yaml:"addr"`
	// Advertise is the address other nodes reach this one at. Default: the
	// bind address, or the first private IP when bound to all interfaces.
	Advertise string `yaml:"advertise"`
	// Join lists seed nodes ("host:port") to join at start.
	Join []string `yaml:"join"`
	// Key is the cluster encryption key, base64 of 16, 24 or 32 bytes.
	// Empty: gossip is not encrypted (only for a single trusted host).
	Key string `yaml:"key"`
}

// DefaultConfig returns the configuration of a node started with no file
// and no flags.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "gradient"
	}
	c := Config{
		Name:     host,
		Data:     "./data",
		LogLevel: "info",
		HTTP:     ":8080",
		RTSP:     RTSPConfig{Addr: ":8554", UDPRTPAddr: ":8000", UDPRTCPAddr: ":8001"},
		SRT:      SRTConfig{Addr: ":8890", Latency: 120 * time.Millisecond},
		WebRTC:   egress.DefaultWebRTCConfig(),
		HLS:      egress.DefaultHLSConfig(),
		Hub:      HubConfig{ReaderQueue: 512, GOPCacheUnits: 2048},
		Gossip:   GossipConfig{Addr: ":7946"},
	}
	c.Serverlets = serverlet.DefaultManagerConfig()
	c.Overlay = overlay.DefaultConfig()
	return c
}

// LoadConfig reads a YAML file over the defaults. Unknown fields are errors,
// so that a typo does not silently leave a default in place.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file (io.EOF) means all defaults.
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Off is the address value that disables a listener.
const Off = "off"

// Validate checks every field and names the bad one.
func (c Config) Validate() error {
	if c.Name == "" || strings.ContainsAny(c.Name, " \t\r\n/@") {
		return fmt.Errorf("name: %q must be non-empty without spaces, '/' or '@'", c.Name)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	addrs := []struct {
		field, v string
		canOff   bool
	}{
		{"http", c.HTTP, false},
		{"rtsp.addr", c.RTSP.Addr, true},
		{"rtsp.udp_rtp_addr", c.RTSP.UDPRTPAddr, true},
		{"rtsp.udp_rtcp_addr", c.RTSP.UDPRTCPAddr, true},
		{"srt.addr", c.SRT.Addr, true},
		{"gossip.addr", c.Gossip.Addr, true},
	}
	for _, a := range addrs {
		if a.canOff && a.v == Off {
			continue
		}
		if err := checkAddr(a.v); err != nil {
			return fmt.Errorf("%s: %w", a.field, err)
		}
	}
	if (c.RTSP.UDPRTPAddr == Off) != (c.RTSP.UDPRTCPAddr == Off) {
		return errors.New("rtsp.udp_rtp_addr and rtsp.udp_rtcp_addr: both or neither must be off")
	}
	if c.Gossip.Key != "" {
		key, err := base64.StdEncoding.DecodeString(c.Gossip.Key)
		if err != nil {
			return fmt.Errorf("gossip.key: not base64: %w", err)
		}
		if n := len(key); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("gossip.key: %d bytes, must be 16, 24 or 32", n)
		}
	}
	for i, j := range c.Gossip.Join {
		if err := checkAddr(j); err != nil {
			return fmt.Errorf("gossip.join[%d]: %w", i, err)
		}
	}
	if err := c.WebRTC.Validate(); err != nil {
		return fmt.Errorf("webrtc.%w", err)
	}
	if err := c.HLS.Validate(); err != nil {
		return fmt.Errorf("hls.%w", err)
	}
	if c.SRT.Passphrase != "" && (len(c.SRT.Passphrase) < 10 || len(c.SRT.Passphrase) > 79) {
		return errors.New("srt.passphrase: must be 10 to 79 characters")
	}
	pos := []struct {
		field string
		ok    bool
	}{
		{"srt.latency", c.SRT.Latency > 0},
		{"hub.reader_queue", c.Hub.ReaderQueue > 0},
		{"hub.gop_cache_units", c.Hub.GOPCacheUnits > 0},
	}
	for _, p := range pos {
		if !p.ok {
			return fmt.Errorf("%s: out of range", p.field)
		}
	}
	if err := c.Serverlets.Validate(); err != nil {
		return fmt.Errorf("serverlets.%w", err)
	}
	if err := c.Overlay.Validate(); err != nil {
		return fmt.Errorf("overlay.%w", err)
	}
	return nil
}

func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", a, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port %q", a, port)
	}
	_ = host
	return nil
}
