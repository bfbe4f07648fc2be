package vod

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// TestThePlayerPagePreloadsWhatItsPlayerFetchesFirst: the player page of
// a ready title with a ladder preloads, in the order the player needs
// them, the master playlist at the URL its script loads (one viewer
// token per page), then the lowest rendition's media playlist, init
// section and first segment, each as a CORS fetch so that hls.js's
// requests take them; and every preloaded URL answers 200.
func TestThePlayerPagePreloadsWhatItsPlayerFetchesFirst(t *testing.T) {
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 640, Height: 480, FPS: 25, Seconds: 6, GOP: 50, Audio: "aac"})
	e := newVoDEnv(t, func(c *Config) { c.Ladder = []LadderRung{{Name: "240p", Height: 240, Kbps: 300}} })
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, v := e.post(t, "title=preload", f)
	id := v["id"].(string)
	e.waitReady(t, id)
	full, err := e.s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	var low *Rendition
	for i := range full.Manifest.Renditions {
		if r := &full.Manifest.Renditions[i]; r.Name == "240p" {
			low = r
		}
	}
	if low == nil || len(low.Segments) == 0 {
		t.Fatalf("no 240p rendition with segments: %+v", full.Manifest.Renditions)
	}

	pages := map[string]bool{}
	for range 2 {
		resp, body := e.get(t, "/vod/"+id+"/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("player page: %d", resp.StatusCode)
		}
		page := string(body)
		links := regexp.MustCompile(`<link rel="preload" href="([^"]+)" as="fetch" crossorigin>`).FindAllStringSubmatch(page, -1)
		var got []string
		for _, l := range links {
			got = append(got, strings.ReplaceAll(l[1], "&amp;", "&"))
		}
		if len(got) != 4 {
			t.Fatalf("preloads %q, want 4", got)
		}
		master := got[0]
		if !strings.HasPrefix(master, "index.m3u8?viewer=") || !strings.Contains(page, `var src = "`+master+`"`) {
			t.Errorf("first preload %q: want the master playlist at the URL the script loads", master)
		}
		pages[master] = true
		want := []string{"240p.m3u8", ChunkURL(low.Init.Digest, true), ChunkURL(low.Segments[0].Digest, false)}
		if strings.Join(got[1:], " ") != strings.Join(want, " ") {
			t.Errorf("preloads after the master %q, want %q", got[1:], want)
		}
		for _, u := range got {
			if !strings.HasPrefix(u, "/") {
				u = "/vod/" + id + "/" + u
			}
			if r, _ := e.get(t, u); r.StatusCode != http.StatusOK {
				t.Errorf("preloaded %s: %d", u, r.StatusCode)
			}
		}
	}
	if len(pages) != 2 {
		t.Errorf("two page loads share a viewer token: %v", pages)
	}
}
