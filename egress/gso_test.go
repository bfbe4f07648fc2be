package egress_test

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// gsoCounters reads gradient_webrtc_gso_{messages,packets}_total.
func gsoCounters(t *testing.T, reg *prometheus.Registry) (msgs, pkts float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range mfs {
		switch mf.GetName() {
		case "gradient_webrtc_gso_messages_total":
			msgs, seen = mf.GetMetric()[0].GetCounter().GetValue(), seen+1
		case "gradient_webrtc_gso_packets_total":
			pkts, seen = mf.GetMetric()[0].GetCounter().GetValue(), seen+1
		}
	}
	if seen != 2 {
		t.Fatal("GSO counters not registered")
	}
	return msgs, pkts
}

// With GSO on, the RTP packets of a 640x360 stream reach a WHEP viewer
// through UDP_SEGMENT messages and decode (a wrong segment boundary would
// fail SRTP authentication and lose frames); with it off, the same stream
// decodes and no GSO message is sent.
func TestWHEPWithAndWithoutGSODecodes(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4, Bitrate: "1500k"})
	for _, gso := range []bool{true, false} {
		name := map[bool]string{true: "GSO on", false: "GSO off"}[gso]
		t.Run(name, func(t *testing.T) {
			if gso && runtime.GOOS != "linux" {
				t.Skip("UDP GSO is Linux's")
			}
			reg := prometheus.NewRegistry()
			env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) { c.Registerer, c.GSO = reg, gso }))
			testutil.PublishFile(t, env.hub, "live/gso", clip, false)
			s, aus := decodeWHEP(t, env.url("live/gso"), 45, 640, 360)
			// 30 fps: consecutive AUs are about 3000 ticks apart (the
			// clip's millisecond PTS round), else one was lost.
			gaps := 0
			for i := 1; i < len(aus); i++ {
				if d := aus[i].RTPTimestamp - aus[i-1].RTPTimestamp; d < 2800 || d > 3200 {
					gaps++
				}
			}
			st := s.Stats()
			msgs, pkts := gsoCounters(t, reg)
			t.Logf("%s: %d AUs decoded, %d received, %d video packets received; %v GSO messages carried %v packets",
				name, len(aus), st.AccessUnits, st.VideoPackets, msgs, pkts)
			if gso && (msgs == 0 || pkts < 2*msgs) {
				t.Fatalf("GSO on but %v GSO messages with %v packets: GSO not used", msgs, pkts)
			}
			if !gso && (msgs != 0 || pkts != 0) {
				t.Fatalf("GSO off but %v GSO messages with %v packets", msgs, pkts)
			}
			// A datagram cut at a wrong boundary fails SRTP
			// authentication and loses its access unit.
			if gaps > 0 {
				t.Fatalf("%d access units missing among %d", gaps, len(aus))
			}
		})
	}
}
