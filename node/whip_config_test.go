package node

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

func TestLoadConfigWHIPSection(t *testing.T) {
	if d := DefaultConfig().WHIP; d.MediaTimeout != 10*time.Second || d.KeyframeInterval != 2*time.Second || d.MaxSessions != 64 {
		t.Fatalf("whip defaults = %+v, want 10 s, 2 s, 64", d)
	}
	cfg, err := LoadConfig(writeConfig(t, "whip:\n  media_timeout: 5s\n  keyframe_interval: 1s\n  max_sessions: 3\n"))
	if err != nil || cfg.WHIP.MediaTimeout != 5*time.Second || cfg.WHIP.KeyframeInterval != time.Second || cfg.WHIP.MaxSessions != 3 {
		t.Fatalf("whip section: %+v %v", cfg.WHIP, err)
	}
	if d := DefaultConfig().WHIP; d.NACKWait != 150*time.Millisecond {
		t.Errorf("whip.nack_wait default %v, want 150ms", d.NACKWait)
	}
	cfg, err = LoadConfig(writeConfig(t, "whip:\n  nack_wait: -1s\n"))
	if err != nil || cfg.WHIP.NACKWait >= 0 {
		t.Fatalf("whip.nack_wait -1s (NACKs off): %+v %v", cfg.WHIP, err)
	}
	cfg, err = LoadConfig(writeConfig(t, "whip:\n  max_sessions: 0\n"))
	if err != nil || cfg.WHIP.MaxSessions != 0 || cfg.WHIP.MediaTimeout != 10*time.Second {
		t.Fatalf("whip off: %+v %v", cfg.WHIP, err)
	}
	for body, field := range map[string]string{
		"whip:\n  media_timeout: 0s\n":                          "whip.media_timeout",
		"whip:\n  media_timeout: -1s\n":                         "whip.media_timeout",
		"whip:\n  keyframe_interval: 0s\n":                      "whip.keyframe_interval",
		"whip:\n  keyframe_interval: 20s\n":                     "whip.keyframe_interval",
		"whip:\n  max_sessions: -1\n":                           "whip.max_sessions",
		"whip:\n  nack_wait: 2s\n":                              "whip.nack_wait",
		"whip:\n  max_sessions: 1000000\n":                      "whip.max_sessions",
		"whip:\n  max_session: 3\n":                             "max_session",
		"whip:\n  media_timeout: soon\n":                        "line 2",
		"whip:\n  addr: \":8080\"\n":                            "addr",
		"whip:\n  keyframe_interval: 3s\n  media_timeout: 2s\n": "whip.keyframe_interval",
	} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: error %v, want one naming %s", body, err, field)
		}
	}
}

// TestWHIPREADMEExampleLoads loads the README's whip section example.
func TestWHIPREADMEExampleLoads(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "```yaml\nwhip:")
	if i < 0 {
		t.Fatal("README has no whip example")
	}
	s = s[i+len("```yaml\n"):]
	s = s[:strings.Index(s, "```")]
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file)
	if err != nil {
		t.Fatalf("README example: %v\n%s", err, s)
	}
	if cfg.WHIP != ingest.DefaultWHIPConfig() {
		t.Errorf("README example %+v is not the defaults %+v", cfg.WHIP, ingest.DefaultWHIPConfig())
	}
}

// TestWHIPMaxSessionsZeroTurnsWHIPOff: with whip.max_sessions 0 a node
// answers its WHIP URLs 404 and runs no WHIP server.
func TestWHIPMaxSessionsZeroTurnsWHIPOff(t *testing.T) {
	n := testOverlayNodeWith(t, "nowhip", "", nil, func(c *Config) { c.WHIP.MaxSessions = 0 })
	if n.WHIP != nil {
		t.Fatal("a WHIP server runs with whip.max_sessions 0")
	}
	base := "http://" + n.httpLn.Addr().String()
	for _, req := range []struct{ method, path string }{{"POST", "/live/cam1/whip"}, {"DELETE", "/live/cam1/whip/abc"}} {
		r, _ := http.NewRequest(req.method, base+req.path, strings.NewReader("v=0\r\n"))
		r.Header.Set("Content-Type", "application/sdp")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s with WHIP off: %d, want 404", req.method, req.path, resp.StatusCode)
		}
	}
}

// TestWHIPMaxSessionsFromConfigIsEnforced: whip.max_sessions reaches the
// WHIP server: with 1, a real publisher is taken and a second one, on
// another stream, is refused 503.
func TestWHIPMaxSessionsFromConfigIsEnforced(t *testing.T) {
	n := testOverlayNodeWith(t, "onewhip", "", nil, func(c *Config) { c.WHIP.MaxSessions = 1 })
	base := "http://" + n.httpLn.Addr().String()
	h264, ogg := testutil.WHIPClip(t, 320, 240, 30, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := testutil.PublishWHIP(ctx, base+"/live/one/whip", testutil.WHIPOptions{H264File: h264, OggFile: ogg})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	testutil.Eventually(t, 15*time.Second, "live/one published", func() bool {
		_, ok := n.Hub.Lookup("live/one")
		return ok
	})
	p2, err := testutil.PublishWHIP(ctx, base+"/live/two/whip", testutil.WHIPOptions{H264File: h264, OggFile: ogg})
	if err == nil {
		p2.Close()
		t.Fatal("a second WHIP session was taken with whip.max_sessions 1")
	}
	var we *testutil.WHEPError
	if !errors.As(err, &we) || we.Status != http.StatusServiceUnavailable {
		t.Fatalf("second publisher: %v, want 503", err)
	}
}
