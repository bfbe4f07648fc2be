package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	srt "github.com/datarhei/gosrt"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// vmRSS is a process's resident memory in bytes (/proc/PID/status).
func vmRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// An SRT publisher that sends one valid IDR, then MPEG-TS continuation
// packets of the video PID that never start a new PES, is cut for its
// buffering cap (the demuxer would otherwise buffer them without end), and
// the node's RSS stays within 150 MB of what it was before the flood.
func TestAbuseSRTContinuationFloodIsCutAndMemoryBounded(t *testing.T) {
	// A 1 MiB cap per PES (default 8 MiB): the flood reaches it within the
	// seconds a shared test machine's SRT link carries.
	n := startAbuseNode(t, map[string]string{"srt": `{addr: "$SRT", max_pes_bytes: 1048576, max_buffered_bytes: 2097152}`})
	n.waitHealthy(t)
	pid := n.proc.Cmd.Process.Pid

	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 2})
	ts := filepath.Join(t.TempDir(), "clip.ts")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-i", clip, "-c", "copy",
		"-mpegts_start_pid", "256", "-f", "mpegts", ts).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	valid, err := os.ReadFile(ts)
	if err != nil {
		t.Fatal(err)
	}

	conf := srt.DefaultConfig()
	conf.StreamId = "publish:live/flood"
	conf.ConnectionTimeout = 5 * time.Second
	c, err := srt.Dial("srt", n.srt, conf)
	if err != nil {
		t.Fatalf("SRT dial: %v", err)
	}
	defer c.Close()
	const chunk = 7 * 188
	for i := 0; i+chunk <= len(valid); i += chunk {
		if _, err := c.Write(valid[i : i+chunk]); err != nil {
			t.Fatalf("valid MPEG-TS write: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	n.waitLive(t, "live/flood")
	time.Sleep(time.Second)
	base := vmRSS(t, pid)

	// The flood: PID 256 (the video), no payload-unit start, payload only,
	// the continuity counter running on.
	pkt := make([]byte, chunk)
	cc := byte(0)
	fill := func() {
		for p := 0; p < 7; p++ {
			b := pkt[p*188 : (p+1)*188]
			b[0], b[1], b[2], b[3] = 0x47, 0x01, 0x00, 0x10|cc
			for i := 4; i < 188; i++ {
				b[i] = byte(i)
			}
			cc = (cc + 1) & 0x0f
		}
	}
	var peak int64
	var sent int64
	cut := false
	deadline := time.Now().Add(60 * time.Second)
	for sent < 256<<20 && time.Now().Before(deadline) {
		fill()
		if _, err := c.Write(pkt); err != nil {
			cut = true
			t.Logf("flood write failed after %d MB: %v", sent>>20, err)
			break
		}
		sent += chunk
		if sent%(1<<20) < chunk {
			if r := vmRSS(t, pid); r > peak {
				peak = r
			}
			if strings.Contains(n.proc.Output(), "srt publisher dropped: over a buffering cap") {
				cut = true
				break
			}
			time.Sleep(5 * time.Millisecond) // let the sender's queue drain at a pace the link takes
		}
	}
	if r := vmRSS(t, pid); r > peak {
		peak = r
	}
	t.Logf("node RSS before the flood %d MB, peak during it %d MB, flood sent %d MB", base>>20, peak>>20, sent>>20)
	testutil.Eventually(t, 30*time.Second, "the flooding publisher is dropped for a buffering cap", func() bool {
		return strings.Contains(n.proc.Output(), "srt publisher dropped: over a buffering cap")
	})
	if !cut {
		t.Log("the flooder's writes did not fail, but the node dropped it (its log says so)")
	}
	if peak-base > 150<<20 {
		t.Fatalf("node RSS grew %d MB during the flood, want at most 150 MB", (peak-base)>>20)
	}
	testutil.Eventually(t, 30*time.Second, "live/flood ended", func() bool { return !n.live(t, "live/flood") })
	n.waitHealthy(t)
}
