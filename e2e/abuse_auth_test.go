package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	srt "github.com/datarhei/gosrt"
	"github.com/golang-jwt/jwt/v5"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// authCase is one auth method's node and the credentials it takes: user
// and pass for each action (a JWT method puts its token in pass).
type authCase struct {
	name                 string
	section              string
	pubUser, pubPass     string
	readUser, readPass   string
	wrongUser, wrongPass string
	apiHeader            string // Authorization for the node's API (n.live)
}

// headerTransport adds an Authorization header to every request.
type headerTransport struct{ h string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", h.h)
	return http.DefaultTransport.RoundTrip(r)
}

// TestAbuseAuthEveryMethodOnEveryProtocol: for the internal, http (a real
// HTTP backend in the test) and jwt methods, a node process lets the right
// credentials publish over RTSP (ffmpeg), SRT (gosrt) and RTMP (ffmpeg) and
// read over HLS and WHEP, and refuses wrong ones with each protocol's own
// answer: RTSP 401, SRT reject 1401, RTMP NetStream.Publish.Unauthorized
// (ffmpeg fails), HTTP 401; the refusals of one client are logged once per
// action.
func TestAbuseAuthEveryMethodOnEveryProtocol(t *testing.T) {
	// The http method's backend.
	backend := http.NewServeMux()
	var backendCalls atomic.Int64
	backend.HandleFunc("POST /auth", func(w http.ResponseWriter, r *http.Request) {
		backendCalls.Add(1)
		var q struct{ User, Pass, Token, IP, Action, Path, Protocol string }
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			http.Error(w, "bad body", 400)
			return
		}
		switch {
		case q.Action == "publish" && q.User == "cam" && q.Pass == "secret",
			q.Action == "read" && q.User == "viewer" && q.Pass == "vpass",
			(q.Action == "api" || q.Action == "metrics") && q.User == "ops" && q.Pass == "opspw":
			w.WriteHeader(200)
		default:
			w.WriteHeader(401)
		}
	})
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bsrv := &http.Server{Handler: backend}
	go bsrv.Serve(bl)
	defer bsrv.Close()

	jwtKey := "0123456789abcdef0123456789abcdef-jwt"
	token := func(key, action string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"exp":                  time.Now().Add(time.Hour).Unix(),
			"gradient_permissions": []map[string]string{{"action": action, "path": "live/*"}, {"action": "api"}},
		})
		s, err := tok.SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	basic := func(u, p string) string {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		r.SetBasicAuth(u, p)
		return r.Header.Get("Authorization")
	}
	cases := []authCase{
		{name: "internal", section: `
  method: internal
  internal_users:
    - {user: cam, pass: secret, permissions: [{action: publish, path: "live/*"}]}
    - {user: viewer, pass: vpass, permissions: [{action: read}]}
    - {user: ops, pass: opspw, permissions: [{action: api}]}`,
			pubUser: "cam", pubPass: "secret", readUser: "viewer", readPass: "vpass", wrongUser: "cam", wrongPass: "Wr0ngPa55",
			apiHeader: basic("ops", "opspw")},
		{name: "http", section: `
  method: http
  http_address: "http://` + bl.Addr().String() + `/auth"
  http_cache_ttl: -1s`,
			pubUser: "cam", pubPass: "secret", readUser: "viewer", readPass: "vpass", wrongUser: "cam", wrongPass: "Wr0ngPa55",
			apiHeader: basic("ops", "opspw")},
		{name: "jwt", section: `
  method: jwt
  jwt_key: "` + jwtKey + `"`,
			pubUser: "jwt", pubPass: token(jwtKey, "publish"), readUser: "jwt", readPass: token(jwtKey, "read"),
			wrongUser: "jwt", wrongPass: token("another key of at least 32 bytes!!", "publish"),
			apiHeader: "Bearer " + token(jwtKey, "api")},
	}
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := startAbuseNode(t, map[string]string{"auth": c.section})
			n.client = &http.Client{Timeout: 30 * time.Second, Transport: headerTransport{c.apiHeader}}
			n.waitHealthy(t)
			creds := func(u, p string) string { return url.UserPassword(u, p).String() + "@" }

			// RTSP: wrong refused 401, right publishes.
			var bad *testutil.Process
			if c.name == "jwt" {
				// ffmpeg cuts RTSP credentials at 127 bytes, shorter than
				// a JWT: the token goes in a Basic header of a raw ANNOUNCE.
				for i, w := range []struct {
					pass, want string
				}{{c.wrongPass, " 401 "}, {c.wrongPass, " 401 "}, {c.pubPass, " 200 "}} {
					a, err := net.Dial("tcp", n.rtsp)
					if err != nil {
						t.Fatal(err)
					}
					st := rtspAnnounceAuth(t, a, bufio.NewReader(a), n.rtsp, "live/rtsp", basic(c.pubUser, w.pass))
					a.Close()
					if !strings.Contains(st, w.want) {
						t.Fatalf("RTSP ANNOUNCE %d with a JWT: %q, want%s", i, st, w.want)
					}
				}
			}
			for i := 0; i < 2 && c.name != "jwt"; i++ { // twice: the second refusal is not logged again
				bad = testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://"+creds(c.wrongUser, c.wrongPass)+n.rtsp+"/live/rtsp", "-rtsp_transport", "tcp")
				if err := bad.Wait(t, 20*time.Second); err == nil || !strings.Contains(bad.Output(), "401") {
					t.Fatalf("RTSP publish with wrong credentials: %v, want ffmpeg to fail with 401:\n%s", err, bad.Output())
				}
			}
			if c.name != "jwt" {
				testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://"+creds(c.pubUser, c.pubPass)+n.rtsp+"/live/rtsp", "-rtsp_transport", "tcp")
				n.waitLive(t, "live/rtsp")
			}

			// SRT: wrong refused 1401, right connects.
			srtDial := func(user, pass string) (srt.Conn, error) {
				conf := srt.DefaultConfig()
				conf.StreamId = "publish:live/srt:" + user + ":" + pass
				conf.ConnectionTimeout = 5 * time.Second
				return srt.Dial("srt", n.srt, conf)
			}
			for i := 0; i < 2; i++ {
				if conn, err := srtDial(c.wrongUser, c.wrongPass); err == nil {
					conn.Close()
					t.Fatal("SRT publish with wrong credentials connected")
				} else if want := "REJECT (" + strconv.FormatUint(uint64(srt.REJX_UNAUTHORIZED), 32) + ")"; !strings.Contains(err.Error(), want) {
					t.Fatalf("SRT publish with wrong credentials: %v, want %s (1401)", err, want)
				}
			}
			conn, err := srtDial(c.pubUser, c.pubPass)
			if err != nil {
				t.Fatalf("SRT publish with the right credentials: %v", err)
			}
			defer conn.Close()
			testutil.Eventually(t, 10*time.Second, "SRT publisher connected", func() bool {
				return n.logCount("srt publisher connected") > 0
			})

			// RTMP: wrong refused (NetStream.Publish.Unauthorized), right publishes.
			q := func(u, p string) string {
				if c.name == "jwt" {
					return "?token=" + url.QueryEscape(p)
				}
				return "?user=" + url.QueryEscape(u) + "&pass=" + url.QueryEscape(p)
			}
			for i := 0; i < 2; i++ {
				bad = testutil.FFmpegPublish(t, clip, "flv", "rtmp://"+n.rtmp+"/live", "-rtmp_app", "live", "-rtmp_playpath", "rtmp"+q(c.wrongUser, c.wrongPass))
				if err := bad.Wait(t, 20*time.Second); err == nil {
					t.Fatalf("RTMP publish with wrong credentials did not fail:\n%s", bad.Output())
				}
			}
			t.Logf("ffmpeg's RTMP refusal: %s", tailString(strings.TrimSpace(bad.Output()), 300))
			if n.live(t, "live/rtmp") {
				t.Fatal("a refused RTMP publisher's stream is live")
			}
			if got := n.logCount("code=NetStream.Publish.Unauthorized"); got != 1 {
				t.Errorf("%d RTMP NetStream.Publish.Unauthorized log lines for two refusals, want 1", got)
			}
			if got := n.logCount(`msg="srt publish rejected"`); got != 0 {
				t.Errorf("%d SRT rejection lines besides the authorizer's, want 0", got)
			}
			testutil.FFmpegPublish(t, clip, "flv", "rtmp://"+n.rtmp+"/live", "-rtmp_app", "live", "-rtmp_playpath", "rtmp"+q(c.pubUser, c.pubPass))
			n.waitLive(t, "live/rtmp")

			// HLS and WHEP reads.
			read := func(u, p string) string {
				if c.name == "jwt" {
					return "?token=" + url.QueryEscape(p)
				}
				return "?user=" + url.QueryEscape(u) + "&pass=" + url.QueryEscape(p)
			}
			for _, w := range []struct {
				q    string
				want int
			}{{"", 401}, {read(c.wrongUser, c.wrongPass), 401}, {read(c.readUser, c.readPass), 200}} {
				r, err := http.Get(n.url("live/rtmp/index.m3u8" + w.q))
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != w.want {
					t.Fatalf("HLS read %q: %s, want %d", w.q, r.Status, w.want)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := testutil.DialWHEP(ctx, n.url("live/rtmp/whep"+read(c.wrongUser, c.wrongPass)), testutil.WHEPOptions{Loopback: true}); err == nil ||
				!strings.Contains(err.Error(), "HTTP 401") {
				t.Fatalf("WHEP with wrong credentials: %v, want HTTP 401", err)
			}
			aus := make(chan struct{}, 100)
			sess, err := testutil.DialWHEP(ctx, n.url("live/rtmp/whep"+read(c.readUser, c.readPass)), testutil.WHEPOptions{Loopback: true,
				OnAU: func(testutil.WHEPAccessUnit) {
					select {
					case aus <- struct{}{}:
					default:
					}
				}})
			if err != nil {
				t.Fatalf("WHEP with the right credentials: %v", err)
			}
			defer sess.Close()
			for i := 0; i < 10; i++ {
				select {
				case <-aus:
				case <-ctx.Done():
					t.Fatalf("WHEP with the right credentials: %d access units, want 10", i)
				}
			}

			// Refusals: many, logged once per action for this client.
			for _, action := range []string{"publish", "read"} {
				got := 0
				for _, l := range strings.Split(n.proc.Output(), "\n") {
					if strings.Contains(l, `msg="request refused"`) && strings.Contains(l, " action="+action+" ") {
						got++
					}
				}
				if got != 1 {
					t.Errorf("%d 'request refused' lines for action %s, want 1 (once a minute per client):\n%s", got, action, n.proc.Output())
				}
			}
			if strings.Contains(n.proc.Output(), c.wrongPass) {
				t.Error("a wrong password or token is in the node's log")
			}
		})
	}
	t.Logf("http backend calls: %d", backendCalls.Load())
}
