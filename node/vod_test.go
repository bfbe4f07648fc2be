package node

import (
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
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

// uploadReady uploads clip to n and waits until the title is ready there.
func uploadReady(t *testing.T, n *Node, clip, title string) string {
	t.Helper()
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resp, err := http.Post("http://"+n.HTTPAddr()+"/api/v1/vod/titles?title="+url.QueryEscape(title), "video/mp4", f)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("POST to %s: %d, Location %q", n.Config().Name, resp.StatusCode, loc)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	testutil.Eventually(t, 90*time.Second, "the title is ready on "+n.Config().Name, func() bool {
		x, ok := listedTitle(t, n, id)
		if x.State == vod.StateFailed {
			t.Fatalf("packaging failed: %s", x.Error)
		}
		return ok && x.State == vod.StateReady
	})
	return id
}

func deleteTitle(t *testing.T, n *Node, id string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, "http://"+n.HTTPAddr()+"/api/v1/vod/titles/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE on %s: %d", n.Config().Name, resp.StatusCode)
	}
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

	id := uploadReady(t, n0, clip, "Across the Cluster")
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
	testutil.Eventually(t, 10*time.Second, "n1 lists the title ready before its restart", func() bool {
		x, ok := listedTitle(t, n1, id)
		return ok && x.State == vod.StateReady
	})
	cfg1 := n1.Config()
	n1.Close()
	n1, err := New(cfg1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n1.Close() })
	nodes[1] = n1
	if x, ok := listedTitle(t, n1, id); !ok || x.Origin != "n0" || x.State != vod.StateReady {
		t.Fatalf("restarted n1 lists %+v (%v), want the title of n0, ready", x, ok)
	}
	if c, _ := httpGet(t, "http://"+n1.HTTPAddr()+"/vod/"+id+"/source.m3u8"); c != http.StatusOK {
		t.Errorf("restarted n1 serves the rendition playlist: %d", c)
	}
	if len(storedFiles(t, n0)) == 0 {
		t.Fatal("n0's store folder is empty before the removal")
	}

	// rm on n2 removes it everywhere; the origin drops its chunks. (A
	// node that has just rejoined is not gossiped to until the others
	// see it alive again; before that, only push/pull brings it news.)
	testutil.Eventually(t, 10*time.Second, "the restarted n1 is alive everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	deleteTitle(t, n2, id)
	removedAt := time.Now()
	testutil.Eventually(t, 10*time.Second, "the title is gone from n0 and n1 (404)", func() bool {
		for _, n := range []*Node{n0, n1} {
			if c, _ := httpGet(t, "http://"+n.HTTPAddr()+"/api/v1/vod/titles/"+id); c != http.StatusNotFound {
				if time.Since(removedAt) > 9*time.Second {
					t.Logf("%s: %d, removals %v, members %v", n.Config().Name, c, n.Members.VoDRemovals(), aliveList(n))
				}
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

// TestARemovalWhileTheOriginIsDownWinsWhenItComesBack: a title stays
// listed (ready, origin n0) on n1 after its origin n0 has left; n1 removes
// it while n0 is down; n0, restarted on its data folder, announces the
// title again but learns the removal when it joins, and removes it with
// its chunks.
func TestARemovalWhileTheOriginIsDownWinsWhenItComesBack(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 6, GOP: 50, Audio: "aac"})
	n0 := testOverlayNode(t, "n0", "", nil)
	n1 := testOverlayNode(t, "n1", "", []string{n0.Config().Gossip.Addr})
	testutil.Eventually(t, 10*time.Second, "2 nodes alive everywhere", func() bool {
		return len(n0.Members.Alive()) == 2 && len(n1.Members.Alive()) == 2
	})
	id := uploadReady(t, n0, clip, "Outlives its origin")
	testutil.Eventually(t, 10*time.Second, "n1 lists the title from n0, ready", func() bool {
		x, ok := listedTitle(t, n1, id)
		return ok && x.Origin == "n0" && x.State == vod.StateReady
	})
	cfg0 := n0.Config()
	n0.Close()
	testutil.Eventually(t, 10*time.Second, "n1 sees n0 gone", func() bool { return len(n1.Members.Alive()) == 1 })
	time.Sleep(vodRetryInterval) // a merge round without n0
	if x, ok := listedTitle(t, n1, id); !ok || x.Origin != "n0" || x.State != vod.StateReady {
		t.Fatalf("with its origin gone n1 lists %+v (%v), want it still, ready", x, ok)
	}
	if c, _ := httpGet(t, "http://"+n1.HTTPAddr()+"/vod/"+id+"/source.m3u8"); c != http.StatusOK {
		t.Errorf("with its origin gone n1 serves the rendition playlist: %d, want 200", c)
	}
	deleteTitle(t, n1, id)

	cfg0.Gossip.Join = []string{n1.Config().Gossip.Addr}
	n0, err := New(cfg0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n0.Close() })
	testutil.Eventually(t, 10*time.Second, "the restarted origin removes the title and its chunks", func() bool {
		c, _ := httpGet(t, "http://"+n0.HTTPAddr()+"/api/v1/vod/titles/"+id)
		return c == http.StatusNotFound && len(storedFiles(t, n0)) == 0
	})
	time.Sleep(vodRetryInterval)
	for _, n := range []*Node{n0, n1} {
		if _, ok := listedTitle(t, n, id); ok {
			t.Errorf("%s lists the removed title again", n.Config().Name)
		}
	}
}

func aliveList(n *Node) []string {
	var out []string
	for _, m := range n.Members.Members() {
		out = append(out, m.Name+":"+m.State)
	}
	return out
}
