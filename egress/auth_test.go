package egress_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// bearer adds a Bearer token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestAuthWHEPBearerToken plays WHEP with a Go client: without a token the
// offer is refused 401 with a Bearer challenge, with a token of another
// stream 403, and the right token plays; the refusals are logged once.
func TestAuthWHEPBearerToken(t *testing.T) {
	secret := strings.Repeat("s", 32)
	alogs := &testutil.LogBuffer{}
	a, err := auth.New(auth.Config{Method: auth.MethodJWT, JWTKey: secret}, slog.New(slog.NewTextHandler(alogs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	env := newWHEPEnv(t, egress.DefaultWebRTCConfig())
	env.srv.Config.Handler.(*egress.Router).Authorize = func(r *http.Request, action, path string) error {
		return a.Authorize(auth.FromHTTP(r, action, path, "webrtc"))
	}
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/cam1", clip, true)
	token := func(path string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(),
			"gradient_permissions": []map[string]string{{"action": "read", "path": path}}}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	try := func(client *http.Client) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := testutil.DialWHEP(ctx, env.url("live/cam1"), testutil.WHEPOptions{Loopback: true, HTTPClient: client})
		if err == nil {
			s.Close()
		}
		return err
	}
	var we *testutil.WHEPError
	if err := try(nil); !errors.As(err, &we) || we.Status != http.StatusUnauthorized {
		t.Fatalf("offer without a token: %v, want 401", err)
	}
	if err := try(&http.Client{Transport: bearer{token("live/other")}}); !errors.As(err, &we) || we.Status != http.StatusForbidden {
		t.Fatalf("offer with another stream's token: %v, want 403", err)
	}
	s := dial(t, env.url("live/cam1"), testutil.WHEPOptions{HTTPClient: &http.Client{Transport: bearer{token("live/*")}}})
	waitAUs(t, s, 10, "access units with a good token")

	// The challenge names Bearer; a player that cannot set headers uses ?token=.
	resp, err := http.Post(env.url("live/cam1"), "application/sdp", strings.NewReader("v=0"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := strings.Join(resp.Header.Values("WWW-Authenticate"), ", "); !strings.Contains(got, "Bearer") {
		t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
	}
	resp, err = http.Post(env.url("live/cam1")+"?token="+url.QueryEscape(token("live/cam1")), "application/sdp", strings.NewReader("v=0"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		t.Errorf("?token= refused: %d", resp.StatusCode)
	}
	if n := strings.Count(alogs.String(), "request refused"); n != 1 {
		t.Errorf("%d refusal lines from one client within a minute, want 1:\n%s", n, alogs)
	}
}

// TestAuthRouterSignedURLsAndRedirect checks HLS and player requests with
// a signed URL (valid, expired, tampered) and that the player redirect
// keeps the signature.
func TestAuthRouterSignedURLsAndRedirect(t *testing.T) {
	key := "0123456789abcdef0123456789"
	a, err := auth.New(auth.Config{URLSigningKey: key, InternalUsers: []auth.User{
		{User: "cam", Pass: "p", Permissions: []auth.Permission{{Action: auth.ActionPublish}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "served") })
	h := handlerFunc(func(w http.ResponseWriter, r *http.Request, path, rest string) { ok(w, r) })
	srv := httptest.NewServer(&egress.Router{HLS: h, Player: h, WHEP: h,
		Authorize: func(r *http.Request, action, path string) error {
			return a.Authorize(auth.FromHTTP(r, action, path, "http"))
		}})
	defer srv.Close()
	good := auth.SignQuery([]byte(key), "live/cam1", time.Now().Add(time.Hour))
	expired := auth.SignQuery([]byte(key), "live/cam1", time.Now().Add(-time.Minute))
	vals, _ := url.ParseQuery(good)
	tampered := url.Values{"exp": {vals.Get("exp") + "1"}, "sig": vals["sig"]}.Encode()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		url  string
		want int
	}{
		{"/live/cam1/index.m3u8", http.StatusUnauthorized},
		{"/live/cam1/index.m3u8?" + good, http.StatusOK},
		{"/live/cam1@360p/index.m3u8?" + good, http.StatusOK}, // a rendition of the signed stream
		{"/live/cam2/index.m3u8?" + good, http.StatusUnauthorized},
		{"/live/cam1/index.m3u8?" + expired, http.StatusForbidden},
		{"/live/cam1/index.m3u8?" + tampered, http.StatusUnauthorized},
		{"/live/cam1/?" + good, http.StatusOK},
		{"/live/cam1/", http.StatusUnauthorized},
	} {
		resp, err := noRedirect.Get(srv.URL + c.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s: %d, want %d", c.url, resp.StatusCode, c.want)
		}
	}
	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/live/cam1/whep", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("CORS preflight: %v %v, want it served without credentials", resp, err)
	}
	resp, err := noRedirect.Get(srv.URL + "/live/cam1?" + good)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "sig=") {
		t.Errorf("player redirect to %q lost the signature", loc)
	}
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, path, rest string)

func (f handlerFunc) ServeStream(w http.ResponseWriter, r *http.Request, path, rest string) {
	f(w, r, path, rest)
}
