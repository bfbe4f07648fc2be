package main

import (
	"strings"
	"testing"
)

func TestParseRTSPUDP(t *testing.T) {
	for _, c := range []struct {
		in, rtp, rtcp, err string
	}{
		{"off", "off", "off", ""},
		{"127.0.0.1:8002,127.0.0.1:8003", "127.0.0.1:8002", "127.0.0.1:8003", ""},
		{":8004, :8005", ":8004", ":8005", ""},
		{"127.0.0.1:8002", "127.0.0.1:8002", "127.0.0.1:8003", ""}, // RTCP on the next port
		{"127.0.0.1:8003,127.0.0.1:8004", "", "", "must be even"},
		{":0", "", "", "must be even"},
		{"127.0.0.1:8002,127.0.0.1:8005", "", "", "plus one (8003)"},
		{"8002,8003", "", "", "RTP address"},
		{":8002,nonsense", "", "", "RTCP address"},
		{"", "", "", "RTP address"},
	} {
		rtp, rtcp, err := parseRTSPUDP(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), "--rtsp-udp") {
				t.Errorf("%q: error %v, want one from --rtsp-udp saying %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || rtp != c.rtp || rtcp != c.rtcp {
			t.Errorf("%q = %q, %q, %v; want %q, %q", c.in, rtp, rtcp, err, c.rtp, c.rtcp)
		}
	}
}
