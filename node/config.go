package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/media"
)

// Config is a node's whole configuration: one YAML file, every field
// optional. DefaultConfig gives the values a node runs with when the file
// leaves a field out; `gradient node --print-config` prints them.
type Config struct {
	// Name identifies the node in the cluster and in logs. Default: the host name.
	Name string `yaml:"name"`

	// Data is the folder for the node's state (VoD chunk cache, keys).
	// Default "./data". Created when missing.
	Data string `yaml:"data"`

	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`

	// HTTP is the listen address of the API, HLS, WHEP, player page,
	// dashboard and /metrics. Default ":8080".
	HTTP string `yaml:"http"`

	// PProf serves Go's profiler at /debug/pprof/ on the HTTP port. Off by
	// default: that port is public, and a profile costs CPU.
	PProf bool `yaml:"pprof"`

	// RTSP is RTSP publish, read and relay; "addr: off" disables RTSP,
	// "udp_rtp_addr: off" with "udp_rtcp_addr: off" its UDP transport.
	RTSP ingest.RTSPConfig `yaml:"rtsp"`
	// SRT is SRT publish; "addr: off" disables SRT.
	SRT    ingest.SRTConfig `yaml:"srt"`
	WebRTC WebRTCConfig     `yaml:"webrtc"`
	HLS    HLSConfig        `yaml:"hls"`
	// Hub tunes the stream table.
	Hub    media.HubConfig `yaml:"hub"`
	Gossip GossipConfig    `yaml:"gossip"`

	Serverlets ServerletConfig `yaml:"serverlets"`
	Overlay    OverlayConfig   `yaml:"overlay"`
}

// WebRTCConfig configures WHEP playback.
type WebRTCConfig struct {
	// ICEUDPAddr is the one UDP port all WebRTC sessions share. Default ":8189".
	ICEUDPAddr string `yaml:"ice_udp_addr"`
	// AdvertiseIPs are the addresses put in ICE candidates (for a host
	// behind 1:1 NAT give its public IP). Default: the local interfaces.
	AdvertiseIPs []string `yaml:"advertise_ips"`
	// MaxSessions caps concurrent WHEP sessions. Default 2000.
	MaxSessions int `yaml:"max_sessions"`
	// GSO sends the RTP packets of one frame to one viewer as one UDP
	// segmentation offload message (Linux; off by itself where the kernel
	// refuses it), which cuts the node's CPU per viewer. Default true.
	GSO bool `yaml:"gso"`
}

// HLSConfig configures HLS and LL-HLS playback.
type HLSConfig struct {
	// SegmentDuration is the target segment length. Default 1s.
	SegmentDuration time.Duration `yaml:"segment_duration"`
	// PartDuration is the LL-HLS part length. Default 200ms.
	PartDuration time.Duration `yaml:"part_duration"`
	// SegmentCount is how many segments a playlist lists. Default 7.
	SegmentCount int `yaml:"segment_count"`
	// IdleTimeout closes a stream's HLS muxer after no request for this long. Default 30s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// ServerletConfig configures the serverlets that make renditions
// ("live/cam1@360p") on demand.
type ServerletConfig struct {
	// Ladder maps rendition names to serverlet specs, merged over the
	// default ladder (1080p, 720p, 480p, 360p, 240p, 180p: "scale x360
	// 800k" …); e.g. {"360p": "scale 640x360 800k", "opus": "audio opus",
	// "gray": "grayscale"}. The spec "off" removes a default rung.
	Ladder map[string]string `yaml:"ladder"`
	// Slots is the transcode capacity: serverlets running at once.
	// Default: the number of CPUs.
	Slots int `yaml:"slots"`
	// IdleStop stops a serverlet this long after its last reader left.
	// Default 10s.
	IdleStop time.Duration `yaml:"idle_stop"`
	// Preset is libx264's preset for renditions. Default "veryfast".
	Preset string `yaml:"preset"`
	// PluginDir is the folder of operators' serverlet plugins (.so built
	// with go build -buildmode=plugin). Default "<data>/plugins".
	PluginDir string `yaml:"plugin_dir"`
	// Plugins lists the plugins loaded at start: "gray" loads
	// <plugin_dir>/gray.so as serverlet "gray".
	Plugins []string `yaml:"plugins"`
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
		RTSP:     ingest.DefaultRTSPConfig(),
		SRT:      ingest.DefaultSRTConfig(),
		WebRTC:   WebRTCConfig{ICEUDPAddr: ":8189", MaxSessions: 2000, GSO: true},
		HLS:      HLSConfig{SegmentDuration: time.Second, PartDuration: 200 * time.Millisecond, SegmentCount: 7, IdleTimeout: 30 * time.Second},
		Hub:      media.DefaultHubConfig(),
		Gossip:   GossipConfig{Addr: ":7946"},
	}
	c.Serverlets = ServerletConfig{Slots: runtime.NumCPU(), IdleStop: 10 * time.Second, Preset: "veryfast"}
	c.Overlay = defaultOverlayConfig()
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
const Off = ingest.Off

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
		{"webrtc.ice_udp_addr", c.WebRTC.ICEUDPAddr, false},
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
	if c.RTSP.Addr != Off {
		if err := c.RTSP.Validate(); err != nil {
			return fmt.Errorf("rtsp.%w", err)
		}
	}
	if c.SRT.Addr != Off {
		if err := c.SRT.Validate(); err != nil {
			return fmt.Errorf("srt.%w", err)
		}
	}
	if err := c.Hub.Validate(); err != nil {
		return fmt.Errorf("hub.%w", err)
	}
	for i, j := range c.Gossip.Join {
		if err := checkAddr(j); err != nil {
			return fmt.Errorf("gossip.join[%d]: %w", i, err)
		}
	}
	for i, ip := range c.WebRTC.AdvertiseIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("webrtc.advertise_ips[%d]: %q is not an IP address", i, ip)
		}
	}
	pos := []struct {
		field string
		ok    bool
	}{
		{"webrtc.max_sessions", c.WebRTC.MaxSessions > 0},
		{"hls.segment_duration", c.HLS.SegmentDuration > 0},
		{"hls.part_duration", c.HLS.PartDuration > 0 && c.HLS.PartDuration <= c.HLS.SegmentDuration},
		{"hls.segment_count", c.HLS.SegmentCount >= 3},
		{"hls.idle_timeout", c.HLS.IdleTimeout > 0},
		{"serverlets.slots", c.Serverlets.Slots > 0},
		{"serverlets.idle_stop", c.Serverlets.IdleStop > 0},
	}
	for _, p := range pos {
		if !p.ok {
			return fmt.Errorf("%s: out of range", p.field)
		}
	}
	for name, spec := range c.Serverlets.Ladder {
		if _, _, err := media.ParsePath("x@" + name); err != nil || name == "" {
			return fmt.Errorf("serverlets.ladder: rendition name %q: not a valid rendition name", name)
		}
		if strings.TrimSpace(spec) == "" {
			return fmt.Errorf("serverlets.ladder.%s: empty spec (use \"off\" to remove a rung)", name)
		}
	}
	if err := c.Overlay.validate(); err != nil {
		return err
	}
	switch c.Serverlets.Preset {
	case "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow":
	default:
		return fmt.Errorf("serverlets.preset: %q is not a libx264 preset (ultrafast … veryslow)", c.Serverlets.Preset)
	}
	for i, p := range c.Serverlets.Plugins {
		if p == "" || strings.ContainsAny(p, " \t") {
			return fmt.Errorf("serverlets.plugins[%d]: %q is not a plugin name", i, p)
		}
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
