package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
)

// TestNodeCommandLogsEachListenerAndStopsOnSIGTERM runs the real binary as
// an operator would, with flags only.
func TestNodeCommandLogsEachListenerAndStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gradient")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gradient").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	rtp, _ := freeRTPPair(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	p := testutil.Start(t, bin, "node", "--name", "cli",
		"--http", httpAddr,
		"--rtsp", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		"--srt", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "udp")),
		"--rtmp", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		"--ice-udp", "127.0.0.1:0",
		"--gossip", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		"--data", t.TempDir(), "--config", writeYAML(t, fmt.Sprintf("rtsp:\n  udp_rtp_addr: 127.0.0.1:%d\n  udp_rtcp_addr: 127.0.0.1:%d\nhttp: 127.0.0.1:1\n", rtp, rtp+1)))
	testutil.Eventually(t, 20*time.Second, "node ready", func() bool { return strings.Contains(p.Output(), "node ready") })
	out := p.Output()
	for _, want := range []string{"rtsp server listening", "srt listening", "rtmp listening", "webrtc egress listening", "service=http addr=" + httpAddr, "service=gossip"} {
		if strings.Count(out, want) != 1 {
			t.Errorf("want exactly one %q line in:\n%s", want, out)
		}
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Output())
	}
	if !strings.Contains(p.Output(), "node stopped") {
		t.Fatalf("no clean shutdown line:\n%s", p.Output())
	}
}

func TestNodeCommandRefusesBadFlagsNamingThem(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gradient")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gradient").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "node", "--http", "nonsense", "--gossip", "off").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "http:") {
		t.Fatalf("bad --http: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "node", "--config", writeYAML(t, "no_such_field: 1\n")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no_such_field") {
		t.Fatalf("unknown config field: %v\n%s", err, out)
	}
}

func writeYAML(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "node.yaml")
	if err := writeFile(p, body); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProfilerIsServedOnlyWhenConfigured(t *testing.T) {
	off := startNode(t)
	// Without it the path is just a (player page) URL like any other.
	if _, body := httpDo(t, "GET", off.httpURL("debug/pprof/"), "", nil); strings.Contains(body, "goroutine") {
		t.Fatal("profiler served on the public HTTP port without pprof: true")
	}
	on := startNodeWith(t, func(c *node.Config) { c.PProf = true })
	if code, body := httpDo(t, "GET", on.httpURL("debug/pprof/"), "", nil); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof: true: %d %q", code, body)
	}
}
