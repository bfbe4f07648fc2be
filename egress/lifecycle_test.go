package egress_test

import (
	"testing"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// component is the lifecycle every egress component shares.
type component interface {
	Start() error
	Close() error
}

func TestEgressComponentsCloseWithoutStartAndTwice(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	wcfg := egress.DefaultWebRTCConfig()
	wcfg.ICEUDPAddr = "127.0.0.1:0"
	build := map[string]func() (component, error){
		"webrtc": func() (component, error) { return egress.NewWebRTC(wcfg, hub, nil) },
		"hls":    func() (component, error) { return egress.NewHLS(egress.DefaultHLSConfig(), hub, nil) },
	}
	// The RTSP reader has no Start (it opens shared streams when the RTSP
	// server asks) and the player none either (it only answers requests).
	rd, err := egress.NewRTSPReader(egress.DefaultRTSPReaderConfig(), hub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Close(); err != nil {
		t.Errorf("rtsp reader: Close: %v", err)
	}
	if err := rd.Close(); err != nil {
		t.Errorf("rtsp reader: second Close: %v", err)
	}
	for name, newC := range build {
		c, err := newC()
		if err != nil {
			t.Fatalf("%s: New: %v", name, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: Close without Start: %v", name, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: second Close: %v", name, err)
		}
		if c, err = newC(); err != nil {
			t.Fatalf("%s: New: %v", name, err)
		}
		if err := c.Start(); err != nil {
			t.Fatalf("%s: Start: %v", name, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: second Close after Start: %v", name, err)
		}
	}
}
