package egress_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/egress"
)

type recordHandler struct{ path, rest string }

func (h *recordHandler) ServeStream(w http.ResponseWriter, r *http.Request, path, rest string) {
	h.path, h.rest = path, rest
	w.WriteHeader(http.StatusTeapot)
}

// TestRouterRoutesWHIPAndThePublishPage: WHIP offers go to the WHIP
// handler and need "publish"; its session resources and CORS preflights
// are not asked; /<stream>/publish is the player's publish page, read as
// any page; without a WHIP handler the WHIP URLs are 404.
func TestRouterRoutesWHIPAndThePublishPage(t *testing.T) {
	whip, player := &recordHandler{}, &recordHandler{}
	var asked []string
	rt := &egress.Router{WHEP: &recordHandler{}, HLS: &recordHandler{}, WHIP: whip, Player: player,
		Authorize: func(r *http.Request, action, path string) error {
			asked = append(asked, action+" "+path)
			return nil
		}}
	for _, tc := range []struct {
		method, url string
		h           *recordHandler
		rest, asked string
	}{
		{"POST", "/live/cam1/whip", whip, "whip", "publish live/cam1"},
		{"OPTIONS", "/live/cam1/whip", whip, "whip", ""},
		{"DELETE", "/live/cam1/whip/abc", whip, "whip/abc", ""},
		{"PATCH", "/a/b/c/whip/abc", whip, "whip/abc", ""},
		{"GET", "/live/cam1/publish", player, "publish", "read live/cam1"},
	} {
		asked = nil
		*tc.h = recordHandler{}
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, httptest.NewRequest(tc.method, tc.url, nil))
		if w.Code != http.StatusTeapot || tc.h.rest != tc.rest {
			t.Errorf("%s %s: %d, handler saw rest %q; want it routed with rest %q", tc.method, tc.url, w.Code, tc.h.rest, tc.rest)
		}
		if got := strings.Join(asked, ","); got != tc.asked {
			t.Errorf("%s %s asked %q, want %q", tc.method, tc.url, got, tc.asked)
		}
	}
	rt.WHIP = nil
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, httptest.NewRequest("POST", "/live/cam1/whip", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("WHIP without a handler: %d, want 404", w.Code)
	}
}

// TestPublishPageIsServed: the publish page of a stream loads its script
// from the player assets and links to the stream's player; the template
// itself is not an asset.
func TestPublishPageIsServed(t *testing.T) {
	p, err := egress.NewPlayer(egress.PlayerConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	mux.Handle("/", &egress.Router{Player: p})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, page := get("/live/cam1/publish")
	if code != 200 || !strings.Contains(page, egress.PlayerAssetsPrefix+"publish.js") || !strings.Contains(page, "Publish live/cam1") || !strings.Contains(page, `href="./"`) {
		t.Fatalf("publish page: %d\n%s", code, page)
	}
	if code, js := get("/_player/publish.js"); code != 200 || !strings.Contains(js, "setCodecPreferences") || !strings.Contains(js, "'whip'") {
		t.Errorf("publish.js: %d", code)
	}
	if code, _ := get("/_player/publish.html"); code != 404 {
		t.Errorf("/_player/publish.html: %d, want 404", code)
	}
}
