package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/gradient-cdn/gradient/internal/listenaddr"
	"github.com/gradient-cdn/gradient/node"
)

// parseRTSPUDP parses --rtsp-udp: "RTP,RTCP" (two host:port addresses),
// "RTP" alone (RTCP on the next port), or "off" (the UDP transport off,
// TCP interleaved only). The RTP port must be even and the RTCP port the
// next one: RTSP pairs them so, and gortsplib refuses anything else.
func parseRTSPUDP(v string) (rtp, rtcp string, err error) {
	v = strings.TrimSpace(v)
	if v == node.Off {
		return node.Off, node.Off, nil
	}
	rtp, rtcp, pair := strings.Cut(v, ",")
	rtp, rtcp = strings.TrimSpace(rtp), strings.TrimSpace(rtcp)
	if err := listenaddr.Check(rtp); err != nil {
		return "", "", fmt.Errorf("--rtsp-udp: RTP address: %w (want RTP,RTCP such as 127.0.0.1:8002,127.0.0.1:8003, or off)", err)
	}
	host, port, _ := net.SplitHostPort(rtp)
	p, _ := strconv.Atoi(port)
	if p == 0 || p%2 != 0 {
		return "", "", fmt.Errorf("--rtsp-udp: RTP port %d must be even and not 0 (RTSP pairs RTP on an even port with RTCP on the next)", p)
	}
	if !pair {
		return rtp, net.JoinHostPort(host, strconv.Itoa(p+1)), nil
	}
	if err := listenaddr.Check(rtcp); err != nil {
		return "", "", fmt.Errorf("--rtsp-udp: RTCP address: %w", err)
	}
	_, cport, _ := net.SplitHostPort(rtcp)
	if c, _ := strconv.Atoi(cport); c != p+1 {
		return "", "", fmt.Errorf("--rtsp-udp: RTCP port %d must be the RTP port plus one (%d)", c, p+1)
	}
	return rtp, rtcp, nil
}
