package node

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/dashboard"
	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/listenaddr"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/serverlet"
	"github.com/gradient-cdn/gradient/vod"
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

	// HTTPTLSCert and HTTPTLSKey are PEM files (the certificate chain and
	// its key): with both set the HTTP port speaks HTTPS only (HTTP/1.1
	// and HTTP/2). Default empty: plain HTTP.
	HTTPTLSCert string `yaml:"http_tls_cert"`
	HTTPTLSKey  string `yaml:"http_tls_key"`

	// HTTPMaxConnsPerIP is how many connections one client address may
	// hold open on the HTTP port; a connection beyond is answered 429 and
	// closed. Loopback clients are exempt unless LimitLoopback.
	// Default 256; 0 or negative: no limit.
	HTTPMaxConnsPerIP int `yaml:"http_max_conns_per_ip"`

	// LimitLoopback applies the per-client limits (http_max_conns_per_ip,
	// rtsp.max_conns_per_ip, serverlets.max_starts_per_client) to
	// loopback clients too. Default false: local tools, and a reverse
	// proxy on the same host, come from loopback.
	LimitLoopback bool `yaml:"limit_loopback"`

	// PProf serves Go's profiler at /debug/pprof/ on the HTTP port. Off by
	// default: that port is public, and a profile costs CPU.
	PProf bool `yaml:"pprof"`

	// RTSP is RTSP publish, read and relay; "addr: off" disables RTSP,
	// "udp_rtp_addr: off" with "udp_rtcp_addr: off" its UDP transport.
	RTSP ingest.RTSPConfig `yaml:"rtsp"`
	// SRT is SRT publish; "addr: off" disables SRT.
	SRT ingest.SRTConfig `yaml:"srt"`
	// RTMP is RTMP publish (OBS, ffmpeg -f flv), RTMPS with
	// tls_cert/tls_key; "addr: off" disables RTMP.
	RTMP ingest.RTMPConfig `yaml:"rtmp"`
	// WHIP is WebRTC publishing (on the HTTP port and the WebRTC ICE
	// port); see ingest.WHIPConfig. "max_sessions: 0" turns it off.
	WHIP ingest.WHIPConfig `yaml:"whip"`
	// WebRTC is WHEP playback; see egress.WebRTCConfig.
	WebRTC egress.WebRTCConfig `yaml:"webrtc"`
	// HLS is HLS and LL-HLS playback; see egress.HLSConfig.
	HLS egress.HLSConfig `yaml:"hls"`
	// Hub tunes the stream table.
	Hub    media.HubConfig `yaml:"hub"`
	Gossip GossipConfig    `yaml:"gossip"`

	// Serverlets configures the serverlets that make renditions
	// ("live/cam1@360p") on demand; see serverlet.ManagerConfig. Its
	// plugin_dir defaults to "<data>/plugins" (filled in by New).
	Serverlets serverlet.ManagerConfig `yaml:"serverlets"`
	// Overlay is the node's part in the overlay; see overlay.Config.
	Overlay overlay.Config `yaml:"overlay"`
	// VoD is on-demand titles: uploads, packaging, the catalog; see vod.Config.
	VoD vod.Config `yaml:"vod"`
	// Auth decides who may publish, read, use the API and read /metrics,
	// for every protocol; see auth.Config. Default: anybody reads,
	// publishing, API writes and /metrics are for loopback clients.
	Auth auth.Config `yaml:"auth"`
	// Dashboard tunes the live dashboard at GET / and its event stream
	// GET /api/v1/events; see dashboard.Config. demo_url (default "")
	// makes the page show a "kill" button per node that POSTs
	// demo_url + "/kill?node=NAME" (served by `gradient demo`).
	Dashboard dashboard.Config `yaml:"dashboard"`
}

// GossipConfig configures cluster membership.
type GossipConfig struct {
	// Addr is the gossip TCP+UDP listen address. Default "127.0.0.1:7946"
	// (a cluster of one host); a cluster of several hosts listens beyond
	// loopback (":7946"), which needs Key. "off" runs the node alone.
	Addr string `yaml:"addr"`
	// Advertise is the address other nodes reach this one at. Default: the
	// bind address, or the first private IP when bound to all interfaces.
	Advertise string `yaml:"advertise"`
	// Join lists seed nodes ("host:port") to join at start.
	Join []string `yaml:"join"`
	// Key is the cluster encryption key, base64 of 16, 24 or 32 bytes.
	// Empty: gossip is not encrypted, which Validate allows only on
	// loopback or with Insecure.
	Key string `yaml:"key"`
	// Insecure lets gossip listen beyond loopback without Key. Anyone who
	// reaches the port can then join the cluster, announce streams and
	// prices, and read its state: only for a network nobody else reaches.
	// Default false.
	Insecure bool `yaml:"insecure"`
}

// DefaultConfig returns the configuration of a node started with no file
// and no flags.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "gradient"
	}
	c := Config{
		Name:              host,
		Data:              "./data",
		LogLevel:          "info",
		HTTP:              ":8080",
		HTTPMaxConnsPerIP: 256,
		RTSP:              ingest.DefaultRTSPConfig(),
		SRT:               ingest.DefaultSRTConfig(),
		RTMP:              ingest.DefaultRTMPConfig(),
		WHIP:              ingest.DefaultWHIPConfig(),
		WebRTC:            egress.DefaultWebRTCConfig(),
		HLS:               egress.DefaultHLSConfig(),
		Hub:               media.DefaultHubConfig(),
		Gossip:            GossipConfig{Addr: "127.0.0.1:7946"},
	}
	c.Serverlets = serverlet.DefaultManagerConfig()
	c.Overlay = overlay.DefaultConfig()
	c.VoD = vod.DefaultConfig()
	c.Auth = auth.DefaultConfig()
	c.Dashboard = dashboard.DefaultConfig()
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
		{"gossip.addr", c.Gossip.Addr, true},
	}
	for _, a := range addrs {
		if a.canOff && a.v == Off {
			continue
		}
		if err := listenaddr.Check(a.v); err != nil {
			return fmt.Errorf("%s: %w", a.field, err)
		}
	}
	if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		return errors.New("http_tls_cert and http_tls_key: set both or neither")
	}
	if c.HTTPTLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.HTTPTLSCert, c.HTTPTLSKey); err != nil {
			return fmt.Errorf("http_tls_cert, http_tls_key: %w", err)
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
	if c.RTMP.Addr != Off {
		if err := c.RTMP.Validate(); err != nil {
			return fmt.Errorf("rtmp.%w", err)
		}
	}
	if err := c.WHIP.Validate(); err != nil {
		return fmt.Errorf("whip.%w", err)
	}
	if err := c.Hub.Validate(); err != nil {
		return fmt.Errorf("hub.%w", err)
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
		if err := listenaddr.Check(j); err != nil {
			return fmt.Errorf("gossip.join[%d]: %w", i, err)
		}
	}
	if err := c.Gossip.checkExposure(); err != nil {
		return err
	}
	if err := c.WebRTC.Validate(); err != nil {
		return fmt.Errorf("webrtc.%w", err)
	}
	if err := c.HLS.Validate(); err != nil {
		return fmt.Errorf("hls.%w", err)
	}
	if err := c.Serverlets.Validate(); err != nil {
		return fmt.Errorf("serverlets.%w", err)
	}
	if err := c.Overlay.Validate(); err != nil {
		return fmt.Errorf("overlay.%w", err)
	}
	if err := c.VoD.Validate(); err != nil {
		return fmt.Errorf("vod.%w", err)
	}
	if err := c.Dashboard.Validate(); err != nil {
		return fmt.Errorf("dashboard.%w", err)
	}
	if err := c.Auth.Validate(); err != nil {
		return fmt.Errorf("auth.%w", err)
	}
	return nil
}

// checkExposure refuses unencrypted gossip that other hosts can reach: a
// stranger could join, inject streams and prices that make planning fail
// for every stream. It also catches the opposite mistake, seeds on other
// hosts with gossip bound to loopback, which could never join them.
func (g GossipConfig) checkExposure() error {
	if g.Addr == Off {
		return nil
	}
	local := loopbackAddr(g.Addr)
	if !local && g.Key == "" && !g.Insecure {
		return fmt.Errorf("gossip.key: required when gossip.addr (%s) listens beyond loopback, or anyone reaching "+
			"the port joins the cluster; set gossip.key (head -c 32 /dev/urandom | base64), or gossip.addr "+
			"127.0.0.1:7946 for one host, or gossip.insecure: true on a network nobody else reaches", g.Addr)
	}
	if local {
		for i, j := range g.Join {
			if !loopbackAddr(j) {
				return fmt.Errorf("gossip.join[%d]: %s is not on this host but gossip.addr (%s) listens on loopback "+
					"only; set gossip.addr to \":7946\" (with gossip.key)", i, j, g.Addr)
			}
		}
	}
	return nil
}

// loopbackAddr reports whether host:port names this host's loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Redacted is the configuration with its secrets replaced, for
// --print-config and logs.
func (c Config) Redacted() Config {
	const r = "<redacted>"
	for _, s := range []*string{&c.Gossip.Key, &c.Overlay.Secret, &c.SRT.Passphrase, &c.Auth.URLSigningKey} {
		if *s != "" {
			*s = r
		}
	}
	if c.Auth.JWTKey != "" && !strings.Contains(c.Auth.JWTKey, "BEGIN") && !strings.HasPrefix(c.Auth.JWTKey, "file:") {
		c.Auth.JWTKey = r // an HMAC secret; a public key or a file name is no secret
	}
	users := make([]auth.User, len(c.Auth.InternalUsers))
	for i, u := range c.Auth.InternalUsers {
		if u.Pass != "" && !strings.HasPrefix(u.Pass, "sha256:") && !strings.HasPrefix(u.Pass, "argon2:") {
			u.Pass = r
		}
		users[i] = u
	}
	if len(users) > 0 {
		c.Auth.InternalUsers = users
	}
	return c
}
