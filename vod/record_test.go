package vod

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// clipUnit is one demuxed packet of a clip, as the node hands a hub unit
// to a Recording.
type clipUnit struct {
	video    bool
	pts, dts time.Duration
	key      bool
	nalus    [][]byte
	frame    []byte
}

// demuxClip reads a Matroska clip (H.264 in avcC, AAC) into units and the
// tracks a recording needs.
func demuxClip(t *testing.T, path string) (RecordTracks, []clipUnit) {
	t.Helper()
	fc := astiav.AllocFormatContext()
	defer fc.Free()
	if err := fc.OpenInput(path, nil, nil); err != nil {
		t.Fatal(err)
	}
	defer fc.CloseInput()
	if err := fc.FindStreamInfo(nil); err != nil {
		t.Fatal(err)
	}
	var tr RecordTracks
	kind := map[int]string{}
	tbs := map[int]astiav.Rational{}
	for _, st := range fc.Streams() {
		cp := st.CodecParameters()
		tbs[st.Index()] = st.TimeBase()
		switch cp.CodecID() {
		case astiav.CodecIDH264:
			ed := cp.ExtraData() // avcC: version, profile, compat, level, len size, SPS count …
			spsLen := int(ed[6])<<8 | int(ed[7])
			tr.SPS = append([]byte(nil), ed[8:8+spsLen]...)
			p := 8 + spsLen + 1 // after the PPS count
			ppsLen := int(ed[p])<<8 | int(ed[p+1])
			tr.PPS = append([]byte(nil), ed[p+2:p+2+ppsLen]...)
			kind[st.Index()] = "v"
		case astiav.CodecIDAac:
			var c mpeg4audio.AudioSpecificConfig
			if err := c.Unmarshal(cp.ExtraData()); err != nil {
				t.Fatal(err)
			}
			tr.AAC = &c
			kind[st.Index()] = "a"
		case astiav.CodecIDOpus:
			tr.OpusChannels = cp.ChannelLayout().NbChannels()
			kind[st.Index()] = "a"
		}
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	var out []clipUnit
	at := func(v int64, tb astiav.Rational) time.Duration {
		return time.Duration(v * int64(tb.Num()) * int64(time.Second) / int64(tb.Den()))
	}
	for fc.ReadFrame(pkt) == nil {
		tb := tbs[pkt.StreamIndex()]
		data := append([]byte(nil), pkt.Data()...)
		switch kind[pkt.StreamIndex()] {
		case "v":
			var au h264.AVCC
			if err := au.Unmarshal(data); err != nil {
				t.Fatal(err)
			}
			out = append(out, clipUnit{video: true, pts: at(pkt.Pts(), tb), dts: at(pkt.Dts(), tb),
				key: pkt.Flags().Has(astiav.PacketFlagKey), nalus: au})
		case "a":
			out = append(out, clipUnit{pts: at(pkt.Pts(), tb), frame: data})
		}
		pkt.Unref()
	}
	return tr, out
}

func feed(t *testing.T, r *Recording, us []clipUnit) {
	t.Helper()
	for _, u := range us {
		var err error
		if u.video {
			err = r.WriteVideo(u.pts, u.dts, u.key, u.nalus)
		} else {
			err = r.WriteAudio(u.pts, u.frame)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (e *vodEnv) title(t *testing.T, id string) TitleJSON {
	t.Helper()
	_, b := e.get(t, "/api/v1/vod/titles/"+id)
	var tj TitleJSON
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatalf("title %s: %v: %s", id, err, b)
	}
	return tj
}

// TestARecordingIsAnEventPlaylistWhileItRunsAndAVODTitleAfter feeds a
// recording the packets of a real clip (H.264 + AAC, a keyframe every 2 s,
// 4 s segments): halfway the title is listed as recording, its playlist is
// an EVENT playlist without ENDLIST that ffprobe reads as H.264 + AAC;
// after Close the title is ready, a VOD playlist whose duration is the
// clip's within one segment, and its video packets are the clip's, byte
// for byte (no re-encode).
func TestARecordingIsAnEventPlaylistWhileItRunsAndAVODTitleAfter(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	tracks, units := demuxClip(t, clip)
	e := newVoDEnv(t, nil)
	rec, err := e.s.StartRecording("Live cam", "recorded", tracks)
	if err != nil {
		t.Fatal(err)
	}
	id := rec.ID()
	if tj := e.title(t, id); tj.State != StateRecording {
		t.Fatalf("a new recording is %q, want recording", tj.State)
	}
	feed(t, rec, units[:len(units)*2/3]) // 8 s: one 4 s segment at least

	tj := e.title(t, id)
	if tj.State != StateRecording || tj.Duration < 4 || tj.Playlist == "" {
		t.Fatalf("while recording: %+v", tj)
	}
	resp, body := e.get(t, "/vod/"+id+"/source.m3u8")
	pl := string(body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(pl, "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(pl, "ENDLIST") ||
		resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("playlist while recording: %d %v\n%s", resp.StatusCode, resp.Header, pl)
	}
	if _, page := e.get(t, "/vod/"); !strings.Contains(string(page), `data-id="`+id+`"`) {
		t.Errorf("the catalog page does not list the recording")
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
		e.srv.URL+"/vod/"+id+"/index.m3u8").Output()
	if err != nil || !strings.Contains(string(out), "h264") || !strings.Contains(string(out), "aac") {
		t.Fatalf("ffprobe of the EVENT playlist: %v: %q", err, out)
	}

	feed(t, rec, units[len(units)*2/3:])
	ti, err := rec.Close(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ti.State != StateReady {
		t.Fatalf("after Close: %+v", ti)
	}
	if _, err := rec.Close(nil); err != nil { // twice is harmless
		t.Fatal(err)
	}
	if err := rec.WriteVideo(0, 0, true, [][]byte{{5}}); !errors.Is(err, ErrRecordingClosed) {
		t.Fatalf("a write after Close: %v", err)
	}
	select {
	case <-rec.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	tj = e.title(t, id)
	if tj.Poster == "" {
		t.Errorf("the recorded title has no poster")
	} else if resp, jpg := e.get(t, tj.Poster); resp.StatusCode != http.StatusOK || len(jpg) < 1000 || jpg[0] != 0xff || jpg[1] != 0xd8 {
		t.Errorf("poster: HTTP %d, %d bytes", resp.StatusCode, len(jpg))
	}
	if tj.State != StateReady || tj.Duration < 12-4 || tj.Duration > 12+4 {
		t.Fatalf("ready title: %+v, want about 12 s", tj)
	}
	_, body = e.get(t, "/vod/"+id+"/source.m3u8")
	if pl := string(body); !strings.Contains(pl, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("VOD playlist:\n%s", pl)
	}
	got := videoHashes(t, e.srv.URL+"/vod/"+id+"/source.m3u8")
	want := videoHashes(t, clip)
	if !slicesEqual(got, want) {
		t.Fatalf("recorded video packets differ from the clip's: %d vs %d packets", len(got), len(want))
	}
	p := ffprobeJSON(t, e.srv.URL+"/vod/"+id+"/source.m3u8")
	if d := durationOf(t, p); d < 11*time.Second || d > 13*time.Second {
		t.Fatalf("ffprobe duration %v, want 12 s", d)
	}
}

// TestDeletingARecordingStopsItAndDropsItsChunks: rm while recording ends
// the recording (Done, writes refused) and leaves no chunk behind.
func TestDeletingARecordingStopsItAndDropsItsChunks(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	tracks, units := demuxClip(t, clip)
	e := newVoDEnv(t, nil)
	rec, err := e.s.StartRecording("to remove", "", tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, rec, units[:len(units)/2])
	if err := e.s.Delete(rec.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the recording did not end when its title was deleted")
	}
	if err := rec.WriteVideo(time.Hour, time.Hour, true, [][]byte{{0x65, 1}}); !errors.Is(err, ErrRecordingClosed) {
		t.Fatalf("write after delete: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "no chunk left", func() bool {
		n := 0
		filepath.WalkDir(e.s.store.Dir(), func(_ string, d fs.DirEntry, _ error) error {
			if d != nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
		return n == 0
	})
}

// TestARecordingTheNodeStoppedDuringIsReadyAtTheNextStart: a recording
// never closed (the node was killed) is a ready title with the segments it
// had after a restart, not a failed upload.
func TestARecordingTheNodeStoppedDuringIsReadyAtTheNextStart(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	tracks, units := demuxClip(t, clip)
	dir := t.TempDir()
	s, err := NewService(DefaultConfig(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	rec, err := s.StartRecording("interrupted", "", tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, rec, units[:len(units)*3/4]) // 9 s: two segments
	s.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	s2, err := NewService(DefaultConfig(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ti, err := s2.Get(rec.ID())
	if err != nil || ti.State != StateReady || ti.Duration < 4*time.Second || len(ti.Manifest.Renditions[0].Segments) < 2 {
		t.Fatalf("after restart: %v %+v", err, ti)
	}
}

// TestAResumedRecordingContinuesTheTimeline: a source that drops and
// comes back (its timestamps from zero again) continues the same title
// right after what was recorded: the video packets are both sources' in
// order, the duration is their sum, time never jumps back.
func TestAResumedRecordingContinuesTheTimeline(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	tracks, units := demuxClip(t, clip)
	e := newVoDEnv(t, nil)
	rec, err := e.s.StartRecording("resumed", "", tracks)
	if err != nil {
		t.Fatal(err)
	}
	// The first source stops just before its keyframe at 6 s.
	half := 0
	for i, u := range units {
		if u.video && u.key && u.pts >= 6*time.Second {
			half = i
			break
		}
	}
	feed(t, rec, units[:half])
	rec.Resume()
	feed(t, rec, units)
	ti, err := rec.Close(nil)
	if err != nil || ti.State != StateReady {
		t.Fatalf("Close: %v %+v", err, ti)
	}
	if ti.Duration < 17*time.Second || ti.Duration > 19*time.Second {
		t.Fatalf("duration %v, want 6 s + 12 s", ti.Duration)
	}
	url := e.srv.URL + "/vod/" + ti.ID + "/source.m3u8"
	all := videoHashes(t, clip)
	var firstHalf int
	for _, u := range units[:half] {
		if u.video {
			firstHalf++
		}
	}
	want := append(append([]string(nil), all[:firstHalf]...), all...)
	if got := videoHashes(t, url); !slicesEqual(got, want) {
		t.Fatalf("video packets: %d, want %d (the first source's %d, then the second's)", len(got), len(want), firstHalf)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts_time", "-of", "csv=p=0", url).Output()
	if err != nil {
		t.Fatal(err)
	}
	prev := -1.0
	for _, l := range strings.Fields(string(out)) {
		var f float64
		fmt.Sscan(l, &f)
		if f <= prev {
			t.Fatalf("DTS goes from %v to %v", prev, f)
		}
		prev = f
	}
}

// TestRecordingsOfOpusAndVideoOnlyStreams: Opus audio and no audio are
// recorded as they came: ffprobe reads the ready title's codecs and the
// video packets are the clip's.
func TestRecordingsOfOpusAndVideoOnlyStreams(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	e := newVoDEnv(t, nil)
	for _, audio := range []string{"opus", ""} {
		clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 8, GOP: 50, Audio: audio})
		tracks, units := demuxClip(t, clip)
		rec, err := e.s.StartRecording("audio "+audio, "", tracks)
		if err != nil {
			t.Fatal(err)
		}
		feed(t, rec, units)
		ti, err := rec.Close(nil)
		if err != nil || ti.State != StateReady {
			t.Fatalf("%q: %v %+v", audio, err, ti)
		}
		url := e.srv.URL + "/vod/" + ti.ID + "/source.m3u8"
		v, a := codecsOf(ffprobeJSON(t, url))
		if v != "h264" || a != audio {
			t.Errorf("audio %q: ffprobe sees %q + %q", audio, v, a)
		}
		if !slicesEqual(videoHashes(t, url), videoHashes(t, clip)) {
			t.Errorf("audio %q: the video packets differ from the clip's", audio)
		}
	}
}

// TestAResumedRecordingMarksTheGapWithADiscontinuity: a source that drops
// and comes back continues the title, and the first segment after the gap
// is marked: the EVENT playlist while it records and the VOD playlist
// after carry one EXT-X-DISCONTINUITY, right before that segment (the one
// that starts where the first source ended), the manifest keeps the mark
// (the ready title is read back from the catalog), and ffprobe and ffmpeg
// read and decode the playlists across it without an error.
func TestAResumedRecordingMarksTheGapWithADiscontinuity(t *testing.T) {
	testutil.RequireTool(t, "ffprobe")
	testutil.RequireTool(t, "ffmpeg")
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	tracks, units := demuxClip(t, clip)
	e := newVoDEnv(t, nil)
	rec, err := e.s.StartRecording("dropped", "", tracks)
	if err != nil {
		t.Fatal(err)
	}
	half := 0
	for i, u := range units {
		if u.video && u.key && u.pts >= 6*time.Second {
			half = i
			break
		}
	}
	feed(t, rec, units[:half])
	rec.Resume()
	feed(t, rec, units[:len(units)*2/3]) // 8 s more: the gap is behind a cut segment

	// checkGap finds the one discontinuity in the manifest and in the
	// playlist, before the same segment.
	checkGap := func(when string) {
		t.Helper()
		ti, err := e.s.Get(rec.ID())
		if err != nil {
			t.Fatal(err)
		}
		segs := ti.Manifest.Renditions[0].Segments
		var marked []int
		for i, s := range segs {
			if s.Discontinuity {
				marked = append(marked, i)
			}
		}
		if len(marked) != 1 || marked[0] == 0 {
			t.Fatalf("%s: segments marked discontinuous %v of %d, want one after the first", when, marked, len(segs))
		}
		gap := segs[marked[0]]
		if d := gap.Start - 6*time.Second; d < -50*time.Millisecond || d > 50*time.Millisecond {
			t.Errorf("%s: the discontinuous segment starts at %v, want where the first source ended (6 s)", when, gap.Start)
		}
		_, body := e.get(t, "/vod/"+rec.ID()+"/source.m3u8")
		lines := strings.Split(string(body), "\n")
		var at []int
		for i, l := range lines {
			if l == "#EXT-X-DISCONTINUITY" {
				at = append(at, i)
			}
		}
		if len(at) != 1 || at[0]+2 >= len(lines) || !strings.HasPrefix(lines[at[0]+1], "#EXTINF:") || lines[at[0]+2] != ChunkURL(gap.Digest, false) {
			t.Fatalf("%s: EXT-X-DISCONTINUITY at lines %v, want one right before segment %d (%s):\n%s", when, at, marked[0], ChunkURL(gap.Digest, false), body)
		}
	}
	checkGap("while recording")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
		e.srv.URL+"/vod/"+rec.ID()+"/source.m3u8").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "h264") || !strings.Contains(string(out), "aac") {
		t.Fatalf("ffprobe of the EVENT playlist across the gap: %v: %q", err, out)
	}

	feed(t, rec, units[len(units)*2/3:])
	if ti, err := rec.Close(nil); err != nil || ti.State != StateReady {
		t.Fatalf("Close: %v %+v", err, ti)
	}
	checkGap("ready")
	url := e.srv.URL + "/vod/" + rec.ID() + "/source.m3u8"
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", url, "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("ffmpeg decoding the VOD playlist across the gap: %v\n%s", err, out)
	}
	if d := durationOf(t, ffprobeJSON(t, url)); d < 17*time.Second || d > 19*time.Second {
		t.Errorf("ffprobe duration %v, want 6 s + 12 s", d)
	}
}

// TestARecordingsMasterPlaylistNeverAdvertisesZeroBandwidth: before its
// first segment a recording's master playlist advertises the bitrate the
// source declared (a guess from its height when it declared none), not
// BANDWIDTH=0; a player that read it then finds the segments in the same
// media playlist once they are cut, and the master advertises their
// measured rate from then on.
func TestARecordingsMasterPlaylistNeverAdvertisesZeroBandwidth(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 12, GOP: 50, Audio: "aac"})
	tracks, units := demuxClip(t, clip)
	e := newVoDEnv(t, nil)
	bandwidth := func(id string) (int, string) {
		t.Helper()
		_, body := e.get(t, "/vod/"+id+"/index.m3u8")
		var bw int
		var uri string
		lines := strings.Split(string(body), "\n")
		for i, l := range lines {
			if v, ok := strings.CutPrefix(l, "#EXT-X-STREAM-INF:BANDWIDTH="); ok {
				fmt.Sscan(strings.SplitN(v, ",", 2)[0], &bw)
				uri = lines[i+1]
			}
		}
		if bw <= 0 || uri == "" {
			t.Fatalf("master playlist of %s: BANDWIDTH %d, URI %q:\n%s", id, bw, uri, body)
		}
		return bw, uri
	}

	guessed, err := e.s.StartRecording("undeclared", "", tracks)
	if err != nil {
		t.Fatal(err)
	}
	if bw, _ := bandwidth(guessed.ID()); bw != 800_000 {
		t.Errorf("a 240p source that declared nothing: BANDWIDTH %d, want the 360p rung's 800000", bw)
	}
	guessed.Close(nil)

	tracks.Kbps = 1234
	rec, err := e.s.StartRecording("declared", "", tracks)
	if err != nil {
		t.Fatal(err)
	}
	early, uri := bandwidth(rec.ID())
	if early != 1_234_000 {
		t.Errorf("before the first segment: BANDWIDTH %d, want the declared 1234000", early)
	}
	feed(t, rec, units[:len(units)*2/3])
	_, body := e.get(t, "/vod/"+rec.ID()+"/"+uri)
	if n := strings.Count(string(body), "#EXTINF:"); n == 0 {
		t.Fatalf("the media playlist the early master named has no segment once they are cut:\n%s", body)
	}
	ti, _ := e.s.Get(rec.ID())
	rd := ti.Manifest.Renditions[0]
	if bw, _ := bandwidth(rec.ID()); bw != max(rd.PeakKbps, rd.Kbps)*1000 || bw == early {
		t.Errorf("after the first segment: BANDWIDTH %d, want the measured %d kbps peak", bw, rd.PeakKbps)
	}
	rec.Close(nil)
}

// BenchmarkRecordingManifestAt1800Segments measures what a recording
// costs per segment when it is 2 h long (1800 segments of 4 s): the
// manifest is rewritten whole in the catalog at every segment
// (Recording.manifest, JSON, a durable SQLite update), and a viewer's
// poll of the EVENT playlist reads and decodes it whole. Printed beside
// the same at 1 and 900 segments, and beside the segment's 4 s.
func BenchmarkRecordingManifestAt1800Segments(b *testing.B) {
	s, err := NewService(DefaultConfig(), b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	id := newID()
	if err := s.cat.Create(Title{ID: id, Title: "2 h", Created: time.Now().UTC()}); err != nil {
		b.Fatal(err)
	}
	r := &Recording{s: s, id: id, rendition: Rendition{Name: "source", Width: 1280, Height: 720, Codecs: "avc1.64001f,mp4a.40.2"}, declared: 2500}
	var total time.Duration
	var total1800 int
	seg := func(i int) Chunk {
		var d Digest
		d[0], d[1], d[2] = byte(i), byte(i>>8), 7
		return Chunk{Digest: d, Size: 1_300_000, Start: time.Duration(i) * 4 * time.Second, Duration: 4 * time.Second}
	}
	for n := 1; n <= 1800; n++ {
		r.rendition.Segments = append(r.rendition.Segments, seg(n-1))
		r.bytes += 1_300_000
		t0 := time.Now()
		if err := s.cat.SetRecording(id, r.manifest()); err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		total += el
		if n == 1 || n == 900 || n == 1800 {
			js, _ := json.Marshal(r.manifest())
			// A viewer's poll of the EVENT playlist: the title from the
			// catalog, its playlist written.
			t1 := time.Now()
			const polls = 20
			for range polls {
				t, err := s.Get(id)
				if err != nil {
					b.Fatal(err)
				}
				rd := &t.Manifest.Renditions[0]
				EventPlaylist(t.Manifest, rd, 4*time.Second, func(d Digest) string { return ChunkURL(d, d == rd.Init.Digest) })
			}
			poll := time.Since(t1) / polls
			fmt.Printf("  %4d segments: manifest %6.0f KB; its rewrite at this segment %v; a playlist poll %v\n", n, float64(len(js))/1e3, el.Round(10*time.Microsecond), poll.Round(10*time.Microsecond))
			total1800 = len(js)
		}
	}
	fmt.Printf("manifest rewrites for a 2 h recording: %v in all (%v per segment on average, %.2f%% of the 4 s between segments), %.0f MB of JSON written; last manifest %.0f KB\n",
		total.Round(time.Millisecond), (total / 1800).Round(10*time.Microsecond), 100*(total/1800).Seconds()/4, float64(total1800)*1800/2/1e6, float64(total1800)/1e3)
}
