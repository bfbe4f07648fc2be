package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	srt "github.com/datarhei/gosrt"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
)

// nonLoopbackIP is an address of this host beyond loopback, or "".
func nonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}

// authNode starts a node on every interface, logging into a buffer.
func authNode(t *testing.T, edit func(*Config)) (*Node, *testutil.LogBuffer) {
	t.Helper()
	cfg := testOverlayConfig(t, "authn", "", nil)
	cfg.Gossip.Addr = Off
	cfg.HTTP = fmt.Sprintf("0.0.0.0:%d", testutil.FreePort(t, "tcp"))
	cfg.RTSP.Addr = fmt.Sprintf("0.0.0.0:%d", testutil.FreePort(t, "tcp"))
	edit(&cfg)
	logs := &testutil.LogBuffer{}
	n, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		if t.Failed() {
			t.Logf("node log:\n%s", logs)
		}
	})
	return n, logs
}

func httpDo(t *testing.T, method, url, user, pass string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// TestAuthNodeDefaultIsLoopbackFriendlyAndSafeOnANetwork runs a node with
// no auth section: from loopback, publishing (ffmpeg over RTSP), API writes
// and /metrics work without credentials; from the host's network address
// they are refused 401, reading stays open, and the open door is logged.
func TestAuthNodeDefaultIsLoopbackFriendlyAndSafeOnANetwork(t *testing.T) {
	ip := nonLoopbackIP()
	if ip == "" {
		t.Skip("no non-loopback address on this host")
	}
	n, logs := authNode(t, func(*Config) {})
	hp, rp := port(n.HTTPAddr()), port(n.RTSP.Addr().String())
	loop, remote := "http://127.0.0.1:"+hp, "http://"+ip+":"+hp

	for _, c := range []struct {
		method, url string
		want        int
	}{
		{"GET", loop + "/metrics", 200},
		{"GET", loop + "/api/v1/streams", 200},
		{"POST", loop + "/api/v1/vod/record", 400}, // let in: the empty request is the handler's to refuse
		{"GET", remote + "/metrics", 401},
		{"GET", remote + "/api/v1/streams", 401},
		{"GET", remote + "/api/v1/cluster", 401},
		{"POST", remote + "/api/v1/vod/record", 401},
		{"DELETE", remote + "/api/v1/vod/titles/x", 401},
		{"GET", remote + "/api/v1/node", 200},
		{"GET", remote + "/healthz", 200},
		{"GET", remote + "/live/none/index.m3u8", 404}, // reading is open: the stream is just not there
	} {
		if got := httpDo(t, c.method, c.url, "", "").StatusCode; got != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.url, got, c.want)
		}
	}

	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, GOP: 10})
	refused := testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://"+ip+":"+rp+"/live/net", "-rtsp_transport", "tcp")
	refused.Wait(t, 15*time.Second)
	if !strings.Contains(refused.Output(), "401") {
		t.Errorf("publishing from %s without credentials: want 401, ffmpeg said:\n%s", ip, refused.Output())
	}
	testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://127.0.0.1:"+rp+"/live/loop", "-rtsp_transport", "tcp")
	testutil.Eventually(t, 15*time.Second, "loopback publisher live", func() bool {
		_, ok := n.Hub.Lookup("live/loop")
		return ok
	})
	out := logs.String()
	if !strings.Contains(out, "open door") || !strings.Contains(out, "read every path") {
		t.Errorf("no open-door warning for anonymous reading:\n%s", out)
	}
}

// TestAuthNodeUsersGuardAPIMetricsAndWatch configures users: the API and
// /metrics need them even from loopback (401, or 403 for a user without
// the permission), and /watch checks the viewer and keeps its signature.
func TestAuthNodeUsersGuardAPIMetricsAndWatch(t *testing.T) {
	key := "watch-signing-key-0123456789"
	n, logs := authNode(t, func(c *Config) {
		c.Auth.URLSigningKey = key
		c.Auth.InternalUsers = []auth.User{
			{User: "admin", Pass: "adm", Permissions: []auth.Permission{{Action: auth.ActionAPI}, {Action: auth.ActionMetrics}}},
			{User: "cam", Pass: "c", Permissions: []auth.Permission{{Action: auth.ActionPublish}}},
		}
	})
	base := "http://127.0.0.1:" + port(n.HTTPAddr())
	for _, c := range []struct {
		method, path, user, pass string
		want                     int
	}{
		{"GET", "/metrics", "", "", 401},
		{"GET", "/metrics", "admin", "bad", 401},
		{"GET", "/metrics", "cam", "c", 403},
		{"GET", "/metrics", "admin", "adm", 200},
		{"POST", "/api/v1/vod/record", "", "", 401},
		{"POST", "/api/v1/vod/record", "admin", "adm", 400},
		{"GET", "/", "", "", 401},
		{"GET", "/watch/live/cam1", "", "", 401},
		{"GET", "/live/cam1/index.m3u8", "", "", 401},
	} {
		resp := httpDo(t, c.method, base+c.path, c.user, c.pass)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s as %q: %d, want %d", c.method, c.path, c.user, resp.StatusCode, c.want)
		}
		if c.want == 401 && !strings.Contains(strings.Join(resp.Header.Values("WWW-Authenticate"), ","), "Basic") {
			t.Errorf("%s %s: 401 without a Basic challenge", c.method, c.path)
		}
	}
	// A signed link passes /watch's check (the stream is not live: 404).
	q := auth.SignQuery([]byte(key), "live/cam1", time.Now().Add(time.Minute))
	if got := httpDo(t, "GET", base+"/watch/live/cam1?"+q, "", "").StatusCode; got != 404 {
		t.Errorf("/watch with a signed link: %d, want 404 (let in, not live)", got)
	}
	resp, err := (&http.Client{}).Do(func() *http.Request {
		r, _ := http.NewRequest("GET", base+"/metrics", nil)
		r.SetBasicAuth("admin", "adm")
		return r
	}())
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `gradient_auth_refusals_total{action="metrics",protocol="http",reason="bad_credentials"} 1`) ||
		!strings.Contains(string(metrics), `gradient_auth_refusals_total{action="metrics",protocol="http",reason="no_credentials"} 1`) {
		t.Errorf("refusal counters missing from /metrics:\n%s", metrics)
	}
	if c := strings.Count(logs.String(), "request refused"); c > 4 {
		t.Errorf("%d refusal lines from one client (≤ one per action a minute):\n%s", c, logs)
	}
	if strings.Contains(logs.String(), "open door") {
		t.Errorf("open-door warning with no anonymous permission:\n%s", logs)
	}
}

// TestAuthNodeRelayUsersStillRead: with a cluster secret, a relay user reads
// over RTSP as the overlay's relays do (user gradient.<node>, the password
// derived from the cluster secret), with Digest and, when a hashed
// password makes the node challenge with Basic, with Basic. The secret
// decides for relay users only: anonymous RTSP readers read when the auth
// section lets anybody read (the default), and are asked for credentials
// when it does not.
func TestAuthNodeRelayUsersStillRead(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	for _, mode := range []string{"open", "closed", "closed-basic"} {
		t.Run(mode, func(t *testing.T) {
			n, _ := authNode(t, func(c *Config) {
				c.Overlay.Secret = "relay-secret-0123456789"
				switch mode {
				case "closed":
					c.Auth.InternalUsers = []auth.User{
						{User: "cam", Pass: "x", Permissions: []auth.Permission{{Action: auth.ActionPublish}}},
					}
				case "closed-basic":
					c.Auth.InternalUsers = []auth.User{
						{User: "cam", Pass: "sha256:" + base64.StdEncoding.EncodeToString(sum[:]), Permissions: []auth.Permission{{Action: auth.ActionPublish}}},
					}
				}
			})
			clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 3})
			stop := testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
			defer stop()
			addr := "127.0.0.1:" + port(n.RTSP.Addr().String())
			opts := testutil.RTSPPlayOptions{Transport: gortsplib.TransportTCP, ReadTimeout: 5 * time.Second}
			anon, err := testutil.RTSPPlay(t, "rtsp://"+addr+"/live/cam1", opts)
			if mode == "open" {
				if err != nil {
					t.Fatalf("anonymous RTSP reader with a cluster secret and reading open: %v, want it to read", err)
				}
				anon.WaitFrames(t, 5, 320, 240, 10*time.Second)
				anon.Close()
				return
			}
			var bad liberrors.ErrClientBadStatusCode
			if !errors.As(err, &bad) || bad.Code != base.StatusUnauthorized {
				t.Fatalf("anonymous RTSP reader with reading closed: %v, want 401", err)
			}
			user := overlay.RelayUser + ".peer"
			pass := overlay.RelayPassword("relay-secret-0123456789", user, "live/cam1")
			if _, err := testutil.RTSPPlay(t, "rtsp://"+user+":wrong@"+addr+"/live/cam1", opts); err == nil {
				t.Fatal("relay user with a wrong password read")
			}
			p, err := testutil.RTSPPlay(t, "rtsp://"+user+":"+pass+"@"+addr+"/live/cam1", opts)
			if err != nil {
				t.Fatalf("relay user: %v", err)
			}
			p.WaitFrames(t, 5, 320, 240, 10*time.Second)
			p.Close()
		})
	}
}

// TestAuthREADMEMultiNodeExampleLoads loads the README's secure multi-node
// auth example, so that its keys stay real.
func TestAuthREADMEMultiNodeExampleLoads(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "A secure multi-node setup")
	if i < 0 {
		t.Fatal("README has no secure multi-node auth example")
	}
	s = s[i:]
	s = s[strings.Index(s, "```yaml\n")+len("```yaml\n"):]
	s = s[:strings.Index(s, "```")]
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	s = strings.ReplaceAll(s, "<32 random bytes, base64>", key)
	s = strings.ReplaceAll(s, "<long random password>", "pw")
	// The example's TLS files: a self-signed certificate stands for them.
	crt, crtKey := readmeTestCert(t)
	s = strings.NewReplacer("/etc/gradient/tls.crt", crt, "/etc/gradient/tls.key", crtKey, "/etc/gradient/cluster-ca.crt", crt).Replace(s)
	f := t.TempDir() + "/node.yaml"
	if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(f)
	if err != nil {
		t.Fatalf("README example: %v\n%s", err, s)
	}
	a, err := auth.New(cfg.Auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.OpenDoors()) != 0 || a.NeedsClearPassword() {
		t.Errorf("README example: open doors %q, clear passwords %v; want none", a.OpenDoors(), a.NeedsClearPassword())
	}
	if red := cfg.Redacted(); red.Auth.URLSigningKey != "<redacted>" || red.Auth.InternalUsers[0].Pass != "<redacted>" || cfg.Auth.InternalUsers[0].Pass != "pw" {
		t.Errorf("Redacted: signing key %q, pass %q (original %q)", red.Auth.URLSigningKey, red.Auth.InternalUsers[0].Pass, cfg.Auth.InternalUsers[0].Pass)
	}
}

// TestAuthNodeSignedLinkPlaysHLSThroughWatch follows a signed /watch link
// as a player does: the redirect, the player page, the multivariant
// playlist, the media playlist and a segment all carry the signature and
// are served; the same URLs without it are refused.
func TestAuthNodeSignedLinkPlaysHLSThroughWatch(t *testing.T) {
	key := "hls-signing-key-0123456789"
	n, _ := authNode(t, func(c *Config) {
		c.Auth.URLSigningKey = key
		c.Auth.InternalUsers = []auth.User{{User: "cam", Pass: "c", Permissions: []auth.Permission{{Action: auth.ActionPublish}}}}
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 3})
	stop := testutil.PublishFile(t, n.Hub, "live/cam1", clip, false)
	defer stop()
	base := "http://127.0.0.1:" + port(n.HTTPAddr())
	q := auth.SignQuery([]byte(key), "live/cam1", time.Now().Add(time.Hour))
	noFollow := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) (int, string, http.Header) {
		t.Helper()
		resp, err := noFollow.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, _, h := get(base + "/watch/live/cam1?" + q)
	loc := h.Get("Location")
	if code != http.StatusFound || !strings.Contains(loc, "sig=") || !strings.Contains(loc, "exp=") {
		t.Fatalf("/watch: %d to %q, want a redirect keeping exp and sig", code, loc)
	}
	if code, _, _ := get(base + loc); code != 200 {
		t.Fatalf("player page %s: %d", loc, code)
	}
	code, master, _ := get(base + "/live/cam1/index.m3u8?" + q)
	if code != 200 {
		t.Fatalf("signed index.m3u8: %d %s", code, master)
	}
	var media string
	for _, l := range strings.Split(master, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			media = l
			break
		}
	}
	if !strings.Contains(media, "sig=") {
		t.Fatalf("multivariant playlist lists %q without the signature:\n%s", media, master)
	}
	code, pl, _ := get(base + "/live/cam1/" + media)
	if code != 200 {
		t.Fatalf("media playlist %s: %d", media, code)
	}
	var seg string
	for _, l := range strings.Split(pl, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			seg = l
		}
		if i := strings.Index(l, `URI="`); i >= 0 && seg == "" && strings.HasPrefix(l, "#EXT-X-MAP") {
			seg = l[i+5 : strings.Index(l[i+5:], `"`)+i+5]
		}
	}
	if !strings.Contains(seg, "sig=") {
		t.Fatalf("media playlist lists %q without the signature:\n%s", seg, pl)
	}
	if code, _, _ := get(base + "/live/cam1/" + seg); code != 200 {
		t.Errorf("segment %s: %d", seg, code)
	}
	bare, _, _ := strings.Cut(seg, "?")
	if code, _, _ := get(base + "/live/cam1/" + bare); code != 401 {
		t.Errorf("segment without the signature: %d, want 401", code)
	}
}

// TestAuthNodeSRTPublishNeedsCredentialsBeyondLoopback dials the node's
// SRT port with gosrt: from the host's network address without
// credentials the handshake is rejected REJX_UNAUTHORIZED, with a
// configured user's stream-id credentials it is accepted, and from
// loopback the default lets a bare stream id in.
func TestAuthNodeSRTPublishNeedsCredentialsBeyondLoopback(t *testing.T) {
	ip := nonLoopbackIP()
	if ip == "" {
		t.Skip("no non-loopback address on this host")
	}
	n, _ := authNode(t, func(c *Config) {
		c.SRT.Addr = fmt.Sprintf("0.0.0.0:%d", testutil.FreePort(t, "udp"))
		c.Auth.InternalUsers = append(auth.DefaultUsers(), auth.User{User: "cam", Pass: "c",
			Permissions: []auth.Permission{{Action: auth.ActionPublish, Path: "live/*"}}})
	})
	sp := port(n.SRT.Addr().String())
	dial := func(host, sid string) error {
		conf := srt.DefaultConfig()
		conf.StreamId = sid
		conf.ConnectionTimeout = 5 * time.Second
		c, err := srt.Dial("srt", host+":"+sp, conf)
		if err == nil {
			c.Close()
		}
		return err
	}
	unauthorized := "REJECT (" + strconv.FormatUint(uint64(srt.REJX_UNAUTHORIZED), 32) + ")"
	if err := dial(ip, "publish:live/a"); err == nil || !strings.Contains(err.Error(), unauthorized) {
		t.Errorf("SRT from %s without credentials: %v, want %s", ip, err, unauthorized)
	}
	if err := dial(ip, "#!::r=live/b,m=publish,u=cam,s=c"); err != nil {
		t.Errorf("SRT from %s with credentials: %v", ip, err)
	}
	if err := dial("127.0.0.1", "publish:live/c"); err != nil {
		t.Errorf("SRT from loopback without credentials: %v", err)
	}
}

func TestAuthNodeConfigNamesTheAuthKey(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Auth.Method = "ldap" }, "auth.method"},
		{func(c *Config) { c.Auth.URLSigningKey = "short" }, "auth.url_signing_key"},
		{func(c *Config) { c.Auth.InternalUsers = []auth.User{{User: "x"}} }, "auth.internal_users[0]: pass"},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error naming %s", err, c.want)
		}
	}
	// A hand-built config without an auth section is the default.
	cfg := DefaultConfig()
	cfg.Auth = auth.Config{}
	if err := cfg.Validate(); err != nil {
		t.Errorf("empty auth section: %v", err)
	}
}

// readmeTestCert writes a self-signed certificate and its key.
func readmeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = dir+"/tls.crt", dir+"/tls.key"
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}
