package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
)

// TestTwoNodesOnOneHostWithAPortFlagEach runs two `gradient node`
// processes on one host, every listener of each set by flag (--http,
// --rtsp, --rtsp-udp, --srt, --rtmp, --ice-udp, --gossip): both start, answer
// /healthz, log their own RTSP UDP ports, and join one cluster where each
// sees the other's overlay.region.
func TestTwoNodesOnOneHostWithAPortFlagEach(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gradient")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gradient").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	type nodeRun struct {
		name, region, http, gossip string
		rtp                        int
		p                          *testutil.Process
	}
	nodes := []*nodeRun{{name: "a", region: "eu"}, {name: "b", region: "us"}}
	for i, n := range nodes {
		n.rtp, _ = freeRTPPair(t)
		n.http = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
		n.gossip = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
		cfg := writeYAML(t, fmt.Sprintf("overlay:\n  region: %s\n  region_prices:\n    - {a: eu, b: us, price: 4}\n", n.region))
		args := []string{"node", "--name", n.name, "--config", cfg, "--data", t.TempDir(),
			"--http", n.http,
			"--rtsp", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
			"--rtsp-udp", fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d", n.rtp, n.rtp+1),
			"--srt", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "udp")),
			"--rtmp", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
			"--ice-udp", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "udp")),
			"--gossip", n.gossip}
		if i > 0 {
			args = append(args, "--join", nodes[0].gossip)
		}
		n.p = testutil.Start(t, bin, args...)
		testutil.Eventually(t, 20*time.Second, n.name+" ready", func() bool { return strings.Contains(n.p.Output(), "node ready") })
	}
	for _, n := range nodes {
		resp, err := http.Get("http://" + n.http + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s /healthz: %v %v\n%s", n.name, err, resp, n.p.Output())
		}
		resp.Body.Close()
		if want := fmt.Sprintf("udp_rtp=127.0.0.1:%d udp_rtcp=127.0.0.1:%d", n.rtp, n.rtp+1); !strings.Contains(n.p.Output(), want) {
			t.Errorf("%s does not log %q:\n%s", n.name, want, n.p.Output())
		}
	}
	for i, n := range nodes {
		other := nodes[1-i]
		testutil.Eventually(t, 15*time.Second, n.name+" lists "+other.name+" alive with its region", func() bool {
			resp, err := http.Get("http://" + n.http + "/api/v1/cluster")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var st overlay.ClusterStatus
			if json.NewDecoder(resp.Body).Decode(&st) != nil {
				return false
			}
			for _, m := range st.Members {
				if m.Name == other.name && m.State == "alive" && m.Meta.Region == other.region {
					return true
				}
			}
			return false
		})
	}
	for _, n := range nodes {
		n.p.Cmd.Process.Signal(syscall.SIGTERM)
		if err := n.p.Wait(t, 15*time.Second); err != nil {
			t.Errorf("%s exit after SIGTERM: %v\n%s", n.name, err, n.p.Output())
		}
	}
}

// TestNodeRefusesABadRTSPUDPFlag: an odd RTP port or an RTCP port that is
// not the next one is refused before the node starts, naming the flag.
func TestNodeRefusesABadRTSPUDPFlag(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gradient")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gradient").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, v := range []string{"127.0.0.1:8003,127.0.0.1:8004", "127.0.0.1:8002,127.0.0.1:9000"} {
		out, err := exec.Command(bin, "node", "--rtsp-udp", v, "--gossip", "off").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--rtsp-udp") {
			t.Errorf("--rtsp-udp %s: %v\n%s", v, err, out)
		}
	}
}
