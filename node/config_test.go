package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
