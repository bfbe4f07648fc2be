package node

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/vod"
)

func recordNode(t *testing.T, patterns []string) *Node {
	t.Helper()
	cfg := testOverlayConfig(t, "rec", "", nil)
	cfg.Gossip.Addr = Off
	cfg.VoD.SegmentDuration = 2 * time.Second
	cfg.VoD.Record = patterns
	cfg.VoD.RecordGrace = 2 * time.Second
	n, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func postJSON(t *testing.T, url, body string, v any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// TestLiveStreamsAreRecordedByPatternAndOnRequest publishes a clip into
// the hub of a node whose vod.record names "live/*": the stream is
// recorded from its publish on (listed as recording, an EVENT playlist
// that grows), a second recording of it is started and stopped through
// the API and is ready at once, and when the publisher stops the pattern's
// recording is ready with the duration the stream was live, within one
// segment. Renditions and other paths are not recorded by pattern.
func TestLiveStreamsAreRecordedByPatternAndOnRequest(t *testing.T) {
	n := recordNode(t, []string{"live/*"})
	base := "http://" + n.HTTPAddr()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 25, Audio: "aac"})
	if code := postJSON(t, base+"/api/v1/vod/record", `{"stream":"live/nobody"}`, nil); code != http.StatusNotFound {
		t.Fatalf("recording a stream nobody publishes: HTTP %d, want 404", code)
	}
	if code := postJSON(t, base+"/api/v1/vod/record", `nope`, nil); code != http.StatusBadRequest {
		t.Fatalf("a body that is not JSON: HTTP %d, want 400", code)
	}
	if code := postJSON(t, base+"/api/v1/vod/record/abc/stop", ``, nil); code != http.StatusNotFound {
		t.Fatalf("stopping an unknown recording: HTTP %d, want 404", code)
	}

	liveAt := time.Now()
	stop := testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	testutil.PublishFile(t, n.Hub, "other/cam2", clip, false)
	var list struct {
		Recordings []struct{ ID, Stream string } `json:"recordings"`
	}
	testutil.Eventually(t, 10*time.Second, "live/cam1 is recorded by pattern", func() bool {
		getJSON(t, base+"/api/v1/vod/record", &list)
		return len(list.Recordings) == 1
	})
	auto := list.Recordings[0]
	if auto.Stream != "live/cam1" {
		t.Fatalf("recording by pattern: %+v", list)
	}
	// A relay of a stream from another node is recorded there, not here.
	st, _ := n.Hub.Lookup("live/cam1")
	relay, err := n.Hub.Publish("live/relayed", st.Description(), overlay.RelaySourcePrefix+"10.0.0.9:8554")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	time.Sleep(500 * time.Millisecond)
	if getJSON(t, base+"/api/v1/vod/record", &list); len(list.Recordings) != 1 {
		t.Fatalf("a relayed stream is recorded: %+v", list)
	}

	var started struct{ ID, State string }
	if code := postJSON(t, base+"/api/v1/vod/record", `{"stream":"live/cam1","title":"On request"}`, &started); code != http.StatusAccepted || started.State != string(vod.StateRecording) {
		t.Fatalf("POST /api/v1/vod/record: HTTP %d %+v", code, started)
	}
	testutil.Eventually(t, 20*time.Second, "the recording has segments", func() bool {
		var tj vod.TitleJSON
		getJSON(t, base+"/api/v1/vod/titles/"+started.ID, &tj)
		return tj.State == vod.StateRecording && tj.Duration >= 2
	})
	// The recording by pattern runs too: an EVENT playlist with segments.
	var pl string
	testutil.Eventually(t, 10*time.Second, "the recording by pattern has an EVENT playlist with segments", func() bool {
		resp, err := http.Get(base + "/vod/" + auto.ID + "/source.m3u8")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		pl = string(b)
		return strings.Contains(pl, "#EXTINF")
	})
	if !strings.Contains(pl, "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(pl, "ENDLIST") {
		t.Fatalf("the playlist while recording:\n%s", pl)
	}
	var stopped struct {
		State    string  `json:"state"`
		Duration float64 `json:"duration_seconds"`
	}
	if code := postJSON(t, base+"/api/v1/vod/record/"+started.ID+"/stop", ``, &stopped); code != http.StatusOK || stopped.State != string(vod.StateReady) || stopped.Duration < 2 {
		t.Fatalf("stop: HTTP %d %+v", code, stopped)
	}

	time.Sleep(3 * time.Second)
	stop()
	live := time.Since(liveAt)
	var tj vod.TitleJSON
	testutil.Eventually(t, 10*time.Second, "the pattern's recording is ready once the publisher stops", func() bool {
		getJSON(t, base+"/api/v1/vod/titles/"+auto.ID, &tj)
		return tj.State == vod.StateReady
	})
	if d := time.Duration(tj.Duration * float64(time.Second)); d < live-2*time.Second-time.Second || d > live+time.Second {
		t.Fatalf("recorded %v of a stream live for %v", d, live)
	}
	// The recorder drops a recording from its list when the title's
	// Close returned, just after the title became ready.
	testutil.Eventually(t, 5*time.Second, "no recording left running", func() bool {
		getJSON(t, base+"/api/v1/vod/record", &list)
		return len(list.Recordings) == 0
	})
	ts, _ := n.VoD.List("")
	if len(ts) != 2 {
		t.Fatalf("titles: %+v, want the two recordings of live/cam1 only", ts)
	}
}

// TestABadRecordPatternIsRefusedNamingTheField: vod.record patterns are
// checked at start.
// TestAPublisherBackWithinTheGraceContinuesTheTitle: live/cam1 is
// recorded by pattern, its publisher stops and comes back within
// vod.record_grace: no second title, the first goes on (recording) and is
// ready after the second publisher stops, as long as both were live.
func TestAPublisherBackWithinTheGraceContinuesTheTitle(t *testing.T) {
	n := recordNode(t, []string{"live/*"})
	base := "http://" + n.HTTPAddr()
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 25, Audio: "aac"})
	at := time.Now()
	stop := testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	var list struct {
		Recordings []struct{ ID, Stream string } `json:"recordings"`
	}
	testutil.Eventually(t, 10*time.Second, "live/cam1 is recorded by pattern", func() bool {
		getJSON(t, base+"/api/v1/vod/record", &list)
		return len(list.Recordings) == 1
	})
	id := list.Recordings[0].ID
	time.Sleep(3 * time.Second)
	stop()
	live := time.Since(at)
	time.Sleep(time.Second) // within the 2 s grace
	at = time.Now()
	stop = testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	time.Sleep(4 * time.Second)
	var tj vod.TitleJSON
	getJSON(t, base+"/api/v1/vod/titles/"+id, &tj)
	if tj.State != vod.StateRecording {
		t.Fatalf("the title after the publisher came back: %+v", tj)
	}
	stop()
	live += time.Since(at)
	testutil.Eventually(t, 10*time.Second, "the title is ready after the grace", func() bool {
		getJSON(t, base+"/api/v1/vod/titles/"+id, &tj)
		return tj.State == vod.StateReady
	})
	if d := time.Duration(tj.Duration * float64(time.Second)); d < live-3*time.Second || d > live+time.Second {
		t.Fatalf("recorded %v of a stream live for %v in two runs", d, live)
	}
	if ts, _ := n.VoD.List(""); len(ts) != 1 {
		t.Fatalf("titles: %+v, want one", ts)
	}
}

func TestABadRecordPatternIsRefusedNamingTheField(t *testing.T) {
	cfg := testOverlayConfig(t, "rec", "", nil)
	cfg.Gossip.Addr = Off
	cfg.VoD.Record = []string{"live/["}
	_, err := New(cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "vod.record") {
		t.Fatalf("New with a bad pattern: %v", err)
	}

}

// TestANodeThatStopsFinishesItsRecordings: closing a node ends its
// recordings as ready titles, found ready by the next node on that data.
func TestANodeThatStopsFinishesItsRecordings(t *testing.T) {
	cfg := testOverlayConfig(t, "rec", "", nil)
	cfg.Gossip.Addr = Off
	cfg.VoD.SegmentDuration = 2 * time.Second
	n, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 25, Audio: "aac"})
	testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	var started struct{ ID string }
	if code := postJSON(t, "http://"+n.HTTPAddr()+"/api/v1/vod/record", `{"stream":"live/cam1"}`, &started); code != http.StatusAccepted {
		t.Fatalf("record: HTTP %d", code)
	}
	time.Sleep(3 * time.Second)
	n.Close()
	n2, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	ti, err := n2.VoD.Get(started.ID)
	if err != nil || ti.State != vod.StateReady || ti.Duration < 2*time.Second || !strings.HasPrefix(ti.Title, "live/cam1 ") {
		t.Fatalf("after the node stopped: %v %+v", err, ti)
	}
}

// TestAPublisherBackWithOtherTracksGetsATitleOfItsOwn: back within the
// grace at another size, the stream's first title ends (ready) and the
// pattern records the new one into a second title.
func TestAPublisherBackWithOtherTracksGetsATitleOfItsOwn(t *testing.T) {
	n := recordNode(t, []string{"live/*"})
	base := "http://" + n.HTTPAddr()
	big := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 25, Audio: "aac"})
	small := testutil.Clip(t, testutil.ClipOptions{Width: 160, Height: 120, FPS: 25, Seconds: 10, GOP: 25, Audio: "aac"})
	stop := testutil.PublishFile(t, n.Hub, "live/cam1", big, false)
	var list struct {
		Recordings []struct{ ID, Stream string } `json:"recordings"`
	}
	testutil.Eventually(t, 10*time.Second, "live/cam1 is recorded by pattern", func() bool {
		getJSON(t, base+"/api/v1/vod/record", &list)
		return len(list.Recordings) == 1
	})
	first := list.Recordings[0].ID
	time.Sleep(3 * time.Second)
	stop()
	testutil.PublishFile(t, n.Hub, "live/cam1", small, false)
	var tj vod.TitleJSON
	testutil.Eventually(t, 10*time.Second, "the first title is ready and a second records", func() bool {
		getJSON(t, base+"/api/v1/vod/titles/"+first, &tj)
		getJSON(t, base+"/api/v1/vod/record", &list)
		return tj.State == vod.StateReady && len(list.Recordings) == 1 && list.Recordings[0].ID != first
	})
	if tj.Renditions[0].Width != 320 {
		t.Fatalf("first title: %+v", tj)
	}
}
