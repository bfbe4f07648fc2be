package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// TestLiveToVoDRecordsAnRTSPStreamThatIsWatchableWhileItRunsAndAfter:
// ffmpeg publishes over RTSP, `gradient vod record` records the stream;
// while it runs ffprobe reads the EVENT playlist (H.264, segments that add
// up to more than 0 s) and Chromium plays it and seeks 10 s back; after
// the publisher stops the title is ready, its duration within one segment
// of the time it was recorded, and ffprobe reads the VOD playlist.
func TestLiveToVoDRecordsAnRTSPStreamThatIsWatchableWhileItRunsAndAfter(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	n := startNode(t)
	base := "http://" + n.HTTPAddr()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 20, GOP: 50, Audio: "aac"})
	pub := testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")

	bin := buildGradient(t)
	out, err := exec.Command(bin, "vod", "record", "--node", base, "--title", "Cam 1 live", "live/cam1").Output()
	if err != nil {
		t.Fatalf("gradient vod record: %v %s", err, out)
	}
	recordedAt := time.Now()
	id := strings.TrimSpace(string(out))
	var tj vod.TitleJSON
	if getJSONInto(t, base+"/api/v1/vod/titles/"+id, &tj); tj.State != vod.StateRecording || tj.Title != "Cam 1 live" {
		t.Fatalf("the id %q vod record printed: %+v", id, tj)
	}

	// While it runs: an EVENT playlist ffprobe reads.
	testutil.Eventually(t, 30*time.Second, "16 s recorded", func() bool {
		getJSONInto(t, base+"/api/v1/vod/titles/"+id, &tj)
		return tj.Duration >= 16
	})
	pl := getBody(t, base+"/vod/"+id+"/source.m3u8")
	if !strings.Contains(pl, "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("the playlist while recording:\n%s", pl)
	}
	var sum float64
	for _, l := range strings.Split(pl, "\n") {
		if v, ok := strings.CutPrefix(l, "#EXTINF:"); ok {
			f, _ := strconv.ParseFloat(strings.TrimSuffix(v, ","), 64)
			sum += f
		}
	}
	if sum < 16 {
		t.Fatalf("the EVENT playlist lists %.1f s", sum)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0",
		base+"/vod/"+id+"/index.m3u8").Output()
	if err != nil || !strings.Contains(string(probe), "h264,320,240") || !strings.Contains(string(probe), "aac") {
		t.Fatalf("ffprobe of the EVENT playlist: %v %q", err, probe)
	}

	// Chromium plays the recording and seeks 10 s back from where it plays.
	if os.Getenv("GRADIENT_NO_BROWSER") == "" {
		seekBackWhileRecording(t, base, id)
	}

	// The publisher stops: the title becomes ready, a VOD title.
	pub.Cmd.Process.Signal(os.Interrupt)
	pub.Wait(t, 10*time.Second)
	recorded := time.Since(recordedAt)
	testutil.Eventually(t, 25*time.Second, "the title is ready once the publisher stopped (after vod.record_grace)", func() bool {
		getJSONInto(t, base+"/api/v1/vod/titles/"+id, &tj)
		return tj.State == vod.StateReady
	})
	// The recording starts at the keyframe before the record call (≤ 2 s
	// GOP) and ends with the last unit the publisher sent.
	if seg := 4.0; math.Abs(tj.Duration-recorded.Seconds()) > seg {
		t.Errorf("the title is %.1f s long; it was recorded for %.1f s", tj.Duration, recorded.Seconds())
	}
	pl = getBody(t, base+"/vod/"+id+"/source.m3u8")
	if !strings.Contains(pl, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("the playlist once ready:\n%s", pl)
	}
	fj, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json",
		base+"/vod/"+id+"/index.m3u8").Output()
	if err != nil {
		t.Fatalf("ffprobe of the VOD playlist: %v", err)
	}
	var p struct {
		Format  struct{ Duration string }
		Streams []struct {
			CodecName string `json:"codec_name"`
		}
	}
	json.Unmarshal(fj, &p)
	d, _ := strconv.ParseFloat(p.Format.Duration, 64)
	if math.Abs(d-tj.Duration) > 1 || len(p.Streams) != 2 || p.Streams[0].CodecName != "h264" {
		t.Fatalf("ffprobe of the VOD playlist: %s (catalog duration %.1f s)", fj, tj.Duration)
	}
}

// seekBackWhileRecording opens the title's player page while it records,
// waits for 30 frames, seeks 10 s back and waits for 30 more frames played
// from there.
func seekBackWhileRecording(t *testing.T, base, id string) {
	t.Helper()
	ctx := testutil.Chromium(t)
	if err := chromedp.Run(ctx, chromedp.Navigate(base+"/vod/"+id+"/")); err != nil {
		t.Fatal(err)
	}
	state := func() vodVideo { return vodPlayerState(ctx) }
	var v vodVideo
	testutil.Eventually(t, 30*time.Second, "the player plays 30 frames of the recording", func() bool {
		v = state()
		return v.Frames >= 30 && v.Time >= 11
	})
	target := v.Time - 10
	before := v.Frames
	if err := chromedp.Run(ctx, chromedp.Evaluate(fmt.Sprintf(`document.getElementById('v').currentTime = %f`, target), nil)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the player plays 30 frames 10 s back", func() bool {
		v = state()
		return v.Frames >= before+30
	})
	if v.Time < target-0.5 || v.Time > target+4+3 {
		t.Errorf("after seeking back to %.1f s the player is at %.1f s, want within one segment (+ play time)", target, v.Time)
	}
	testutil.Screenshot(t, ctx, "vod-record-seek-back")
}
