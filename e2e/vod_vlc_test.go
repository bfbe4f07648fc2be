package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// TestVoDPlaysInVLC: VLC (Debian's, adaptive demux) opens a ready title's
// master playlist, takes the fMP4 rendition (init section, then segments)
// and decodes it. VLC refuses to run as root; as root the test runs it as
// nobody.
func TestVoDPlaysInVLC(t *testing.T) {
	vlc, err := exec.LookPath("cvlc")
	if err != nil {
		t.Fatal("cvlc not found: run scripts/setup.sh (it installs vlc-bin and vlc-plugin-base)")
	}
	bin := buildGradient(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	testutil.Start(t, bin, "node", "--name", "vlc", "--http", httpAddr, "--rtsp", "off", "--srt", "off",
		"--gossip", "off", "--ice-udp", "127.0.0.1:0", "--data", t.TempDir())
	testutil.Eventually(t, 20*time.Second, "the node answers /healthz", func() bool {
		r, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 12, GOP: 25, Audio: "aac"})
	out, err := exec.Command(bin, "vod", "add", "--node", "http://"+httpAddr, "--title", "For VLC", clip).Output()
	if err != nil {
		t.Fatalf("vod add: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	id := lines[len(lines)-1]

	args := []string{"-I", "dummy", "--vout", "dummy", "--aout", "dummy", "--play-and-exit", "--run-time", "6", "-vv",
		"http://" + httpAddr + "/vod/" + id + "/index.m3u8"}
	cmd := exec.Command(vlc, args...)
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "nobody", "--", vlc}, args...)...)
	}
	cmd.Dir = os.TempDir()
	done := make(chan struct{})
	var log []byte
	go func() {
		log, _ = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("VLC did not finish within 60 s")
	}
	s := string(log)
	segments := strings.Count(s, "Retrieving http://"+httpAddr+"/vod/chunks/") - 1 // the init section
	for _, want := range []string{"using demux module \"adaptive\"", "Changing stream format Unknown -> MP4",
		"/vod/" + id + "/source.m3u8", "using video decoder module"} {
		if !strings.Contains(s, want) {
			t.Fatalf("VLC's log has no %q:\n%.6000s", want, s)
		}
	}
	if segments < 2 {
		t.Fatalf("VLC fetched %d segments in 6 s of play, want ≥ 2:\n%.6000s", segments, s)
	}
	if strings.Contains(s, "adaptive demux error") || strings.Contains(s, "mp4 demux error") {
		t.Fatalf("VLC reported a demux error:\n%.6000s", s)
	}
}
