package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// nodeProc is a `gradient node` process on loopback, measured from /proc.
type nodeProc struct {
	proc               *testutil.Process
	http, rtsp, srtUDP string
}

// gradientBinary builds cmd/gradient once into a temp folder, or uses
// $GRADIENT_BIN.
func gradientBinary(b *testing.B) string {
	if p := os.Getenv("GRADIENT_BIN"); p != "" {
		return p
	}
	out := filepath.Join(b.TempDir(), "gradient")
	cmd := exec.Command("go", "build", "-o", out, "../cmd/gradient")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build gradient: %v\n%s", err, o)
	}
	return out
}

func startNodeProc(b *testing.B) *nodeProc {
	n := &nodeProc{
		http: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
		rtsp: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
	}
	n.srtUDP = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "udp"))
	args := []string{"node", "--name", "bench", "--http", n.http, "--rtsp", n.rtsp,
		"--srt", n.srtUDP, "--rtmp", "off", "--ice-udp", "127.0.0.1:0", "--gossip", "off", "--data", b.TempDir(), "--log-level", "warn"}
	// Every simulated viewer comes from 127.0.0.1: lift the per-client
	// session cap that guards against one client opening hundreds.
	yml := fmt.Sprintf("webrtc:\n  gso: %v\n  max_sessions_per_client: 100000\n", benchGSO())
	cfg := filepath.Join(b.TempDir(), "node.yaml")
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		b.Fatal(err)
	}
	args = append(args, "--config", cfg)
	fmt.Printf("  node process: webrtc.gso %v\n", benchGSO())
	n.proc = testutil.Start(b, gradientBinary(b), args...)
	testutil.Eventually(b, 20*time.Second, "node answers /healthz", func() bool {
		r, err := http.Get("http://" + n.http + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	return n
}

// cpuSeconds is the process's user+system CPU time so far.
func (n *nodeProc) cpuSeconds(b *testing.B) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.proc.Cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// rssBytes is the process's resident set size.
func (n *nodeProc) rssBytes(b *testing.B) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.proc.Cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// bytesIn is the payload bytes published into path so far.
func (n *nodeProc) bytesIn(b *testing.B, path string) uint64 {
	r, err := http.Get("http://" + n.http + "/api/v1/streams")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Body.Close()
	var v struct {
		Streams []struct {
			Path    string `json:"path"`
			BytesIn uint64 `json:"bytes_in"`
		} `json:"streams"`
	}
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		b.Fatal(err)
	}
	for _, s := range v.Streams {
		if s.Path == path {
			return s.BytesIn
		}
	}
	return 0
}

func (n *nodeProc) waitStream(b *testing.B, path string) {
	testutil.Eventually(b, 30*time.Second, "stream "+path+" live", func() bool { return n.bytesIn(b, path) > 0 })
}

// benchClip is the benchmark's stream: 1280x720, 30 fps, 2 Mbit/s H.264,
// one IDR a second, no audio (WebRTC would drop AAC, so both protocols
// carry the same bytes).
func benchClip(b *testing.B) string {
	return testutil.Clip(b, testutil.ClipOptions{Width: 1280, Height: 720, FPS: 30, Seconds: 20, Bitrate: "2M"})
}

// benchGSO is whether the node process (startNodeProc) sends WebRTC with
// UDP GSO (webrtc.gso, on by default); GRADIENT_BENCH_GSO=0 turns it off,
// to compare.
func benchGSO() bool { return os.Getenv("GRADIENT_BENCH_GSO") != "0" }

func header(b *testing.B, what string) {
	fmt.Printf("\n== %s (GOMAXPROCS %d, %s)\n", what, runtime.GOMAXPROCS(0), time.Now().Format(time.RFC3339))
}
