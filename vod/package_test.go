package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// dirPutter is a ChunkPutter that writes each chunk into dir as
// <hex digest>.m4s.
type dirPutter struct {
	dir string
	mu  sync.Mutex
	n   int
}

func (p *dirPutter) Put(r io.Reader) (Chunk, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Chunk{}, err
	}
	d := Digest(sha256.Sum256(b))
	if err := os.WriteFile(filepath.Join(p.dir, d.String()+".m4s"), b, 0o644); err != nil {
		return Chunk{}, err
	}
	p.mu.Lock()
	p.n++
	p.mu.Unlock()
	return Chunk{Digest: d, Size: int64(len(b))}, nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ffmpegRun runs the ffmpeg command and fails the test on error.
func ffmpegRun(t *testing.T, args ...string) {
	t.Helper()
	testutil.RequireTool(t, "ffmpeg")
	out, err := exec.Command("ffmpeg", append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// toMP4 copies a clip's streams into an MP4 (no re-encode).
func toMP4(t *testing.T, src string, extra ...string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "clip.mp4")
	ffmpegRun(t, append(append([]string{"-i", src, "-c", "copy"}, extra...), dst)...)
	return dst
}

type probeOut struct {
	Streams []struct {
		CodecName string `json:"codec_name"`
		CodecType string `json:"codec_type"`
		Width     int    `json:"width"`
		Height    int    `json:"height"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

func ffprobeJSON(t *testing.T, path string) probeOut {
	t.Helper()
	testutil.RequireTool(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p probeOut
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	return p
}

// videoHashes are the MD5s of the video packets' bytes, in order.
func videoHashes(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_packets",
		"-show_data_hash", "md5", "-show_entries", "packet=data_hash", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe packets of %s: %v", path, err)
	}
	return strings.Fields(string(out))
}

// frameHashes are the MD5s of the decoded video frames, in order.
func frameHashes(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", path, "-map", "0:v:0", "-f", "framemd5", "-").Output()
	if err != nil {
		t.Fatalf("ffmpeg framemd5 of %s: %v", path, err)
	}
	var h []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Split(l, ","); len(f) == 6 && !strings.HasPrefix(l, "#") {
			h = append(h, strings.TrimSpace(f[5]))
		}
	}
	return h
}

// packaged is a title packaged into a folder with its playlists.
type packaged struct {
	dir      string
	m        *Manifest
	progress []int
	master   string
	media    string
}

func packageInto(t *testing.T, src string, cfg PackageConfig) packaged {
	t.Helper()
	dir := t.TempDir()
	var pr []int
	m, err := Package(t.Context(), src, cfg, &dirPutter{dir: dir}, func(p int) { pr = append(pr, p) }, testLogger(t))
	if err != nil {
		t.Fatalf("Package: %v", err)
	}
	p := packaged{dir: dir, m: m, progress: pr}
	p.master = filepath.Join(dir, "index.m3u8")
	if err := os.WriteFile(p.master, []byte(MasterPlaylist(m)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &m.Renditions[0]
	p.media = filepath.Join(dir, r.Name+".m3u8")
	pl := MediaPlaylist(m, r, func(d Digest) string { return d.String() + ".m4s" })
	if err := os.WriteFile(p.media, []byte(pl), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("manifest: target %s duration %s kbps %d peak %d codecs %s\n%s", m.TargetDuration, m.Duration,
		r.Kbps, r.PeakKbps, r.Codecs, pl)
	return p
}

func durationOf(t *testing.T, p probeOut) time.Duration {
	t.Helper()
	f, err := strconv.ParseFloat(p.Format.Duration, 64)
	if err != nil {
		t.Fatalf("ffprobe duration %q: %v", p.Format.Duration, err)
	}
	return time.Duration(f * float64(time.Second))
}

func codecsOf(p probeOut) (video, audio string) {
	for _, s := range p.Streams {
		switch s.CodecType {
		case "video":
			video = s.CodecName
		case "audio":
			audio = s.CodecName
		}
	}
	return
}

func TestPackageRemuxesH264AACIntoSegmentsAtKeyframes(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 12, GOP: 60, Audio: "aac"})
	src := toMP4(t, clip)

	info, err := Probe(src)
	if err != nil {
		t.Fatal(err)
	}
	if info.VideoCodec != "h264" || info.AudioCodec != "aac" || info.Width != 320 || info.Height != 240 ||
		!strings.HasPrefix(info.Container, "mov") || info.Duration < 11*time.Second || info.Duration > 13*time.Second {
		t.Fatalf("Probe: %+v", info)
	}

	p := packageInto(t, src, DefaultPackageConfig())
	r := p.m.Renditions[0]
	if len(r.Segments) != 3 {
		t.Fatalf("want 3 segments of ~4 s from a 12 s clip with 2 s GOPs, got %d: %+v", len(r.Segments), r.Segments)
	}
	var start time.Duration
	for i, s := range r.Segments {
		if d := s.Duration - 4*time.Second; d < -50*time.Millisecond || d > 50*time.Millisecond {
			t.Errorf("segment %d lasts %s, want 4 s", i, s.Duration)
		}
		if s.Start-start > time.Millisecond || start-s.Start > time.Millisecond {
			t.Errorf("segment %d starts at %s, want %s", i, s.Start, start)
		}
		start += s.Duration
	}
	if p.m.TargetDuration != 4*time.Second {
		t.Errorf("target duration %s", p.m.TargetDuration)
	}
	if !strings.HasPrefix(r.Codecs, "avc1.") || !strings.HasSuffix(r.Codecs, ",mp4a.40.2") || len(r.Codecs) != len("avc1.64001f,mp4a.40.2") {
		t.Errorf("codecs %q", r.Codecs)
	}
	if r.Width != 320 || r.Height != 240 || r.Kbps <= 0 || r.PeakKbps < r.Kbps || r.Init.Size == 0 {
		t.Errorf("rendition %+v", r)
	}
	if got := p.progress[len(p.progress)-1]; got != 100 {
		t.Errorf("progress ended at %d, want 100 (%v)", got, p.progress)
	}
	for i := 1; i < len(p.progress); i++ {
		if p.progress[i] < p.progress[i-1] {
			t.Fatalf("progress went back: %v", p.progress)
		}
	}

	for _, pl := range []string{p.media, p.master} {
		pr := ffprobeJSON(t, pl)
		if d := durationOf(t, pr); math.Abs((d - info.Duration).Seconds()) > 4 {
			t.Errorf("ffprobe %s: duration %s, clip %s", filepath.Base(pl), d, info.Duration)
		}
		if v, a := codecsOf(pr); v != "h264" || a != "aac" {
			t.Errorf("ffprobe %s: codecs %q %q", filepath.Base(pl), v, a)
		}
	}

	// Remux, not re-encode: every video packet's bytes are the source's.
	want, got := videoHashes(t, src), videoHashes(t, p.media)
	if len(want) != 360 || !slicesEqual(want, got) {
		t.Fatalf("video packets differ: source %d packets, packaged %d", len(want), len(got))
	}

	// The decoded frames play through: ffmpeg reads the whole playlist.
	ffmpegRun(t, "-i", p.master, "-f", "null", "-")
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPackageCutsAtFirstKeyframeAfterEachBoundary(t *testing.T) {
	// 3 s GOPs, 4 s target: keyframes at 0 3 6 9 12 15, cuts at 6 9 12.
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 160, Height: 120, FPS: 25, Seconds: 16, GOP: 75, Audio: "aac"})
	p := packageInto(t, clip, DefaultPackageConfig())
	var starts []string
	for _, s := range p.m.Renditions[0].Segments {
		starts = append(starts, s.Start.Round(100*time.Millisecond).String())
	}
	if got := strings.Join(starts, " "); got != "0s 6s 9s 12s" {
		t.Fatalf("segment starts %s, want 0s 6s 9s 12s", got)
	}
	if p.m.TargetDuration != 6*time.Second {
		t.Errorf("target duration %s, want 6s", p.m.TargetDuration)
	}
	if d := p.m.Duration; d < 15900*time.Millisecond || d > 16100*time.Millisecond {
		t.Errorf("duration %s, want 16s", d)
	}
	ffmpegRun(t, "-i", p.media, "-f", "null", "-")
}

func TestPackageNoAudio(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 8, GOP: 60})
	p := packageInto(t, clip, DefaultPackageConfig())
	r := p.m.Renditions[0]
	if strings.Contains(r.Codecs, ",") || !strings.HasPrefix(r.Codecs, "avc1.") {
		t.Errorf("codecs %q", r.Codecs)
	}
	pr := ffprobeJSON(t, p.media)
	if v, a := codecsOf(pr); v != "h264" || a != "" {
		t.Errorf("ffprobe codecs %q %q", v, a)
	}
	if d := durationOf(t, pr); math.Abs(d.Seconds()-8) > 4 {
		t.Errorf("ffprobe duration %s", d)
	}
	if !slicesEqual(videoHashes(t, clip), videoHashes(t, p.media)) {
		t.Error("video packets differ from the source's")
	}
}

func TestPackageOpus(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 8, GOP: 60, Audio: "opus"})
	p := packageInto(t, clip, DefaultPackageConfig())
	if r := p.m.Renditions[0]; !strings.HasSuffix(r.Codecs, ",opus") {
		t.Errorf("codecs %q", r.Codecs)
	}
	pr := ffprobeJSON(t, p.media)
	if v, a := codecsOf(pr); v != "h264" || a != "opus" {
		t.Errorf("ffprobe codecs %q %q", v, a)
	}
	ffmpegRun(t, "-i", p.media, "-f", "null", "-")
}

func TestPackageMPEGTSAnnexB(t *testing.T) {
	// MPEG-TS carries H.264 with start codes and AAC in ADTS: both are
	// reframed for MP4.
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 8, GOP: 60, Audio: "aac"})
	ts := filepath.Join(t.TempDir(), "clip.ts")
	ffmpegRun(t, "-i", clip, "-c", "copy", ts)
	p := packageInto(t, ts, DefaultPackageConfig())
	if r := p.m.Renditions[0]; len(r.Segments) != 2 || !strings.HasSuffix(r.Codecs, ",mp4a.40.2") {
		t.Errorf("rendition %+v", r)
	}
	pr := ffprobeJSON(t, p.media)
	if v, a := codecsOf(pr); v != "h264" || a != "aac" {
		t.Errorf("ffprobe codecs %q %q", v, a)
	}
	// The TS packets carry start codes, AUDs and in-band SPS/PPS, so
	// compare decoded pictures: the same as the MKV the TS was copied from.
	if want, got := frameHashes(t, clip), frameHashes(t, p.media); len(want) != 240 || !slicesEqual(want, got) {
		t.Errorf("decoded frames differ: source %d, packaged %d", len(want), len(got))
	}
}

func TestProbeAndPackageRefuseANonMediaFile(t *testing.T) {
	src := filepath.Join(t.TempDir(), "notes.mp4")
	if err := os.WriteFile(src, bytes.Repeat([]byte("this is not a video, just some text\n"), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Probe(src)
	if !errors.Is(err, ErrNotMedia) || !strings.Contains(err.Error(), "FFmpeg") {
		t.Fatalf("Probe: %v", err)
	}
	t.Log(err)
	_, err = Package(t.Context(), src, DefaultPackageConfig(), &dirPutter{dir: t.TempDir()}, nil, testLogger(t))
	if !errors.Is(err, ErrNotMedia) {
		t.Fatalf("Package: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.mp4")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Probe(empty); !errors.Is(err, ErrNotMedia) {
		t.Fatalf("Probe of an empty file: %v", err)
	}
}

func TestPackageRefusesAudioOnly(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tone.m4a")
	ffmpegRun(t, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:a", "aac", src)
	_, err := Probe(src)
	if !errors.Is(err, ErrNoVideo) {
		t.Fatalf("Probe: %v", err)
	}
	t.Log(err)
	if _, err := Package(t.Context(), src, DefaultPackageConfig(), &dirPutter{dir: t.TempDir()}, nil, testLogger(t)); !errors.Is(err, ErrNoVideo) {
		t.Fatalf("Package: %v", err)
	}
}

func TestPackageRefusesTruncatedMP4(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 12, GOP: 60, Audio: "aac"})
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"moov at the end", nil},
		{"moov at the start", []string{"-movflags", "+faststart"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := toMP4(t, clip, tc.extra...)
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			cut := filepath.Join(t.TempDir(), "cut.mp4")
			if err := os.WriteFile(cut, b[:len(b)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			_, err = Package(t.Context(), cut, DefaultPackageConfig(), &dirPutter{dir: dir}, nil, testLogger(t))
			if err == nil {
				t.Fatal("Package of a truncated MP4 succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), "truncated") && !errors.Is(err, ErrNotMedia) {
				t.Errorf("error does not say what is wrong: %v", err)
			}
		})
	}
}

// transcoded packages src, which has no H.264, and checks the result is
// H.264 with audio audio, cut on the 4 s grid, as long as the source and
// with as many frames.
func transcoded(t *testing.T, src, audio string, seconds int) packaged {
	t.Helper()
	info, err := Probe(src)
	if err != nil {
		t.Fatal(err)
	}
	p := packageInto(t, src, DefaultPackageConfig())
	r := p.m.Renditions[0]
	if want := (seconds + 3) / 4; len(r.Segments) != want {
		t.Errorf("%d segments, want %d", len(r.Segments), want)
	}
	for i, s := range r.Segments[:len(r.Segments)-1] {
		if d := s.Duration - 4*time.Second; d < -50*time.Millisecond || d > 50*time.Millisecond {
			t.Errorf("segment %d lasts %s, want 4 s (IDR forced on the grid)", i, s.Duration)
		}
	}
	if r.Width != info.Width&^1 || r.Height != info.Height&^1 {
		t.Errorf("rendition %dx%d, source %dx%d", r.Width, r.Height, info.Width, info.Height)
	}
	pr := ffprobeJSON(t, p.media)
	if v, a := codecsOf(pr); v != "h264" || a != audio {
		t.Errorf("ffprobe codecs %q %q, want h264 %q", v, a, audio)
	}
	if d := durationOf(t, pr); math.Abs((d - info.Duration).Seconds()) > 4 {
		t.Errorf("ffprobe duration %s, source %s", d, info.Duration)
	}
	if want, got := len(frameHashes(t, src)), len(frameHashes(t, p.media)); want != got {
		t.Errorf("%d frames decoded from the package, %d from the source", got, want)
	}
	return p
}

func TestPackageTranscodesHEVC(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 6, VideoCodec: "libx265", Audio: "aac"})
	_ = transcoded(t, clip, "aac", 6)
}

func TestPackageTranscodesVP9KeepsOpus(t *testing.T) {
	src := filepath.Join(t.TempDir(), "clip.webm")
	ffmpegRun(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "6", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus", src)
	_ = transcoded(t, src, "opus", 6)
}

func TestPackageTranscodesMPEG2AndMP2(t *testing.T) {
	// An odd size as well: libx264 gets it rounded down to even.
	src := filepath.Join(t.TempDir(), "clip.mpg")
	ffmpegRun(t, "-f", "lavfi", "-i", "testsrc2=size=322x242:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "6", "-c:v", "mpeg2video", "-b:v", "1M", "-c:a", "mp2", "-ac", "1", src)
	_ = transcoded(t, src, "aac", 6)
}

func TestPackageTranscodesHigh10H264(t *testing.T) {
	// 10-bit H.264 is H.264 that phones do not decode: transcoded.
	src := filepath.Join(t.TempDir(), "high10.mkv")
	ffmpegRun(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "5", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p10le", "-c:a", "aac", src)
	p := transcoded(t, src, "aac", 5)
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=pix_fmt,profile",
		"-of", "csv=p=0", p.media).Output()
	if f := strings.Fields(string(out)); err != nil || len(f) == 0 || f[0] != "High,yuv420p" { // HLS: one line per program too
		t.Fatalf("ffprobe of the package: %q %v, want High,yuv420p", out, err)
	}
}

func TestPackageStopsWhenCancelled(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 12, GOP: 60, Audio: "aac"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	put := &dirPutter{dir: t.TempDir()}
	last := 0
	_, err := Package(ctx, clip, DefaultPackageConfig(), put, func(p int) {
		last = p
		if p >= 20 {
			cancel()
		}
	}, testLogger(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Package after cancel: %v", err)
	}
	if last > 25 {
		t.Errorf("packaging went on to %d%% after the cancel at 20%%", last)
	}
	t.Log(err)
}

func TestPackageStopsWhenCancelledWhileTranscoding(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 6, VideoCodec: "libx265", Audio: "aac"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := Package(ctx, clip, DefaultPackageConfig(), &dirPutter{dir: t.TempDir()}, func(p int) {
		if p >= 10 {
			cancel()
		}
	}, testLogger(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Package after cancel: %v", err)
	}
}

func TestPackageKeepsVideoWhoseAudioRunsLonger(t *testing.T) {
	// 6 s of video, 14 s of audio in an MP4: not a truncated file.
	src := filepath.Join(t.TempDir(), "long-audio.mp4")
	ffmpegRun(t, "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=6", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=14",
		"-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", src)
	p := packageInto(t, src, DefaultPackageConfig())
	if d := p.m.Duration; d < 5900*time.Millisecond || d > 6100*time.Millisecond {
		t.Errorf("duration %s, want the video's 6 s", d)
	}
	ffmpegRun(t, "-i", p.media, "-f", "null", "-")
}

func TestPoster(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 1280, Height: 720, FPS: 30, Seconds: 4, GOP: 30, Audio: "aac"})
	jpg, err := Poster(clip, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(jpg) < 100 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
		t.Fatalf("poster is not a JPEG (%d bytes, starts % x)", len(jpg), jpg[:min(4, len(jpg))])
	}
	path := filepath.Join(t.TempDir(), "poster.jpg")
	if err := os.WriteFile(path, jpg, 0o644); err != nil {
		t.Fatal(err)
	}
	pr := ffprobeJSON(t, path)
	if len(pr.Streams) != 1 || pr.Streams[0].CodecName != "mjpeg" || pr.Streams[0].Width != 640 || pr.Streams[0].Height != 360 {
		t.Fatalf("ffprobe of the poster: %+v", pr.Streams)
	}
	// The right picture in the right colours: close to ffmpeg's own frame
	// at 2 s (a range mistake would be ~16 levels off in the darks).
	rgb := func(args ...string) []byte {
		out, err := exec.Command("ffmpeg", append(append([]string{"-v", "error"}, args...),
			"-frames:v", "1", "-vf", "scale=64:36", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")...).Output()
		if err != nil || len(out) != 64*36*3 {
			t.Fatalf("ffmpeg rgb of %v: %v (%d bytes)", args, err, len(out))
		}
		return out
	}
	a, b := rgb("-i", path), rgb("-ss", "2", "-i", clip)
	var diff float64
	for i := range a {
		diff += math.Abs(float64(a[i]) - float64(b[i]))
	}
	if diff /= float64(len(a)); diff > 6 {
		t.Errorf("poster differs from the frame at 2 s by %.1f levels on average", diff)
	}
	t.Logf("poster: %d bytes, %.1f levels from ffmpeg's frame", len(jpg), diff)

	// Past the end: the last frame.
	if _, err := Poster(clip, time.Hour); err != nil {
		t.Fatalf("poster past the end: %v", err)
	}
	if _, err := Poster(filepath.Join(t.TempDir(), "missing.mp4"), 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("poster of a missing file: %v", err)
	}
}

func TestPackageBFramesMP4(t *testing.T) {
	// libx264's defaults (B-frames, an edit list in the MP4): composition
	// offsets must survive the remux.
	src := filepath.Join(t.TempDir(), "bframes.mp4")
	ffmpegRun(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "10", "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-bf", "3", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", src)
	p := packageInto(t, src, DefaultPackageConfig())
	r := p.m.Renditions[0]
	if len(r.Segments) != 3 {
		t.Errorf("want 3 segments (cuts at 4 s and 8 s), got %d", len(r.Segments))
	}
	if !slicesEqual(videoHashes(t, src), videoHashes(t, p.media)) {
		t.Error("video packets differ from the source's")
	}
	if want, got := frameHashes(t, src), frameHashes(t, p.media); len(want) != 250 || !slicesEqual(want, got) {
		t.Errorf("decoded frames differ: source %d, packaged %d", len(want), len(got))
	}
	pr := ffprobeJSON(t, p.master)
	if d := durationOf(t, pr); math.Abs(d.Seconds()-10) > 4 {
		t.Errorf("ffprobe duration %s", d)
	}
}

func TestPackageSegmentsAreWellFormedFMP4(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 12, GOP: 60, Audio: "aac"})
	p := packageInto(t, clip, DefaultPackageConfig())
	r := p.m.Renditions[0]
	read := func(c Chunk) []byte {
		b, err := os.ReadFile(filepath.Join(p.dir, c.Digest.String()+".m4s"))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != c.Size || Digest(sha256.Sum256(b)) != c.Digest {
			t.Fatalf("chunk %s: size or digest does not match its bytes", c.Digest)
		}
		return b
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(read(r.Init))); err != nil {
		t.Fatalf("init section: %v", err)
	}
	if len(init.Tracks) != 2 || init.Tracks[0].TimeScale != 90000 || init.Tracks[1].TimeScale != 48000 {
		t.Fatalf("init tracks: %+v %+v", init.Tracks[0], init.Tracks[1])
	}
	if _, ok := init.Tracks[0].Codec.(*fmp4.CodecH264); !ok {
		t.Errorf("track 1 codec %T", init.Tracks[0].Codec)
	}
	if _, ok := init.Tracks[1].Codec.(*fmp4.CodecMPEG4Audio); !ok {
		t.Errorf("track 2 codec %T", init.Tracks[1].Codec)
	}
	next := map[int]uint64{}
	var total int64 = r.Init.Size
	for i, s := range r.Segments {
		total += s.Size
		var parts fmp4.Parts
		if err := parts.Unmarshal(read(s)); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if len(parts) != 1 || len(parts[0].Tracks) != 2 || parts[0].SequenceNumber != uint32(i+1) {
			t.Fatalf("segment %d: want one moof+mdat with both tracks, sequence %d", i, i+1)
		}
		for _, tr := range parts[0].Tracks {
			if tr.BaseTime != next[tr.ID] {
				t.Errorf("segment %d track %d: tfdt %d, want %d (the previous segment's end)", i, tr.ID, tr.BaseTime, next[tr.ID])
			}
			for _, smp := range tr.Samples {
				next[tr.ID] += uint64(smp.Duration)
			}
			if tr.ID == 1 && tr.Samples[0].IsNonSyncSample {
				t.Errorf("segment %d does not start with a keyframe", i)
			}
			if tr.ID == 2 && tr.Samples[0].Duration != 1024 {
				t.Errorf("segment %d: AAC sample of %d samples", i, tr.Samples[0].Duration)
			}
		}
	}
	if total != p.m.Bytes() {
		t.Errorf("Bytes() %d, chunks %d", p.m.Bytes(), total)
	}
}
