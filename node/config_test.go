package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigKeepsDefaultsForFieldsLeftOut(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "name: edge1\nhls:\n  segment_count: 9\n"))
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if cfg.Name != "edge1" || cfg.HLS.SegmentCount != 9 {
		t.Fatalf("file values not applied: %+v", cfg)
	}
	if cfg.HTTP != def.HTTP || cfg.HLS.PartDuration != def.HLS.PartDuration || cfg.SRT.Latency != 120*time.Millisecond {
		t.Fatalf("defaults lost: http %q part %v srt latency %v", cfg.HTTP, cfg.HLS.PartDuration, cfg.SRT.Latency)
	}
	if _, err := LoadConfig(writeConfig(t, "")); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestLoadConfigNamesTheBadField(t *testing.T) {
	for body, field := range map[string]string{
		"htp: :8080\n":                        "htp",
		"rtsp:\n  addr: nonsense\n":           "rtsp.addr",
		"hls:\n  segment_count: 1\n":          "hls.segment_count",
		"log_level: loud\n":                   "log_level",
		"gossip:\n  join: [\"a:1\", \"b\"]\n": "gossip.join[1]",
		"webrtc:\n  advertise_ips: [\"x\"]\n": "webrtc.advertise_ips[0]",
		"srt:\n  passphrase: short\n":         "srt.passphrase",
		"name: \"a b\"\n":                     "name",
		"rtsp:\n  udp_rtp_addr: \"off\"\n":    "udp_rtcp_addr",
		"hls:\n  part_duration: 5s\n":         "hls.part_duration",
		"hub:\n  reader_queue: -1\n":          "hub.reader_queue",
		"srt:\n  latency: notaduration\n":     "line 2",
		"gossip:\n  addr: \":99999\"\n":       "gossip.addr",
		"webrtc:\n  ice_udp_addr: \"off\"\n":  "webrtc.ice_udp_addr",
		"http: \"localhost\"\n":               "http",
		"hls:\n  idle_timeout: 0s\n":          "hls.idle_timeout",
		"webrtc:\n  max_sessions: 0\n":        "webrtc.max_sessions",
		"hub:\n  gop_cache_units: 0\n":        "hub.gop_cache_units",
		"srt:\n  latency: 0s\n":               "srt.latency",
	} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: error %v, want one naming %s", body, err, field)
		}
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestLoadConfigRefusesFewerThanSevenLLHLSSegments(t *testing.T) {
	// 5 passed node's old "≥ 3" check and failed later, inside the muxer,
	// with a message that named no field of the file.
	_, err := LoadConfig(writeConfig(t, "hls:\n  segment_count: 5\n"))
	want := "hls.segment_count: must be ≥ 7 for LL-HLS"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("segment_count 5: error %v, want one containing %q", err, want)
	}
}

func TestLoadConfigReadsEgressSections(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "hls:\n  viewer_timeout: 20s\nwebrtc:\n  gso: false\n  session_timeout: 3s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HLS.ViewerTimeout != 20*time.Second || cfg.WebRTC.GSO || cfg.WebRTC.SessionTimeout != 3*time.Second {
		t.Fatalf("egress sections not read: hls %+v webrtc %+v", cfg.HLS, cfg.WebRTC)
	}
	if !DefaultConfig().WebRTC.GSO {
		t.Fatal("GSO is off by default; want on")
	}
}

func TestGossipBeyondLoopbackNeedsAKey(t *testing.T) {
	key := "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
	for _, tc := range []struct {
		g    GossipConfig
		want string // "" valid, else a fragment of the error
	}{
		{GossipConfig{Addr: "127.0.0.1:7946"}, ""},
		{GossipConfig{Addr: "localhost:7946", Join: []string{"127.0.0.2:7946"}}, ""},
		{GossipConfig{Addr: Off}, ""},
		{GossipConfig{Addr: ":7946"}, "gossip.key: required"},
		{GossipConfig{Addr: "0.0.0.0:7946"}, "gossip.key: required"},
		{GossipConfig{Addr: "10.0.0.5:7946"}, "gossip.key: required"},
		{GossipConfig{Addr: ":7946", Key: key}, ""},
		{GossipConfig{Addr: ":7946", Insecure: true}, ""},
		{GossipConfig{Addr: "127.0.0.1:7946", Join: []string{"10.0.0.5:7946"}}, "gossip.join[0]"},
	} {
		c := DefaultConfig()
		c.Gossip = tc.g
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", tc.g, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want an error with %q", tc.g, err, tc.want)
		}
	}
}

func TestRedactedHidesEverySecret(t *testing.T) {
	c := DefaultConfig()
	c.Gossip.Key, c.Overlay.Secret, c.SRT.Passphrase = "Z29zc2lwLWtleQ==", "overlay-secret", "srt passphrase!!"
	out, err := yaml.Marshal(c.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Z29zc2lwLWtleQ==", "overlay-secret", "srt passphrase!!"} {
		if strings.Contains(string(out), s) {
			t.Errorf("--print-config shows %q", s)
		}
	}
	if c.Gossip.Key != "Z29zc2lwLWtleQ==" {
		t.Error("Redacted changed the config it was called on")
	}
}

func TestLoadConfigRTMPSection(t *testing.T) {
	if d := DefaultConfig().RTMP; d.Addr != ":1935" || d.PublishTimeout != 10*time.Second || d.ReadTimeout != 10*time.Second {
		t.Fatalf("rtmp defaults = %+v, want :1935, 10 s, 10 s", d)
	}
	cfg, err := LoadConfig(writeConfig(t, "rtmp:\n  addr: \"off\"\n"))
	if err != nil || cfg.RTMP.Addr != Off {
		t.Fatalf("rtmp off: %+v %v", cfg.RTMP, err)
	}
	cfg, err = LoadConfig(writeConfig(t, "rtmp:\n  addr: 127.0.0.1:1936\n  tls_cert: c.pem\n  tls_key: k.pem\n  read_timeout: 3s\n"))
	if err != nil || cfg.RTMP.Addr != "127.0.0.1:1936" || cfg.RTMP.TLSKey != "k.pem" || cfg.RTMP.ReadTimeout != 3*time.Second ||
		cfg.RTMP.PublishTimeout != 10*time.Second {
		t.Fatalf("rtmp section: %+v %v", cfg.RTMP, err)
	}
	for body, field := range map[string]string{
		"rtmp:\n  addr: nonsense\n":       "rtmp.addr",
		"rtmp:\n  tls_cert: c.pem\n":      "rtmp.tls_cert and tls_key",
		"rtmp:\n  publish_timeout: -1s\n": "rtmp.publish_timeout",
		"rtmp:\n  read_timeout: -1s\n":    "rtmp.read_timeout",
	} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: error %v, want one naming %s", body, err, field)
		}
	}
}

// The TLS keys between nodes are named when bad: a half-set RTSPS pair,
// a peer CA file that cannot be read.
func TestLoadConfigNamesTheTLSKeysBetweenNodes(t *testing.T) {
	for body, field := range map[string]string{
		"rtsp:\n  tls_cert: c.pem\n":              "rtsp.tls_cert",
		"overlay:\n  peer_ca: /nonexistent.pem\n": "overlay.peer_ca",
	} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: error %v, want one naming %s", body, err, field)
		}
	}
}
