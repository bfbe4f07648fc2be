package ingest_test

import (
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/ingest"
)

// TestRTSPConfigWantsConsecutiveUDPPorts: an RTCP port other than the RTP
// port plus one is refused by Validate, naming the key, rather than by
// gortsplib when the node starts.
func TestRTSPConfigWantsConsecutiveUDPPorts(t *testing.T) {
	c := ingest.DefaultRTSPConfig()
	c.UDPRTPAddr, c.UDPRTCPAddr = ":8002", ":8001"
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "udp_rtcp_addr:") || !strings.Contains(err.Error(), "8003") {
		t.Errorf("RTP 8002 with RTCP 8001: Validate = %v, want udp_rtcp_addr naming 8003", err)
	}
	c.UDPRTCPAddr = "127.0.0.1:8003"
	if err := c.Validate(); err != nil {
		t.Errorf("RTP 8002 with RTCP 8003: %v", err)
	}
}
