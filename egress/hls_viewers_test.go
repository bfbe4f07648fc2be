package egress_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// hlsGetAs is hlsGet with a User-Agent.
func hlsGetAs(t *testing.T, url, userAgent string) (int, string) {
	t.Helper()
	res, body := hlsGet(t, url, userAgent)
	return res.StatusCode, body
}

// viewersOf returns the viewers of path by client.
func viewersOf(h *egress.HLS, path string) map[string]egress.HLSViewer {
	out := map[string]egress.HLSViewer{}
	for _, v := range h.Viewers() {
		if v.Path == path {
			out[v.Client] = v
		}
	}
	return out
}

func TestHLSViewersCountEachClientOnceAndExpireAfterTheWindow(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	const window = 1500 * time.Millisecond
	h, srv := newHLSServer(t, hub, egress.HLSConfig{ViewerTimeout: window})
	base := srv.URL + "/live/cam1/"

	// A player: index.m3u8 with its device class and token, then every
	// kind of file the playlists name. The muxer repeats the query on the
	// URLs it lists, so child requests carry the device class too.
	const token, query = "0123456789abcdef01234567", "device=phone&viewer=0123456789abcdef01234567"
	code, mv := hlsGetAs(t, base+"index.m3u8?"+query, "player")
	if code != http.StatusOK {
		t.Fatalf("index.m3u8: HTTP %d\n%s", code, mv)
	}
	m := regexp.MustCompile(`(?m)^([^#\s]+\.m3u8\?[^\s]*)$`).FindStringSubmatch(mv)
	if m == nil || !strings.HasSuffix(m[1], "?"+query) {
		t.Fatalf("the multivariant playlist does not pass the query on to its media playlist:\n%s", mv)
	}
	code, pl := hlsGetAs(t, base+m[1], "player")
	if code != http.StatusOK {
		t.Fatalf("%s: HTTP %d\n%s", m[1], code, pl)
	}
	for _, re := range []string{`#EXT-X-MAP:URI="([^"]+)"`, `(?m)^([^#\s]+_seg\d+\.mp4[^\s]*)$`, `#EXT-X-PART:[^\n]*URI="([^"]+)"`} {
		f := regexp.MustCompile(re).FindStringSubmatch(pl)
		if f == nil || !strings.HasSuffix(f[1], "?"+query) {
			t.Fatalf("media playlist has no file matching %s with the query:\n%s", re, pl)
		}
		if code, body := hlsGetAs(t, base+f[1], "player"); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d (%s)", f[1], code, strings.TrimSpace(body))
		}
	}
	vs := viewersOf(h, "live/cam1")
	p, ok := vs["viewer:"+token]
	if len(vs) != 1 || !ok {
		t.Fatalf("after 5 requests of one player: viewers %v, want one, viewer:%s", vs, token)
	}
	if got := p.Query.Get("device"); got != "phone" {
		t.Errorf("player's query %v: device %q, want phone", p.Query, got)
	}
	for k := range p.Query {
		if strings.HasPrefix(k, "_HLS_") {
			t.Errorf("player's query keeps LL-HLS parameter %s: %v", k, p.Query)
		}
	}

	// A client without a token (ffmpeg, a TV's own player) is known by its
	// address and User-Agent: the same pair is the same viewer, another
	// User-Agent another one. A request for a stream not here makes none.
	for i := 0; i < 3; i++ {
		if code, body := hlsGetAs(t, base+"index.m3u8", "tv-app"); code != http.StatusOK {
			t.Fatalf("index.m3u8 (tv-app): HTTP %d (%s)", code, strings.TrimSpace(body))
		}
	}
	if code, _ := hlsGetAs(t, srv.URL+"/live/nope/index.m3u8", "lost"); code != http.StatusNotFound {
		t.Fatalf("index.m3u8 of a stream not here: HTTP %d, want 404", code)
	}
	vs = viewersOf(h, "live/cam1")
	tv, ok := vs["127.0.0.1 tv-app"]
	if len(vs) != 2 || !ok {
		t.Fatalf("viewers %v, want the player and 127.0.0.1 tv-app", vs)
	}
	if len(tv.Query) != 0 {
		t.Errorf("tv-app's query %v, want none", tv.Query)
	}
	if all := h.Viewers(); len(all) != 2 {
		t.Fatalf("all viewers %v, want 2: a 404 is no viewer", all)
	}

	// The player keeps fetching; tv-app stopped: tv-app goes after the
	// window, the player stays.
	testutil.Eventually(t, 10*time.Second, "tv-app is forgotten after the window", func() bool {
		if code, _ := hlsGetAs(t, base+m[1], "player"); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", m[1], code)
		}
		vs := viewersOf(h, "live/cam1")
		if _, ok := vs["viewer:"+token]; !ok {
			t.Fatalf("the player, still fetching, was forgotten: %v", vs)
		}
		_, tvThere := vs["127.0.0.1 tv-app"]
		return !tvThere
	})
	if idle := time.Since(tv.Last); idle < window {
		t.Fatalf("tv-app was forgotten %v after its last request, before the %v window", idle, window)
	}

	// Once the player stops too, nobody is left.
	last := viewersOf(h, "live/cam1")["viewer:"+token].Last
	testutil.Eventually(t, 10*time.Second, "the player is forgotten after the window", func() bool {
		return len(h.Viewers()) == 0
	})
	if idle := time.Since(last); idle < window {
		t.Fatalf("the player was forgotten %v after its last request, before the %v window", idle, window)
	}
}

func TestHLSViewersIgnoreImplausibleTokensAndAreClearedOnClose(t *testing.T) {
	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	h, srv := newHLSServer(t, hub, egress.HLSConfig{})
	base := srv.URL + "/live/cam1/index.m3u8"

	// A token that is too short or has odd characters is no token: both
	// requests are the one client 127.0.0.1 ua.
	for _, q := range []string{"?viewer=x", "?viewer=" + strings.Repeat("%2F", 10)} {
		if code, body := hlsGetAs(t, base+q, "ua"); code != http.StatusOK {
			t.Fatalf("index.m3u8%s: HTTP %d (%s)", q, code, strings.TrimSpace(body))
		}
	}
	// Two players behind one address with one browser are two viewers.
	for _, tok := range []string{"aaaaaaaaaaaa", "bbbbbbbbbbbb"} {
		if code, body := hlsGetAs(t, base+"?viewer="+tok, "ua"); code != http.StatusOK {
			t.Fatalf("index.m3u8 (%s): HTTP %d (%s)", tok, code, strings.TrimSpace(body))
		}
	}
	vs := viewersOf(h, "live/cam1")
	if len(vs) != 3 {
		t.Fatalf("viewers %v, want 127.0.0.1 ua and two tokens", vs)
	}
	for _, c := range []string{"127.0.0.1 ua", "viewer:aaaaaaaaaaaa", "viewer:bbbbbbbbbbbb"} {
		if _, ok := vs[c]; !ok {
			t.Errorf("no viewer %q in %v", c, vs)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if vs := h.Viewers(); len(vs) != 0 {
		t.Fatalf("after Close: viewers %v, want none", vs)
	}
}
