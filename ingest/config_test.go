package ingest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/ingest"
)

func TestServerConfigsValidateAndErrorsNameTheYAMLKey(t *testing.T) {
	if err := ingest.DefaultRTSPConfig().Validate(); err != nil {
		t.Fatalf("RTSP defaults refused: %v", err)
	}
	if err := ingest.DefaultSRTConfig().Validate(); err != nil {
		t.Fatalf("SRT defaults refused: %v", err)
	}
	rtsp := func(f func(*ingest.RTSPConfig)) error {
		c := ingest.DefaultRTSPConfig()
		f(&c)
		return c.Validate()
	}
	srt := func(f func(*ingest.SRTConfig)) error {
		c := ingest.DefaultSRTConfig()
		f(&c)
		return c.Validate()
	}
	cases := map[string]error{
		"addr":                           rtsp(func(c *ingest.RTSPConfig) { c.Addr = "nonsense" }),
		"udp_rtp_addr":                   rtsp(func(c *ingest.RTSPConfig) { c.UDPRTPAddr = ":8001" }),
		"udp_rtp_addr and udp_rtcp_addr": rtsp(func(c *ingest.RTSPConfig) { c.UDPRTPAddr = ingest.Off }),
		"write_queue_size":               rtsp(func(c *ingest.RTSPConfig) { c.WriteQueueSize = 100 }),
		"read_timeout":                   rtsp(func(c *ingest.RTSPConfig) { c.ReadTimeout = -time.Second }),
		"passphrase":                     srt(func(c *ingest.SRTConfig) { c.Passphrase = "short" }),
		"latency":                        srt(func(c *ingest.SRTConfig) { c.Latency = 0 }),
	}
	for key, err := range cases {
		if err == nil || !strings.HasPrefix(err.Error(), key+":") {
			t.Errorf("bad %s: Validate = %v, want an error starting %q", key, err, key+":")
		}
	}
	if err := rtsp(func(c *ingest.RTSPConfig) { c.UDPRTPAddr, c.UDPRTCPAddr = ingest.Off, ingest.Off }); err != nil {
		t.Errorf("UDP off: %v", err)
	}
}
