package vod

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func playlistManifest() *Manifest {
	d := func(b byte) Digest { var d Digest; d[0] = b; return d }
	return &Manifest{
		TargetDuration: 5 * time.Second,
		Duration:       12500 * time.Millisecond,
		Renditions: []Rendition{{
			Name: "source", Width: 1920, Height: 1080, Kbps: 4500, PeakKbps: 5200,
			Codecs: "avc1.640028,mp4a.40.2",
			Init:   Chunk{Digest: d(1), Size: 800},
			Segments: []Chunk{
				{Digest: d(2), Size: 1, Start: 0, Duration: 4 * time.Second},
				{Digest: d(3), Size: 1, Start: 4 * time.Second, Duration: 4200 * time.Millisecond},
				{Digest: d(4), Size: 1, Start: 8200 * time.Millisecond, Duration: 4300 * time.Millisecond},
			},
		}, {
			Name: "360p", Width: 640, Height: 360, Kbps: 800, PeakKbps: 950, Codecs: "avc1.64001e,mp4a.40.2",
		}},
	}
}

func TestMasterPlaylist(t *testing.T) {
	got := MasterPlaylist(playlistManifest())
	want := `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=5200000,AVERAGE-BANDWIDTH=4500000,RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"
source.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=950000,AVERAGE-BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
360p.m3u8
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestMediaPlaylist(t *testing.T) {
	m := playlistManifest()
	got := MediaPlaylist(m, &m.Renditions[0], func(d Digest) string { return "/vod/chunks/" + d.String()[:4] })
	want := `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:5
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="/vod/chunks/0100"
#EXTINF:4.000,
/vod/chunks/0200
#EXTINF:4.200,
/vod/chunks/0300
#EXTINF:4.300,
/vod/chunks/0400
#EXT-X-ENDLIST
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestMediaPlaylistTargetCoversEverySegment(t *testing.T) {
	// A manifest whose target is too short (hand-made or old) still gives a
	// playlist whose EXTINFs, rounded, do not exceed its target.
	m := playlistManifest()
	m.TargetDuration = 2 * time.Second
	m.Renditions[0].Segments[2].Duration = 6600 * time.Millisecond
	got := MediaPlaylist(m, &m.Renditions[0], func(d Digest) string { return d.String() })
	if !strings.Contains(got, "#EXT-X-TARGETDURATION:7\n") {
		t.Fatalf("target not raised to 7:\n%s", got)
	}
}

func TestMasterPlaylistPeakNeverBelowAverage(t *testing.T) {
	m := &Manifest{Renditions: []Rendition{{Name: "source", Kbps: 900, Codecs: "avc1.42c01e"}}}
	got := MasterPlaylist(m)
	if !strings.Contains(got, "BANDWIDTH=900000,AVERAGE-BANDWIDTH=900000,CODECS=\"avc1.42c01e\"\nsource.m3u8\n") {
		t.Fatalf("got\n%s", got)
	}
}

// TestPlaylistDiscontinuity: a segment marked Discontinuity is preceded by
// EXT-X-DISCONTINUITY in the VOD and the EVENT playlist, and only that
// one; a manifest stored before the field existed (no "discontinuity" in
// its JSON) reads as having none.
func TestPlaylistDiscontinuity(t *testing.T) {
	m := playlistManifest()
	rd := &m.Renditions[0]
	rd.Segments[2].Discontinuity = true
	url := func(d Digest) string { return d.String()[:2] }
	for _, pl := range []string{MediaPlaylist(m, rd, url), EventPlaylist(m, rd, 4*time.Second, url)} {
		if n := strings.Count(pl, "#EXT-X-DISCONTINUITY\n"); n != 1 ||
			!strings.Contains(pl, "#EXTINF:4.200,\n03\n#EXT-X-DISCONTINUITY\n#EXTINF:4.300,\n04\n") {
			t.Fatalf("%d discontinuities, want one before the third segment:\n%s", n, pl)
		}
	}
	js, err := json.Marshal(playlistManifest())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(js), "discontinuity") {
		t.Errorf("a segment without a discontinuity writes the field: %s", js)
	}
	var old Manifest
	if err := json.Unmarshal([]byte(`{"renditions":[{"name":"source","segments":[{"digest":"`+rd.Segments[0].Digest.String()+`","size":1,"start":0,"duration":4000000000}]}]}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.Renditions[0].Segments[0].Discontinuity {
		t.Error("an old manifest's segment reads as discontinuous")
	}
}
