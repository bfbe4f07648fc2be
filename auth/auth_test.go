package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
)

var (
	loop   = netip.MustParseAddr("127.0.0.1")
	remote = netip.MustParseAddr("203.0.113.7")
)

func newTest(t *testing.T, cfg Config) (*Authorizer, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	a, err := New(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a, &buf
}

func TestAuthDefaultUsersAreLoopbackFriendlyAndSafeOnANetwork(t *testing.T) {
	a, _ := newTest(t, Config{})
	cases := []struct {
		r    Request
		want error
	}{
		{Request{Action: ActionPublish, Path: "live/x", IP: loop}, nil},
		{Request{Action: ActionPublish, Path: "live/x", IP: netip.MustParseAddr("::1")}, nil},
		{Request{Action: ActionPublish, Path: "live/x", IP: remote}, ErrNoCredentials},
		{Request{Action: ActionPublish, Path: "live/x", IP: remote, User: "x", Pass: "y"}, ErrBadCredentials},
		{Request{Action: ActionRead, Path: "live/x", IP: remote}, nil},
		{Request{Action: ActionAPI, Path: "/api/v1/vod/titles", IP: loop}, nil},
		{Request{Action: ActionAPI, Path: "/api/v1/vod/titles", IP: remote}, ErrNoCredentials},
		{Request{Action: ActionMetrics, Path: "/metrics", IP: remote}, ErrNoCredentials},
		{Request{Action: ActionMetrics, Path: "/metrics", IP: netip.MustParseAddr("::ffff:127.0.0.1")}, nil},
	}
	for _, c := range cases {
		if err := a.Authorize(c.r); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s %s from %s: %v, want %v", c.r.Action, c.r.Path, c.r.IP, err, c.want)
		}
	}
	doors := strings.Join(a.OpenDoors(), "\n")
	if !strings.Contains(doors, "read every path") || strings.Contains(doors, "publish") {
		t.Errorf("open doors %q: want read only (loopback-only grants are not doors)", doors)
	}
}

func TestAuthInternalUsersPasswordsIPsAndPaths(t *testing.T) {
	sum := sha256.Sum256([]byte("hashed-secret"))
	salt := []byte("0123456789abcdef")
	hash := argon2.IDKey([]byte("argon-secret"), salt, 1, 64, 1, 32)
	argon := "argon2:$argon2id$v=19$m=64,t=1,p=1$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(hash)
	a, _ := newTest(t, Config{InternalUsers: []User{
		{User: "cam", Pass: "secret", Permissions: []Permission{{Action: ActionPublish, Path: "live/*"}}},
		{User: "h", Pass: "sha256:" + base64.StdEncoding.EncodeToString(sum[:]), Permissions: []Permission{{Action: ActionPublish}}},
		{User: "ar", Pass: argon, Permissions: []Permission{{Action: ActionAPI}}},
		{User: "office", Pass: "o", IPs: []string{"10.0.0.0/8"}, Permissions: []Permission{{Action: ActionMetrics}}},
		{User: AnyUser, Permissions: []Permission{{Action: ActionRead}}},
	}})
	ten := netip.MustParseAddr("10.1.2.3")
	cases := []struct {
		name string
		r    Request
		want error
	}{
		{"plain", Request{Action: ActionPublish, Path: "live/cam1", IP: remote, User: "cam", Pass: "secret"}, nil},
		{"plain wrong", Request{Action: ActionPublish, Path: "live/cam1", IP: remote, User: "cam", Pass: "nope"}, ErrBadCredentials},
		{"path outside pattern", Request{Action: ActionPublish, Path: "other/cam1", IP: remote, User: "cam", Pass: "secret"}, ErrForbidden},
		{"pattern is one segment", Request{Action: ActionPublish, Path: "live/a/b", IP: remote, User: "cam", Pass: "secret"}, ErrForbidden},
		{"digest proof", Request{Action: ActionPublish, Path: "live/c", IP: remote, User: "cam", VerifyPass: func(p string) bool { return p == "secret" }}, nil},
		{"digest wrong", Request{Action: ActionPublish, Path: "live/c", IP: remote, User: "cam", VerifyPass: func(string) bool { return false }}, ErrBadCredentials},
		{"sha256", Request{Action: ActionPublish, Path: "x/y", IP: remote, User: "h", Pass: "hashed-secret"}, nil},
		{"sha256 wrong", Request{Action: ActionPublish, Path: "x/y", IP: remote, User: "h", Pass: "hashed"}, ErrBadCredentials},
		{"sha256 cannot digest", Request{Action: ActionPublish, Path: "x/y", IP: remote, User: "h", VerifyPass: func(string) bool { return true }}, ErrBadCredentials},
		{"argon2", Request{Action: ActionAPI, Path: "/api/v1/x", IP: remote, User: "ar", Pass: "argon-secret"}, nil},
		{"argon2 wrong", Request{Action: ActionAPI, Path: "/api/v1/x", IP: remote, User: "ar", Pass: "argon"}, ErrBadCredentials},
		{"ip allowed", Request{Action: ActionMetrics, Path: "/metrics", IP: ten, User: "office", Pass: "o"}, nil},
		{"ip refused", Request{Action: ActionMetrics, Path: "/metrics", IP: remote, User: "office", Pass: "o"}, ErrForbidden},
		{"any reads", Request{Action: ActionRead, Path: "live/cam1", IP: remote}, nil},
		{"any reads with credentials", Request{Action: ActionRead, Path: "live/cam1", IP: remote, User: "cam", Pass: "bad"}, nil},
		{"anonymous publish", Request{Action: ActionPublish, Path: "live/cam1", IP: loop}, ErrNoCredentials},
	}
	for _, c := range cases {
		if err := a.Authorize(c.r); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestAuthConfigValidateNamesTheKey(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Method: "ldap"}, "method"},
		{Config{Method: MethodHTTP}, "http_address"},
		{Config{Method: MethodJWT}, "jwt_key"},
		{Config{Method: MethodJWT, JWTKey: "short"}, "jwt_key"},
		{Config{URLSigningKey: "short"}, "url_signing_key"},
		{Config{InternalUsers: []User{{User: "a"}}}, "internal_users[0]: pass"},
		{Config{InternalUsers: []User{{User: "a", Pass: "sha256:nope"}}}, "internal_users[0]: pass"},
		{Config{InternalUsers: []User{{User: "a", Pass: "b", IPs: []string{"10.0.0.0/33"}}}}, "internal_users[0]: ips"},
		{Config{InternalUsers: []User{{User: "a", Pass: "b", Permissions: []Permission{{Action: "write"}}}}}, "permissions[0].action"},
		{Config{InternalUsers: []User{{User: "a", Pass: "b", Permissions: []Permission{{Action: "read", Path: "["}}}}}, "permissions[0].path"},
	} {
		_, err := New(c.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}

func TestAuthSignedURLValidExpiredTampered(t *testing.T) {
	key := "0123456789abcdef0123"
	a, logs := newTest(t, Config{URLSigningKey: key, InternalUsers: []User{{User: "cam", Pass: "p", Permissions: []Permission{{Action: ActionPublish}}}}})
	// No "any" reader: only signed URLs read.
	q, err := a.Sign("live/cam1", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	vals, _ := url.ParseQuery(q)
	read := func(p string, v url.Values) error {
		return a.Authorize(Request{Action: ActionRead, Path: p, IP: remote, Query: v})
	}
	if err := read("live/cam1", vals); err != nil {
		t.Fatalf("valid signed URL refused: %v", err)
	}
	if err := read("live/cam2", vals); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("signature for another path: %v, want ErrBadCredentials", err)
	}
	tampered := url.Values{"exp": {vals.Get("exp") + "0"}, "sig": vals["sig"]}
	if err := read("live/cam1", tampered); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("tampered exp: %v, want ErrBadCredentials", err)
	}
	expired, _ := url.ParseQuery(SignQuery([]byte(key), "live/cam1", time.Now().Add(-time.Second)))
	if err := read("live/cam1", expired); !errors.Is(err, ErrForbidden) {
		t.Errorf("expired: %v, want ErrForbidden", err)
	}
	if err := read("live/cam1", nil); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("unsigned: %v, want ErrNoCredentials", err)
	}
	// A signature never grants publishing.
	if err := a.Authorize(Request{Action: ActionPublish, Path: "live/cam1", IP: remote, Query: vals}); err == nil {
		t.Error("a signed URL let a publisher in")
	}
	// One client's refusals are logged once a minute per action: the four
	// read refusals make one line, the publish refusal another.
	if n := strings.Count(logs.String(), "request refused"); n != 2 {
		t.Errorf("%d refusal lines, want 2\n%s", n, logs)
	}
	if _, err := (&Authorizer{}).Sign("x", time.Now()); err == nil {
		t.Error("Sign without a key did not fail")
	}
}

func TestAuthRefusalsLoggedOncePerClientPerMinute(t *testing.T) {
	a, logs := newTest(t, Config{})
	now := time.Unix(1e9, 0)
	a.now = func() time.Time { return now }
	for range 5 {
		a.Authorize(Request{Action: ActionPublish, Path: "live/x", IP: remote})
	}
	a.Authorize(Request{Action: ActionPublish, Path: "live/x", IP: netip.MustParseAddr("198.51.100.1")})
	if n := strings.Count(logs.String(), "request refused"); n != 2 {
		t.Fatalf("%d lines for 6 refusals of 2 clients, want 2:\n%s", n, logs)
	}
	now = now.Add(time.Minute)
	a.Authorize(Request{Action: ActionPublish, Path: "live/x", IP: remote})
	if n := strings.Count(logs.String(), "request refused"); n != 3 {
		t.Fatalf("%d lines after a minute, want 3", n)
	}
}

func TestAuthHTTPMethodAsksTheBackendAndCaches(t *testing.T) {
	var calls atomic.Int32
	var last httpBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		json.NewDecoder(r.Body).Decode(&last)
		if last.User == "cam" && last.Pass == "good" && last.Action == ActionPublish {
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	a, _ := newTest(t, Config{Method: MethodHTTP, HTTPAddress: srv.URL})
	ok := Request{Action: ActionPublish, Path: "live/a", IP: remote, Protocol: "srt", User: "cam", Pass: "good"}
	if err := a.Authorize(ok); err != nil {
		t.Fatalf("backend said yes: %v", err)
	}
	if last.IP != remote.String() || last.Path != "live/a" || last.Protocol != "srt" {
		t.Errorf("backend got %+v", last)
	}
	a.Authorize(ok)
	if n := calls.Load(); n != 1 {
		t.Errorf("%d backend calls for the same request twice, want 1 (cached)", n)
	}
	if err := a.Authorize(Request{Action: ActionPublish, Path: "live/a", IP: remote, User: "cam", Pass: "bad"}); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("backend 401 with credentials: %v, want ErrBadCredentials", err)
	}
	if err := a.Authorize(Request{Action: ActionPublish, Path: "live/a", IP: remote}); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("backend 401 without credentials: %v, want ErrNoCredentials", err)
	}
	srv.Close()
	b, _ := newTest(t, Config{Method: MethodHTTP, HTTPAddress: srv.URL, HTTPTimeout: 200 * time.Millisecond})
	if err := b.Authorize(ok); !errors.Is(err, ErrForbidden) {
		t.Errorf("backend down: %v, want ErrForbidden (fail closed)", err)
	}
}

func TestAuthJWTMethod(t *testing.T) {
	secret := strings.Repeat("k", 32)
	a, _ := newTest(t, Config{Method: MethodJWT, JWTKey: secret})
	mk := func(key string, exp time.Time, perms any) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"exp": exp.Unix(), "gradient_permissions": perms}).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	perms := []map[string]string{{"action": "read", "path": "live/*"}}
	good := mk(secret, time.Now().Add(time.Hour), perms)
	if err := a.Authorize(Request{Action: ActionRead, Path: "live/x", IP: remote, Token: good}); err != nil {
		t.Fatalf("good token: %v", err)
	}
	if err := a.Authorize(Request{Action: ActionPublish, Path: "live/x", IP: remote, User: "u", Pass: good}); !errors.Is(err, ErrForbidden) {
		t.Errorf("token without publish: %v, want ErrForbidden", err)
	}
	if err := a.Authorize(Request{Action: ActionRead, Path: "live/x", IP: remote, Token: mk(strings.Repeat("x", 32), time.Now().Add(time.Hour), perms)}); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("token of another key: %v, want ErrBadCredentials", err)
	}
	if err := a.Authorize(Request{Action: ActionRead, Path: "live/x", IP: remote, Token: mk(secret, time.Now().Add(-time.Minute), perms)}); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("expired token: %v, want ErrBadCredentials", err)
	}
	if err := a.Authorize(Request{Action: ActionRead, Path: "live/x", IP: remote}); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no token: %v, want ErrNoCredentials", err)
	}
}

func TestAuthFromHTTPAndCarryRedirects(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/live/x/index.m3u8?token=tq&user=u&pass=p", nil)
	r.RemoteAddr = "[::ffff:198.51.100.9]:5555"
	ar := FromHTTP(r, ActionRead, "live/x", "hls")
	if ar.Token != "tq" || ar.User != "u" || ar.Pass != "p" || ar.IP != netip.MustParseAddr("198.51.100.9") {
		t.Errorf("query credentials: %+v", ar)
	}
	r.Header.Set("Authorization", "Bearer th")
	if ar := FromHTTP(r, ActionRead, "live/x", "hls"); ar.Token != "th" {
		t.Errorf("Bearer: token %q, want th", ar.Token)
	}
	r.SetBasicAuth("bu", "bp")
	if ar := FromHTTP(r, ActionAPI, "/api", "http"); ar.User != "bu" || ar.Pass != "bp" {
		t.Errorf("Basic: %q %q", ar.User, ar.Pass)
	}
	h := CarryRedirects(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/live/x@360p/?device=phone", http.StatusFound)
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/watch/live/x?exp=9&sig=abc&other=1", nil))
	loc, _ := url.Parse(w.Header().Get("Location"))
	if q := loc.Query(); q.Get("exp") != "9" || q.Get("sig") != "abc" || q.Get("device") != "phone" || q.Has("other") {
		t.Errorf("redirect to %s: want device, exp and sig only", loc)
	}
}

func TestAuthStaleSignatureDoesNotShutAnOpenDoor(t *testing.T) {
	a, _ := newTest(t, Config{URLSigningKey: "0123456789abcdef0123"}) // default users: anybody reads
	q, _ := url.ParseQuery(SignQuery([]byte("0123456789abcdef0123"), "live/x", time.Now().Add(-time.Hour)))
	if err := a.Authorize(Request{Action: ActionRead, Path: "live/x", IP: remote, Query: q}); err != nil {
		t.Errorf("expired link where anybody may read: %v, want nil", err)
	}
}

func TestAuthJWTWithJWKS(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(priv.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
		}, {
			"kty": "OKP", "kid": "k2", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(edPub),
		}, {
			"kty": "EC", "kid": "k3", "crv": "P-256",
			"x": base64.RawURLEncoding.EncodeToString(ecPriv.X.Bytes()), "y": base64.RawURLEncoding.EncodeToString(ecPriv.Y.Bytes()),
		}}})
	}))
	defer srv.Close()
	a, _ := newTest(t, Config{Method: MethodJWT, JWTJWKS: srv.URL})
	mk := func(method jwt.SigningMethod, kid string, key any) string {
		tk := jwt.NewWithClaims(method, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(),
			"gradient_permissions": []map[string]string{{"action": "publish", "path": "live/*"}}})
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pub := func(tok string) error {
		return a.Authorize(Request{Action: ActionPublish, Path: "live/x", IP: remote, User: "enc", Pass: tok})
	}
	if err := pub(mk(jwt.SigningMethodRS256, "k1", priv)); err != nil {
		t.Fatalf("RS256 token of the JWKS key: %v", err)
	}
	if err := pub(mk(jwt.SigningMethodRS256, "k1", priv)); err != nil || fetches.Load() != 1 {
		t.Errorf("second token: %v after %d fetches, want the key cached (1 fetch)", err, fetches.Load())
	}
	if err := pub(mk(jwt.SigningMethodEdDSA, "k2", edPriv)); err != nil {
		t.Errorf("EdDSA token of the JWKS's Ed25519 key: %v", err)
	}
	if err := pub(mk(jwt.SigningMethodES256, "k3", ecPriv)); err != nil {
		t.Errorf("ES256 token of the JWKS's P-256 key: %v", err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if err := pub(mk(jwt.SigningMethodRS256, "k1", other)); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("token of another key: %v, want ErrBadCredentials", err)
	}
	if err := pub(mk(jwt.SigningMethodRS256, "k9", priv)); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("unknown kid: %v, want ErrBadCredentials", err)
	}
	if err := pub(mk(jwt.SigningMethodHS256, "k1", priv.N.Bytes())); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("HS256 token keyed with the public modulus: %v, want ErrBadCredentials", err)
	}
}
