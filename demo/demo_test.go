package demo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
)

// TestNodeConfigLoads: the config file the demo writes for each node loads
// with the node's strict loader, with the shared key, the node's region,
// dear links between regions and the control URL.
func TestNodeConfigLoads(t *testing.T) {
	c := Config{Nodes: 5, Bin: "x"}
	c.fill()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := &demo{cfg: c, key: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	want := []string{"eu", "eu", "us", "us", "ap"}
	for i := 0; i < c.Nodes; i++ {
		p := filepath.Join(t.TempDir(), "node.yaml")
		if err := os.WriteFile(p, []byte(d.nodeConfig(i)), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := node.LoadConfig(p)
		if err != nil {
			t.Fatalf("node %d: %v\n%s", i, err, d.nodeConfig(i))
		}
		if cfg.Overlay.Region != want[i] || cfg.Gossip.Key != d.key || cfg.Dashboard.DemoURL != "http://127.0.0.1:8180" {
			t.Errorf("node %d: region %q key %q demo_url %q", i, cfg.Overlay.Region, cfg.Gossip.Key, cfg.Dashboard.DemoURL)
		}
		if m := cfg.Overlay.RegionPrices.Multiplier("eu", "ap"); m != 20 {
			t.Errorf("eu-ap multiplier %v, want 20", m)
		}
		if m := cfg.Overlay.RegionPrices.Multiplier("us", "us"); m != 1 {
			t.Errorf("us-us multiplier %v, want 1", m)
		}
	}
}

// TestValidateRefusesBadSettings names the setting at fault.
func TestValidateRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Nodes = 51 }, "--nodes"},
		{func(c *Config) { c.Viewers = -1 }, "--viewers"},
		{func(c *Config) { c.RTSPUDPBase = 8001 }, "--rtsp-udp-base"},
		{func(c *Config) { c.Kill = "demo-7" }, "--kill"},
		{func(c *Config) { c.SRTBase = 8189 }, "is both"},
		{func(c *Config) { c.HTTPBase = 65534 }, "out of range"},
	} {
		c := Config{Bin: "x"}
		c.fill()
		tc.edit(&c)
		c.fill()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error with %q, got %v", tc.want, err)
		}
	}
	// UDP on a port number another node uses for TCP is no collision.
	c := Config{Bin: "x", ICEBase: 8082}
	c.fill()
	if err := c.Validate(); err != nil {
		t.Errorf("ICE (UDP) on HTTP's (TCP) port numbers: %v", err)
	}
}

// TestViewersPlayThroughWatch runs the demo's WHEP and HLS viewers against
// a real node with a stream: each enters through /watch, receives media,
// and counts at the node with its device class (a WebRTC session, an HLS
// viewer with device=phone and a viewer token); the WHEP session is
// deleted when the viewer stops.
func TestViewersPlayThroughWatch(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.Name = "demo-0"
	cfg.Data = t.TempDir()
	port := testutil.FreePort(t, "tcp")
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.RTSP.Addr, cfg.SRT.Addr, cfg.RTMP.Addr, cfg.Gossip.Addr = node.Off, node.Off, node.Off, node.Off
	cfg.RTSP.UDPRTPAddr, cfg.RTSP.UDPRTCPAddr = node.Off, node.Off
	cfg.WebRTC.ICEUDPAddr = "127.0.0.1:0"
	logs := &testutil.LogBuffer{}
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		n.Close()
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	}()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 180, FPS: 15, Audio: "aac"})
	stop := testutil.PublishFile(t, n.Hub, Stream, clip, false)
	defer stop()

	c := Config{Nodes: 1, HTTPBase: port, Bin: "x"}
	c.fill()
	d := &demo{cfg: c, log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	whep, hls := d.newViewer(0), d.newViewer(3)
	if whep.hls || !hls.hls || whep.class != "phone" || hls.class != "phone" {
		t.Fatalf("viewer 0: hls %v %s, viewer 3: hls %v %s", whep.hls, whep.class, hls.hls, hls.class)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, v := range []*viewer{whep, hls} {
		go func() { v.run(ctx); done <- struct{}{} }()
	}
	testutil.Eventually(t, 40*time.Second, "both viewers receive media and count at the node", func() bool {
		hv := false
		for _, v := range n.HLS.Viewers() {
			if v.Path == Stream && v.Query.Get("device") == "phone" && strings.HasPrefix(v.Client, "viewer:") {
				hv = true
			}
		}
		return hv && n.WebRTC.Sessions() == 1 && whep.bytes.Load() > 50_000 && hls.bytes.Load() > 50_000
	})
	cancel()
	for range 2 {
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("a viewer did not stop within 15s of its context's end")
		}
	}
	testutil.Eventually(t, 10*time.Second, "the WHEP session is deleted", func() bool { return n.WebRTC.Sessions() == 0 })
}
