package vod

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// mediaPlaylists writes every rendition's media playlist beside the
// chunks, by rendition name.
func mediaPlaylists(t *testing.T, p packaged) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := range p.m.Renditions {
		r := &p.m.Renditions[i]
		path := filepath.Join(p.dir, r.Name+".m3u8")
		pl := MediaPlaylist(p.m, r, func(d Digest) string { return d.String() + ".m4s" })
		if err := os.WriteFile(path, []byte(pl), 0o644); err != nil {
			t.Fatal(err)
		}
		out[r.Name] = path
	}
	return out
}

func TestPackageLadderHasAlignedKeyframes(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	cfg := DefaultPackageConfig()
	cfg.Ladder = []LadderRung{{Name: "360p", Height: 360, Kbps: 600}}
	p := packageInto(t, clip, cfg)
	if len(p.m.Renditions) != 2 {
		t.Fatalf("%d renditions, want source and 360p", len(p.m.Renditions))
	}
	src, rung := p.m.Renditions[0], p.m.Renditions[1]
	if src.Name != "source" || rung.Name != "360p" || rung.Width != 640 || rung.Height != 360 || rung.Kbps <= 0 {
		t.Fatalf("renditions: %s %dx%d, %s %dx%d %d kbps", src.Name, src.Width, src.Height, rung.Name, rung.Width, rung.Height, rung.Kbps)
	}
	if !strings.HasPrefix(rung.Codecs, "avc1.") || !strings.HasSuffix(rung.Codecs, ",mp4a.40.2") {
		t.Errorf("rung codecs %q", rung.Codecs)
	}
	if rung.Kbps > 900 || rung.Kbps < 200 {
		t.Errorf("rung at %d kbps, asked 600", rung.Kbps)
	}
	t.Logf("source %d kbps, 360p %d kbps (peak %d)", src.Kbps, rung.Kbps, rung.PeakKbps)

	// Aligned: as many segments, each covering the same media time.
	frame := 40 * time.Millisecond
	if len(rung.Segments) != len(src.Segments) || len(src.Segments) != 3 {
		t.Fatalf("segments: source %d, 360p %d; want 3 each", len(src.Segments), len(rung.Segments))
	}
	for i := range src.Segments {
		s, r := src.Segments[i], rung.Segments[i]
		if (s.Start-r.Start).Abs() > frame || (s.Duration-r.Duration).Abs() > frame {
			t.Errorf("segment %d: source %s+%s, 360p %s+%s", i, s.Start, s.Duration, r.Start, r.Duration)
		}
	}

	// Each rung segment starts with a keyframe, tfdt continuous.
	var init fmp4.Init
	b, err := os.ReadFile(filepath.Join(p.dir, rung.Init.Digest.String()+".m4s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := init.Unmarshal(bytes.NewReader(b)); err != nil || len(init.Tracks) != 2 {
		t.Fatalf("rung init: %v, %d tracks", err, len(init.Tracks))
	}
	next := map[int]uint64{}
	srcBase := make([]uint64, len(src.Segments))
	for i, s := range src.Segments {
		b, err := os.ReadFile(filepath.Join(p.dir, s.Digest.String()+".m4s"))
		if err != nil {
			t.Fatal(err)
		}
		var parts fmp4.Parts
		if err := parts.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		srcBase[i] = parts[0].Tracks[0].BaseTime
	}
	for i, s := range rung.Segments {
		b, err := os.ReadFile(filepath.Join(p.dir, s.Digest.String()+".m4s"))
		if err != nil {
			t.Fatal(err)
		}
		var parts fmp4.Parts
		if err := parts.Unmarshal(b); err != nil {
			t.Fatalf("rung segment %d: %v", i, err)
		}
		if len(parts) != 1 || len(parts[0].Tracks) != 2 {
			t.Fatalf("rung segment %d: want one moof+mdat with video and audio", i)
		}
		for _, tr := range parts[0].Tracks {
			if tr.BaseTime != next[tr.ID] {
				t.Errorf("rung segment %d track %d: tfdt %d, want %d", i, tr.ID, tr.BaseTime, next[tr.ID])
			}
			for _, smp := range tr.Samples {
				next[tr.ID] += uint64(smp.Duration)
			}
			if tr.ID == videoTrackID {
				if tr.Samples[0].IsNonSyncSample {
					t.Errorf("rung segment %d does not start with a keyframe", i)
				}
				if d := math.Abs(float64(tr.BaseTime) - float64(srcBase[i])); d > 90000/25 {
					t.Errorf("rung segment %d: video tfdt %d, source's %d", i, tr.BaseTime, srcBase[i])
				}
				for j, smp := range tr.Samples[1:] {
					if !smp.IsNonSyncSample {
						t.Errorf("rung segment %d: keyframe at sample %d (only segment starts are keyed)", i, j+1)
					}
				}
			}
		}
	}

	// ffprobe reads each rendition.
	pls := mediaPlaylists(t, p)
	for name, pl := range pls {
		pr := ffprobeJSON(t, pl)
		if d := durationOf(t, pr); math.Abs(d.Seconds()-12) > 4 {
			t.Errorf("ffprobe %s: duration %s", name, d)
		}
		v, a := codecsOf(pr)
		if v != "h264" || a != "aac" {
			t.Errorf("ffprobe %s: codecs %q %q", name, v, a)
		}
		for _, st := range pr.Streams {
			if st.CodecType == "video" && name == "360p" && (st.Width != 640 || st.Height != 360) {
				t.Errorf("ffprobe 360p: %dx%d", st.Width, st.Height)
			}
		}
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", pls["360p"]).Output()
	if f := strings.Fields(string(out)); err != nil || len(f) == 0 || f[0] != "300" { // HLS: one line per program too
		t.Errorf("360p frames: %q %v, want the source's 300", out, err)
	}

	master := MasterPlaylist(p.m)
	if n := strings.Count(master, "#EXT-X-STREAM-INF:"); n != 2 || !strings.Contains(master, "RESOLUTION=640x360") ||
		!strings.Contains(master, "RESOLUTION=1280x720") || !strings.Contains(master, "360p.m3u8") {
		t.Errorf("master playlist:\n%s", master)
	}
	if got := p.progress[len(p.progress)-1]; got != 100 {
		t.Errorf("progress ended at %d", got)
	}
	ffmpegRun(t, "-i", p.master, "-map", "0:v", "-map", "0:a", "-f", "null", "-")
}

func TestPackageLadderSkipsRungsNotBelowTheSource(t *testing.T) {
	if got := rungsFor(DefaultLadder(), 1080); len(got) != 2 || got[0].Name != "720p" || got[1].Name != "360p" {
		t.Errorf("1080p source: %+v", got)
	}
	if got := rungsFor(DefaultLadder(), 720); len(got) != 1 || got[0].Name != "360p" {
		t.Errorf("720p source: %+v", got)
	}
	if got := rungsFor([]LadderRung{{"a", 240, 300}, {"b", 480, 900}}, 1080); got[0].Name != "b" {
		t.Errorf("not tallest first: %+v", got)
	}
	if w := rungWidth(1920, 360, 1080); w != 640 {
		t.Errorf("1920x1080 at 360: width %d", w)
	}
	if w := rungWidth(720, 360, 576); w != 450 {
		t.Errorf("720x576 at 360: width %d", w)
	}
	// A 320x240 source is below every default rung: one rendition.
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4, GOP: 50, Audio: "aac"})
	p := packageInto(t, clip, DefaultPackageConfig())
	if len(p.m.Renditions) != 1 || p.m.Renditions[0].Name != "source" {
		t.Fatalf("renditions %+v", p.m.Renditions)
	}
	if n := strings.Count(MasterPlaylist(p.m), "#EXT-X-STREAM-INF:"); n != 1 {
		t.Errorf("%d STREAM-INF lines", n)
	}
}

func TestLadderConfigIsValidated(t *testing.T) {
	for _, l := range [][]LadderRung{
		{{"", 360, 800}},
		{{"source", 360, 800}},
		{{"360p", 360, 800}, {"360p", 240, 400}},
		{{"360p", 0, 800}},
		{{"360p", 360, 0}},
		{{"../x", 360, 800}},
	} {
		c := DefaultConfig()
		c.Ladder = l
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "ladder[") {
			t.Errorf("%+v: %v", l, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Error(err)
	}
}

// alignedRenditions checks that every rendition has the source's segments
// within a frame.
func alignedRenditions(t *testing.T, m *Manifest, frame time.Duration) {
	t.Helper()
	src := m.Renditions[0]
	for _, r := range m.Renditions[1:] {
		if len(r.Segments) != len(src.Segments) {
			t.Fatalf("%s: %d segments, source %d", r.Name, len(r.Segments), len(src.Segments))
		}
		for i := range src.Segments {
			s, g := src.Segments[i], r.Segments[i]
			if (s.Start-g.Start).Abs() > frame || (s.Duration-g.Duration).Abs() > frame {
				t.Errorf("%s segment %d: %s+%s, source %s+%s", r.Name, i, g.Start, g.Duration, s.Start, s.Duration)
			}
		}
	}
}

func TestPackageLadderOfATranscodedSource(t *testing.T) {
	// HEVC is transcoded for the source rendition (IDRs on the grid) and
	// the rung keys on the same frames.
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 480, FPS: 25, Seconds: 9, VideoCodec: "libx265", Audio: "aac"})
	cfg := DefaultPackageConfig()
	cfg.Ladder = []LadderRung{{Name: "240p", Height: 240, Kbps: 300}}
	p := packageInto(t, clip, cfg)
	if len(p.m.Renditions) != 2 || p.m.Renditions[1].Width != 320 || len(p.m.Renditions[0].Segments) != 3 {
		t.Fatalf("renditions %+v", p.m.Renditions)
	}
	alignedRenditions(t, p.m, 40*time.Millisecond)
	// The source rendition is encoded from the ladder's one decode too:
	// both play every frame of the source.
	pls := mediaPlaylists(t, p)
	want := len(frameHashes(t, clip))
	for _, name := range []string{"source", "240p"} {
		if v, a := codecsOf(ffprobeJSON(t, pls[name])); v != "h264" || a != "aac" {
			t.Errorf("ffprobe %s: %q %q", name, v, a)
		}
		if got := len(frameHashes(t, pls[name])); got != want {
			t.Errorf("%s: %d frames, source %d", name, got, want)
		}
	}
}

func TestPackageLadderStopsWhenCancelled(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 1280, Height: 720, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	cfg := DefaultPackageConfig()
	cfg.Ladder = []LadderRung{{Name: "360p", Height: 360, Kbps: 600}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	last := 0
	_, err := Package(ctx, clip, cfg, &dirPutter{dir: t.TempDir()}, func(p int) {
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
}

func TestServiceEncodesItsConfiguredLadder(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 480, FPS: 25, Seconds: 5, GOP: 50, Audio: "aac"})
	e := newVoDEnv(t, func(c *Config) {
		c.Ladder = []LadderRung{{Name: "low", Height: 240, Kbps: 300}, {Name: "big", Height: 480, Kbps: 900}}
	})
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code, v := e.post(t, "title=ladder", f)
	if code != 202 {
		t.Fatalf("upload: %d %v", code, v)
	}
	tj := e.waitReady(t, v["id"].(string))
	if len(tj.Renditions) != 2 || tj.Renditions[0].Name != "source" || tj.Renditions[1].Name != "low" ||
		tj.Renditions[1].Width != 320 || tj.Renditions[1].Height != 240 {
		t.Fatalf("renditions %+v (the 480 rung is not lower than the source: skipped)", tj.Renditions)
	}
	_, master := e.get(t, "/vod/"+tj.ID+"/index.m3u8")
	if n := strings.Count(string(master), "#EXT-X-STREAM-INF:"); n != 2 || !strings.Contains(string(master), "low.m3u8") {
		t.Fatalf("master playlist:\n%s", master)
	}
	resp, pl := e.get(t, "/vod/"+tj.ID+"/low.m3u8")
	if resp.StatusCode != 200 || !strings.Contains(string(pl), "#EXT-X-ENDLIST") {
		t.Fatalf("low.m3u8: %d\n%s", resp.StatusCode, pl)
	}
}
