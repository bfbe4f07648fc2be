package egress_test

import (
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

func TestEgressDefaultConfigsAreValid(t *testing.T) {
	for name, err := range map[string]error{
		"webrtc":      egress.DefaultWebRTCConfig().Validate(),
		"hls":         egress.DefaultHLSConfig().Validate(),
		"rtsp reader": egress.DefaultRTSPReaderConfig().Validate(),
		"player":      egress.DefaultPlayerConfig().Validate(),
	} {
		if err != nil {
			t.Errorf("Default %s config: %v", name, err)
		}
	}
}

func TestEgressConstructorsNameTheBadFieldByItsYAMLKey(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	_, errHLS := egress.NewHLS(egress.HLSConfig{SegmentCount: 5}, hub, nil)
	_, errWebRTC := egress.NewWebRTC(egress.WebRTCConfig{AdvertiseIPs: []string{"nope"}}, hub, nil)
	_, errRTSP := egress.NewRTSPReader(egress.RTSPReaderConfig{MaxPayloadSize: 9000}, hub, nil)
	for want, err := range map[string]error{
		"segment_count: must be ≥ 7 for LL-HLS": errHLS,
		"advertise_ips[0]":                      errWebRTC,
		"max_payload_size":                      errRTSP,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one naming %q", err, want)
		}
	}
}
