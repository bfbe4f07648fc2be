package testutil

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// NodeOptions describe a `gradient node` process on loopback for StartNode.
type NodeOptions struct {
	Bin, Name string
	// GossipKey is the cluster's gossip.key (base64); Join a gossip
	// address to join, none when empty.
	GossipKey, Join string
	// Extra is YAML appended to the configuration: whole top-level
	// sections ("overlay:\n  probe_interval: 300ms\n").
	Extra string
}

// NodeProc is a node process StartNode started: its addresses, data
// folder and process.
type NodeProc struct {
	Name, HTTP, RTSP, Gossip, Data string
	Proc                           *Process
}

// StartNode starts a node with every listener on a free loopback port
// (RTSP over TCP only, SRT and RTMP off, ICE on an ephemeral port), its
// own data folder and the gossip key, and waits until it answers
// /healthz. The process ends with the test.
func StartNode(t testing.TB, o NodeOptions) *NodeProc {
	t.Helper()
	p := &NodeProc{Name: o.Name,
		HTTP:   fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")),
		RTSP:   fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")),
		Gossip: fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")),
		Data:   t.TempDir()}
	join := ""
	if o.Join != "" {
		join = `  join: ["` + o.Join + `"]` + "\n"
	}
	cfg := fmt.Sprintf(`name: %s
data: %s
http: "%s"
rtsp: {addr: "%s", udp_rtp_addr: "off", udp_rtcp_addr: "off"}
srt: {addr: "off"}
rtmp: {addr: "off"}
webrtc: {ice_udp_addr: "127.0.0.1:0"}
gossip:
  addr: "%s"
  key: "%s"
%s%s`, o.Name, p.Data, p.HTTP, p.RTSP, p.Gossip, o.GossipKey, join, o.Extra)
	file := filepath.Join(t.TempDir(), o.Name+".yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Proc = Start(t, o.Bin, "node", "--config", file)
	Eventually(t, 20*time.Second, o.Name+" answers /healthz", func() bool {
		r, err := http.Get("http://" + p.HTTP + "/healthz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	return p
}
