package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
	"github.com/gradient-cdn/gradient/serverlet"
)

// startNodeWith is startNode with the configuration changed by edit first.
func startNodeWith(t testing.TB, edit func(*node.Config)) *testNode {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Name = "e2e"
	cfg.Data = t.TempDir()
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cfg.RTSP.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	rtp, rtcp := freeRTPPair(t)
	cfg.RTSP.UDPRTPAddr, cfg.RTSP.UDPRTCPAddr = fmt.Sprintf("127.0.0.1:%d", rtp), fmt.Sprintf("127.0.0.1:%d", rtcp)
	cfg.SRT.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "udp"))
	cfg.RTMP.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	cfg.WebRTC.ICEUDPAddr = "127.0.0.1:0"
	cfg.Gossip.Addr = node.Off
	edit(&cfg)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := node.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})
	return &testNode{Node: n, cfg: cfg, logs: logs}
}

// record copies url's streams into a Matroska file for seconds.
func record(t *testing.T, url, out string, seconds int, extra ...string) {
	t.Helper()
	args := append([]string{"-hide_banner", "-loglevel", "error", "-y"}, extra...)
	args = append(args, "-i", url, "-map", "0", "-c", "copy", "-t", strconv.Itoa(seconds), out)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput(); err != nil {
		t.Errorf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// probeVideo returns a recording's picture size and video bitrate (bit/s,
// from its packet sizes and timestamps).
func probeVideo(t *testing.T, file string) (w, h int, bitrate float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
		"-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%d,%d", &w, &h); err != nil {
		t.Fatalf("ffprobe size %q: %v", out, err)
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,size",
		"-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe packets %s: %v", file, err)
	}
	var bytes int
	lo, hi := math.Inf(1), math.Inf(-1)
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var pts float64
		var size int
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "%g,%d", &pts, &size); err != nil {
			continue
		}
		bytes += size
		lo, hi = min(lo, pts), max(hi, pts)
		n++
	}
	if n < 30 {
		t.Fatalf("%s has %d video packets", file, n)
	}
	dur := hi - lo + (hi-lo)/float64(n-1) // plus one frame
	return w, h, float64(bytes) * 8 / dur
}

// probeAudio returns the codec of a recording's audio stream, "" without.
func probeAudio(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	return strings.TrimSpace(string(out))
}

// rawFrames decodes a file (or a filtered one) into yuv420p pictures.
func rawFrames(t *testing.T, file string, w, h int, extra ...string) [][]byte {
	t.Helper()
	args := append([]string{"-hide_banner", "-loglevel", "error", "-i", file}, extra...)
	args = append(args, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-")
	b, err := exec.Command("ffmpeg", args...).Output()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v", strings.Join(args, " "), err)
	}
	size := w * h * 3 / 2
	var out [][]byte
	for len(b) >= size {
		out = append(out, b[:size])
		b = b[size:]
	}
	return out
}

func psnr(a, b []byte) float64 {
	var se float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		se += d * d
	}
	if se == 0 {
		return 100
	}
	return 10 * math.Log10(255*255*float64(len(a))/se)
}

// meanPSNR matches every frame of got to the reference frame it shows (the
// source loops over the clip, so the match of frame i+1 is near the one
// after frame i's) and averages the PSNR of the matches.
func meanPSNR(got, ref [][]byte, w, h int) float64 {
	ys := w * h
	best := func(g []byte, cands []int) (int, float64) {
		bi, bp := -1, -1.0
		for _, j := range cands {
			if p := psnr(g[:ys], ref[j][:ys]); p > bp {
				bi, bp = j, p
			}
		}
		return bi, bp
	}
	all := make([]int, len(ref))
	for i := range all {
		all[i] = i
	}
	j, _ := best(got[0], all)
	var sum float64
	for _, g := range got {
		var cands []int
		for d := -2; d <= 3; d++ {
			cands = append(cands, ((j+d)%len(ref)+len(ref))%len(ref))
		}
		j, _ = best(g, cands)
		sum += psnr(g, ref[j])
	}
	return sum / float64(len(got))
}

func TestRendition180pOverRTSPAndHLSMatchesFFmpegDownscale(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 5, Bitrate: "1M", Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")

	dir := t.TempDir()
	rtspFile, hlsFile := filepath.Join(dir, "rtsp.mkv"), filepath.Join(dir, "hls.mkv")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		record(t, n.rtspURL("live/cam1@180p"), rtspFile, 6, "-rtsp_transport", "tcp")
	}()
	go func() {
		defer wg.Done()
		record(t, n.httpURL("live/cam1@180p/index.m3u8"), hlsFile, 6)
	}()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ref := rawFrames(t, clip, 320, 180, "-vf", "scale=320:180:flags=bicubic")
	for _, f := range []struct{ proto, file string }{{"RTSP", rtspFile}, {"HLS", hlsFile}} {
		w, h, br := probeVideo(t, f.file)
		got := rawFrames(t, f.file, 320, 180)
		if w != 320 || h != 180 || len(got) < 60 {
			t.Fatalf("%s @180p: %dx%d, %d frames; want 320x180", f.proto, w, h, len(got))
		}
		if a := probeAudio(t, f.file); a != "aac" {
			t.Errorf("%s @180p audio is %q, want the source's AAC passed through", f.proto, a)
		}
		p := meanPSNR(got[:90], ref, 320, 180)
		t.Logf("%s @180p: %dx%d, %.0f kbit/s (ladder 250), PSNR %.1f dB against ffmpeg's downscale", f.proto, w, h, br/1000, p)
		if br < 200_000 || br > 300_000 {
			t.Errorf("%s @180p bitrate %.0f kbit/s, want 250 ± 20%%", f.proto, br/1000)
		}
		if p < 30 {
			t.Errorf("%s @180p PSNR %.1f dB against ffmpeg's downscale, want > 30", f.proto, p)
		}
	}
	// The node reports the serverlet it runs for both protocols.
	var st serverlet.Stats
	getJSON(t, n.httpURL("api/v1/serverlets"), &st)
	if st.Slots != runtime.NumCPU() || st.Used != 1 || len(st.Serverlets) != 1 || st.Serverlets[0].Rendition != "live/cam1@180p" ||
		st.Serverlets[0].CPUSeconds <= 0 || st.Serverlets[0].FPS <= 0 {
		t.Errorf("GET /api/v1/serverlets: %+v, want one running @180p with fps and CPU time", st)
	}
	metrics := getBody(t, n.httpURL("metrics"))
	for _, m := range []string{"gradient_serverlet_slots ", "gradient_serverlet_slots_used 1", `gradient_serverlet_cpu_seconds_total{rendition="live/cam1@180p"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, r.Status, b)
	}
	return string(b)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(getBody(t, url)), v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func TestAACStreamPlaysOpusOverWHEP(t *testing.T) {
	n := startNode(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5, Audio: "aac"})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")

	// Nothing makes live/cam1@opus yet: the WHEP offer itself starts it.
	if _, ok := n.Hub.Lookup("live/cam1@opus"); ok {
		t.Fatal("@opus running before anyone asked for it")
	}

	dec := astiav.AllocCodecContext(astiav.FindDecoder(astiav.CodecIDOpus))
	defer dec.Free()
	dec.SetSampleRate(48000)
	dec.SetChannelLayout(astiav.ChannelLayoutStereo)
	if err := dec.Open(astiav.FindDecoder(astiav.CodecIDOpus), nil); err != nil {
		t.Fatal(err)
	}
	pkt, frm := astiav.AllocPacket(), astiav.AllocFrame()
	defer pkt.Free()
	defer frm.Free()
	var mu sync.Mutex
	packets, samples, bytes := 0, 0, 0
	var decErr error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := testutil.DialWHEP(ctx, n.httpURL("live/cam1@opus/whep"), testutil.WHEPOptions{Loopback: true,
		OnOpus: func(p []byte, _ time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if decErr != nil {
				return
			}
			packets++
			bytes += len(p)
			pkt.FromData(p)
			if decErr = dec.SendPacket(pkt); decErr != nil {
				return
			}
			pkt.Unref()
			for dec.ReceiveFrame(frm) == nil {
				samples += frm.NbSamples()
				frm.Unref()
			}
		}})
	if err != nil {
		t.Fatalf("WHEP @opus: %v", err)
	}
	defer sess.Close()
	testutil.Eventually(t, 20*time.Second, "2 s of Opus audio decoded over WHEP", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return decErr != nil || samples >= 2*48000
	})
	mu.Lock()
	defer mu.Unlock()
	if decErr != nil {
		t.Fatalf("decode Opus packet %d: %v", packets, decErr)
	}
	t.Logf("%d Opus packets of %d bytes on average, %d samples decoded", packets, bytes/packets, samples)
	// Opus codes silence in a few bytes a packet; the 440 Hz tone at
	// 64 kbit/s takes about 160.
	if bytes/packets < 50 {
		t.Errorf("Opus packets average %d bytes: silence, not the source's tone", bytes/packets)
	}
}

func TestSecondServerletBeyondSlotsIsRefusedOverHTTP(t *testing.T) {
	n := startNodeWith(t, func(c *node.Config) { c.Serverlets.Slots = 1 })
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 5})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")
	getBody(t, n.httpURL("live/cam1@180p/index.m3u8")) // takes the one slot

	r, err := http.Get(n.httpURL("live/cam1@240p/index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	t.Logf("@240p beyond capacity: %s: %s", r.Status, strings.TrimSpace(string(b)))
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "no transcode capacity") {
		t.Fatalf("@240p with every slot taken: %s %q, want a refusal saying there is no transcode capacity", r.Status, b)
	}
	// 1080p is taller than the source: no such rendition, 404.
	r, err = http.Get(n.httpURL("live/cam1@1080p/index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("@1080p of a 360p source: %s, want 404", r.Status)
	}
}

// TestMain removes the plugins built for the test process.
func TestMain(m *testing.M) {
	code := m.Run()
	if pluginDir != "" {
		os.RemoveAll(pluginDir)
	}
	os.Exit(code)
}

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// grayscalePlugin builds the example plugin once per test process (a
// process cannot load a second build of a plugin) with this binary's
// -race setting, and returns its folder.
func grayscalePlugin(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		if pluginDir, pluginErr = os.MkdirTemp("", "e2e-plugins-"); pluginErr != nil {
			return
		}
		args := []string{"build", "-buildmode=plugin", "-o", filepath.Join(pluginDir, "grayscale.so")}
		if serverlet.RaceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "../serverlet/examples/grayscale")
		if b, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), args...).CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginDir
}

func TestNodeLoadsPluginFromConfigAndRefusesMissingOne(t *testing.T) {
	dir := grayscalePlugin(t)
	n := startNodeWith(t, func(c *node.Config) {
		c.Serverlets.PluginDir = dir
		c.Serverlets.Plugins = []string{"grayscale"}
		c.Serverlets.Ladder = map[string]string{"gray": "scale x180 | grayscale"}
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 5})
	testutil.FFmpegPublish(t, clip, "rtsp", n.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	n.waitStream(t, "live/cam1")
	out := filepath.Join(t.TempDir(), "gray.mkv")
	record(t, n.rtspURL("live/cam1@gray"), out, 2, "-rtsp_transport", "tcp")
	frames := rawFrames(t, out, 240, 180)
	if len(frames) < 30 {
		t.Fatalf("%d frames of @gray", len(frames))
	}
	lo, hi := 255, 0
	for _, f := range frames {
		for _, v := range f[240*180:] {
			lo, hi = min(lo, int(v)), max(hi, int(v))
		}
	}
	if hi-lo > 4 {
		t.Errorf("@gray chroma spans %d..%d; the plugin should make it flat", lo, hi)
	}

	cfg := node.DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Serverlets.PluginDir = dir
	cfg.Serverlets.Plugins = []string{"nosuch"}
	if _, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil ||
		!strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("node with a missing plugin: %v, want an error naming it", err)
	}
}

func TestServerletConfigLoadsLadderAndNamesBadFields(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "node.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := node.LoadConfig(write("serverlets:\n  slots: 3\n  idle_stop: 2s\n  ladder:\n    360p: scale 640x360 900k\n    gray: \"scale x180 | fps 15\"\n    1080p: \"off\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Serverlets.Slots != 3 || cfg.Serverlets.IdleStop != 2*time.Second || cfg.Serverlets.Ladder["360p"] != "scale 640x360 900k" {
		t.Errorf("loaded %+v", cfg.Serverlets)
	}
	if d := node.DefaultConfig().Serverlets; d.Slots != runtime.NumCPU() || d.IdleStop != 10*time.Second {
		t.Errorf("defaults %+v: want one slot per CPU and a 10 s idle stop", d)
	}
	for body, field := range map[string]string{
		"serverlets:\n  slots: -1\n":               "serverlets.slots",
		"serverlets:\n  idle_stop: -1s\n":          "serverlets.idle_stop",
		"serverlets:\n  ladder:\n    \"a b\": x\n": "serverlets.ladder",
		"serverlets:\n  ladder:\n    360p: \"\"\n": "serverlets.ladder.360p",
		"serverlets:\n  plugins: [\"\"]\n":         "serverlets.plugins[0]",
		"serverlets:\n  preset: turbo\n":           "serverlets.preset",
	} {
		if _, err := node.LoadConfig(write(body)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: err %v, want one naming %s", body, err, field)
		}
	}
	// A spec that does not parse is refused when the node starts, naming the rung.
	cfg = node.DefaultConfig()
	cfg.Data = t.TempDir()
	cfg.Serverlets.Ladder = map[string]string{"bad": "scale sideways"}
	if _, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "serverlets.ladder.bad: ") {
		t.Errorf("node with a bad ladder spec: %v, want an error naming the rung", err)
	}
}

// TestSourceChangingSizeEndsAnUnscaledRungNotTheNode: an SRT publisher
// whose pictures change size mid-stream (320x240, then 160x120) while a
// rung that does not fix its output size ("fps 12") transcodes it: that
// rung ends with an error naming the change (libx264 must never get a
// picture smaller than it was opened with), the node serves on, and a
// scaled rung of the same source goes on.
func TestSourceChangingSizeEndsAnUnscaledRungNotTheNode(t *testing.T) {
	n := startNodeWith(t, func(c *node.Config) {
		c.Serverlets.Ladder = map[string]string{"slow": "fps 12", "tiny": "scale 96x72 100k"}
	})
	dir := t.TempDir()
	var list strings.Builder
	for _, size := range []string{"320x240", "160x120"} {
		ts := filepath.Join(dir, size+".ts")
		out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25", "-t", "3",
			"-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-bf", "0", "-g", "25", "-f", "mpegts", ts).CombinedOutput()
		if err != nil {
			t.Fatalf("ffmpeg %s: %v\n%s", size, err, out)
		}
		fmt.Fprintf(&list, "file '%s'\n", ts)
	}
	listFile, clip := filepath.Join(dir, "list.txt"), filepath.Join(dir, "both.ts")
	if err := os.WriteFile(listFile, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", listFile, "-c", "copy", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg concat: %v\n%s", err, out)
	}
	testutil.FFmpegPublish(t, clip, "mpegts", n.srtURL("live/resize"))
	n.waitStream(t, "live/resize")
	slow, err := n.Hub.Subscribe("live/resize@slow", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	tiny, err := n.Hub.Subscribe("live/resize@tiny", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer tiny.Close()
	go func() {
		for {
			if _, err := slow.Read(); err != nil {
				return
			}
		}
	}()
	var tinyUnits atomic.Int64
	go func() {
		for {
			if _, err := tiny.Read(); err != nil {
				return
			}
			tinyUnits.Add(1)
		}
	}()
	testutil.Eventually(t, 20*time.Second, "the unscaled rung ends naming the size change", func() bool {
		return strings.Contains(n.logs.String(), "the picture changed size mid-stream, 320x240 to 160x120")
	})
	before := tinyUnits.Load()
	testutil.Eventually(t, 10*time.Second, "the scaled rung goes on", func() bool { return tinyUnits.Load() > before+25 })
	resp, err := http.Get(n.httpURL("api/v1/serverlets"))
	if err != nil {
		t.Fatalf("the node does not answer after the size change: %v", err)
	}
	resp.Body.Close()
}
