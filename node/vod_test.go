package node

import (
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// listedTitle returns the title id as node n's API lists it.
func listedTitle(t *testing.T, n *Node, id string) (vod.TitleJSON, bool) {
	t.Helper()
	var list struct{ Titles []vod.TitleJSON }
	if code := getJSON(t, "http://"+n.HTTPAddr()+"/api/v1/vod/titles", &list); code != http.StatusOK {
		t.Fatalf("%s lists titles: %d", n.Config().Name, code)
	}
	for _, x := range list.Titles {
		if x.ID == id {
			return x, true
		}
	}
	return vod.TitleJSON{}, false
}

// storedFiles lists the chunk files of a node's store folder.
func storedFiles(t *testing.T, n *Node) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(n.VoD.Store().Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, filepath.Base(p))
		}
		return nil
	})
	return out
}

// TestVoDTitlesAreListedPlayedAndRemovedAcrossTheCluster: a title uploaded
// to n0 of three gossiping nodes is listed by n2 (origin n0, ready) within
// seconds of being ready, and n2 serves its master and media playlists
// with the same chunk URLs as n0; n1, restarted on its data folder, still
// lists it; a DELETE on n2 removes it from n0 and n1 (404), and n0, its
// origin, drops its chunks.
func TestVoDTitlesAreListedPlayedAndRemovedAcrossTheCluster(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 6, GOP: 50, Audio: "aac"})
	n0 := testOverlayNode(t, "n0", "", nil)
	seed := []string{n0.Config().Gossip.Addr}
	n1 := testOverlayNode(t, "n1", "", seed)
	n2 := testOverlayNode(t, "n2", "", seed)
	nodes := []*Node{n0, n1, n2}
	testutil.Eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 3 {
				return false
			}
		}
		return true
	})

	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resp, err := http.Post("http://"+n0.HTTPAddr()+"/api/v1/vod/titles?title=Across+the+Cluster", "video/mp4", f)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("POST to n0: %d, Location %q", resp.StatusCode, loc)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	testutil.Eventually(t, 90*time.Second, "the title is ready on n0", func() bool {
		x, ok := listedTitle(t, n0, id)
		if x.State == vod.StateFailed {
			t.Fatalf("packaging failed: %s", x.Error)
		}
		return ok && x.State == vod.StateReady
	})
	ready := time.Now()
	testutil.Eventually(t, 10*time.Second, "n2 lists the title from n0, ready", func() bool {
		x, ok := listedTitle(t, n2, id)
		return ok && x.Origin == "n0" && x.State == vod.StateReady
	})
	t.Logf("n2 listed the title %v after it was ready on n0", time.Since(ready).Round(time.Millisecond))
	if x, _ := listedTitle(t, n0, id); x.Origin != "n0" {
		t.Errorf("n0 shows its own title with origin %q, want n0", x.Origin)
	}

	var chunks []string
	for _, p := range []string{"/vod/" + id + "/index.m3u8", "/vod/" + id + "/source.m3u8"} {
		c0, b0 := httpGet(t, "http://"+n0.HTTPAddr()+p)
		c2, b2 := httpGet(t, "http://"+n2.HTTPAddr()+p)
		if c0 != http.StatusOK || c2 != http.StatusOK || b0 != b2 {
			t.Fatalf("%s: n0 %d, n2 %d, same playlist %v\nn0:\n%s\nn2:\n%s", p, c0, c2, b0 == b2, b0, b2)
		}
		for _, l := range strings.Split(b2, "\n") {
			if strings.Contains(l, "/vod/chunks/") {
				chunks = append(chunks, l)
			}
		}
	}
	if len(chunks) < 2 {
		t.Fatalf("the rendition playlist names %d chunks, want an init section and segments", len(chunks))
	}

	// n1 restarted on the same data folder still lists the title.
	testutil.Eventually(t, 10*time.Second, "n1 lists the title before its restart", func() bool {
		_, ok := listedTitle(t, n1, id)
		return ok
	})
	cfg1 := n1.Config()
	n1.Close()
	n1, err = New(cfg1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n1.Close() })
	if x, ok := listedTitle(t, n1, id); !ok || x.Origin != "n0" || x.State != vod.StateReady {
		t.Fatalf("restarted n1 lists %+v (%v), want the title of n0, ready", x, ok)
	}
	if c, _ := httpGet(t, "http://"+n1.HTTPAddr()+"/vod/"+id+"/source.m3u8"); c != http.StatusOK {
		t.Errorf("restarted n1 serves the rendition playlist: %d", c)
	}
	if len(storedFiles(t, n0)) == 0 {
		t.Fatal("n0's store folder is empty before the removal")
	}

	// rm on n2 removes it everywhere; the origin drops its chunks.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+n2.HTTPAddr()+"/api/v1/vod/titles/"+id, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on n2: %d", resp.StatusCode)
	}
	testutil.Eventually(t, 10*time.Second, "the title is gone from n0 and n1 (404)", func() bool {
		for _, n := range []*Node{n0, n1} {
			if c, _ := httpGet(t, "http://"+n.HTTPAddr()+"/api/v1/vod/titles/"+id); c != http.StatusNotFound {
				return false
			}
		}
		return true
	})
	testutil.Eventually(t, 5*time.Second, "n0's store folder holds none of the title's chunks", func() bool {
		return len(storedFiles(t, n0)) == 0
	})
	for _, n := range nodes {
		if c, _ := httpGet(t, "http://"+n.HTTPAddr()+"/vod/"+id+"/index.m3u8"); c != http.StatusNotFound {
			t.Errorf("%s serves the removed title's playlist: %d, want 404", n.Config().Name, c)
		}
	}
}
