package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// TestVoDAddWithTheCLIThenBrowsePlayAndSeekInChromium is a title's whole
// way on one node: `gradient vod add` uploads a clip and waits for it, the
// catalog page lists it, Chromium plays it, seeks to 70 % and plays there.
func TestVoDAddWithTheCLIThenBrowsePlayAndSeekInChromium(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 24, GOP: 50, Audio: "aac"})
	bin := buildGradient(t)
	base := "http://" + n.HTTPAddr()
	cmd := exec.Command(bin, "vod", "add", "--node", base, "--title", "Big Trip", "--description", "<b>not bold</b>", clip)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gradient vod add: %v\n%s%s", err, out, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	id := lines[len(lines)-1]
	var tj vod.TitleJSON
	if code := getJSONInto(t, base+"/api/v1/vod/titles/"+id, &tj); code != http.StatusOK || tj.State != vod.StateReady {
		t.Fatalf("the id %q that vod add printed: HTTP %d, %+v", id, code, tj)
	}
	ls, err := exec.Command(bin, "vod", "ls", "--node", base).CombinedOutput()
	if err != nil || !strings.Contains(string(ls), id) || !strings.Contains(string(ls), "Big Trip") {
		t.Fatalf("gradient vod ls: %v\n%s", err, ls)
	}

	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(base+"/vod/")); err != nil {
		t.Fatal(err)
	}
	var found bool
	if err := chromedp.Run(ctx, chromedp.Evaluate(fmt.Sprintf(`!!document.querySelector('a.title[data-id=%q]')`, id), &found)); err != nil || !found {
		t.Fatalf("the catalog page does not list the title: %v", err)
	}
	if err := chromedp.Run(ctx, chromedp.Click(fmt.Sprintf(`a.title[data-id=%q]`, id), chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	state := func() vodVideo { return vodPlayerState(ctx) }
	var v vodVideo
	testutil.Eventually(t, 40*time.Second, "the player plays 30 frames", func() bool {
		v = state()
		return v.Frames >= 30 && v.Duration > 0
	})
	if math.Abs(v.Duration-24) > 4 {
		t.Errorf("the player's duration is %.1f s, want 24 ± one segment", v.Duration)
	}
	target := 0.7 * v.Duration
	before := v.Frames
	if err := chromedp.Run(ctx, chromedp.Evaluate(fmt.Sprintf(`document.getElementById('v').currentTime = %f`, target), nil)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 40*time.Second, "the player plays 30 frames after seeking to 70 %", func() bool {
		v = state()
		return v.Frames >= before+30 && v.Time >= target
	})
	// Playing 30 frames takes ~1.2 s; the position must be near the
	// target, not restarted from the beginning or from a far keyframe.
	if v.Time < target || v.Time > target+4+3 {
		t.Errorf("after the seek to %.1f s the player is at %.1f s, want within one segment (+ play time)", target, v.Time)
	}
	testutil.Screenshot(t, ctx, "vod-player")
}

func getJSONInto(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
	return resp.StatusCode
}

// TestVoDKill9DuringPackagingLeavesNoHalfTitle kills a node process while
// it packages a title, restarts it on the same data folder, and finds the
// title packaged whole: every chunk of its manifest served and matching
// its digest, no temporary file left.
func TestVoDKill9DuringPackagingLeavesNoHalfTitle(t *testing.T) {
	bin := buildGradient(t)
	data := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	start := func() *testutil.Process {
		p := testutil.Start(t, bin, "node", "--name", "vod1", "--http", httpAddr, "--rtsp", "off", "--srt", "off", "--rtmp", "off",
			"--gossip", "off", "--ice-udp", "127.0.0.1:0", "--data", data)
		testutil.Eventually(t, 20*time.Second, "the node answers /healthz", func() bool {
			r, err := http.Get("http://" + httpAddr + "/healthz")
			if err != nil {
				return false
			}
			r.Body.Close()
			return r.StatusCode == 200
		})
		return p
	}
	p := start()
	// H.265 is transcoded: packaging takes long enough to be cut.
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 40, GOP: 50, VideoCodec: "libx265", Audio: "aac"})
	base := "http://" + httpAddr
	out, err := exec.Command(bin, "vod", "add", "--no-wait", "--node", base, "--title", "Cut short", clip).Output()
	if err != nil {
		t.Fatalf("vod add: %v", err)
	}
	id := strings.TrimSpace(string(out))
	var tj vod.TitleJSON
	testutil.Eventually(t, 60*time.Second, "packaging has started", func() bool {
		getJSONInto(t, base+"/api/v1/vod/titles/"+id, &tj)
		return tj.State != vod.StateProcessing || tj.Progress > 0
	})
	p.Cmd.Process.Kill()
	p.Wait(t, 10*time.Second)
	if tj.State != vod.StateProcessing {
		t.Logf("packaging ended (%s) before the kill; the restart checks still apply", tj.State)
	}

	p = start()
	testutil.Eventually(t, 120*time.Second, "the title is ready after the restart", func() bool {
		getJSONInto(t, base+"/api/v1/vod/titles/"+id, &tj)
		if tj.State == vod.StateFailed {
			t.Fatalf("the title failed after the restart: %s", tj.Error)
		}
		return tj.State == vod.StateReady
	})
	resp, err := http.Get(base + "/vod/" + id + "/source.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	io.Copy(&body, resp.Body)
	resp.Body.Close()
	chunks := 0
	for _, l := range strings.Split(body.String(), "\n") {
		uri := l
		if strings.HasPrefix(l, "#EXT-X-MAP:URI=") {
			uri = strings.Trim(strings.TrimPrefix(l, "#EXT-X-MAP:URI="), `"`)
		}
		if !strings.HasPrefix(uri, "/vod/chunks/") {
			continue
		}
		r, err := http.Get(base + uri)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		sum := sha256.Sum256(b)
		if r.StatusCode != 200 || r.Header.Get("Repr-Digest") != vod.Digest(sum).ReprDigest() {
			t.Errorf("chunk %s: HTTP %d, Repr-Digest %q, bytes hash to %q", uri, r.StatusCode, r.Header.Get("Repr-Digest"), vod.Digest(sum).ReprDigest())
		}
		chunks++
	}
	if chunks < 5 {
		t.Fatalf("the media playlist names %d chunks:\n%s", chunks, body.String())
	}
	left, _ := filepath.Glob(filepath.Join(data, "vod", "uploads", "*"))
	tmp, _ := filepath.Glob(filepath.Join(data, "vod", "chunks", ".tmp*"))
	if len(left)+len(tmp) != 0 {
		t.Errorf("left behind: uploads %v, temporary chunks %v", left, tmp)
	}
}

// vodVideo is what the VoD player page's <video> shows.
type vodVideo struct {
	Frames   int     `json:"frames"`
	Time     float64 `json:"time"`
	Duration float64 `json:"duration"`
	Mode     string  `json:"mode"`
}

// vodPlayerState reads the VoD player page's video element: frames shown,
// position, duration and the player's mode (zero values before it exists).
func vodPlayerState(ctx context.Context) vodVideo {
	var raw string
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	chromedp.Run(ectx, chromedp.Evaluate(`(function(){var v=document.getElementById('v');if(!v)return '{}';
		var q=v.getVideoPlaybackQuality?v.getVideoPlaybackQuality():{totalVideoFrames:0};
		return JSON.stringify({frames:q.totalVideoFrames,time:v.currentTime,duration:v.duration||0,mode:(window.gradientPlayer||{}).mode||''})})()`, &raw))
	var v vodVideo
	json.Unmarshal([]byte(raw), &v)
	return v
}
