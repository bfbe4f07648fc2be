package ingest

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	srt "github.com/datarhei/gosrt"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// srtRejectText is how gosrt's Dial names a rejection code in its error.
func srtRejectText(code srt.RejectionReason) string {
	return "REJECT (" + strconv.FormatUint(uint64(code), 32) + ")"
}

// TestAuthSRTStreamIDCredentials publishes with gosrt and credentials in
// both stream id forms: the right ones publish, missing and wrong ones get
// REJX_UNAUTHORIZED, a path the user may not publish REJX_FORBIDDEN, and
// the refusals of one client are logged once (without the password).
func TestAuthSRTStreamIDCredentials(t *testing.T) {
	alogs := &testutil.LogBuffer{}
	a, err := auth.New(auth.Config{InternalUsers: []auth.User{
		{User: "cam", Pass: "se:cret", Permissions: []auth.Permission{{Action: auth.ActionPublish, Path: "live/*"}}},
	}}, slog.New(slog.NewTextHandler(alogs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	env := newSRTTestEnv(t, SRTConfig{Authorize: a.Authorize})
	for _, c := range []struct {
		sid  string
		code srt.RejectionReason
	}{
		{"publish:live/a", srt.REJX_UNAUTHORIZED},
		{"publish:live/a:cam:wrong", srt.REJX_UNAUTHORIZED},
		{"#!::r=live/a,m=publish,u=cam,s=wrong", srt.REJX_UNAUTHORIZED},
		{"publish:other/a:cam:se:cret", srt.REJX_FORBIDDEN},
	} {
		conn, err := srtDial(env.addr(), c.sid, "")
		if err == nil {
			conn.Close()
			t.Fatalf("stream id %q accepted", c.sid)
		}
		if !strings.Contains(err.Error(), srtRejectText(c.code)) {
			t.Fatalf("stream id %q: %v, want %s (%d)", c.sid, err, srtRejectText(c.code), c.code)
		}
	}
	for _, c := range []struct{ sid, path string }{
		{"publish:live/colon:cam:se:cret", "live/colon"},
		{"#!::r=live/acl,m=publish,u=cam,s=se:cret", "live/acl"},
	} {
		conn, err := srtDial(env.addr(), c.sid, "")
		if err != nil {
			t.Fatalf("stream id %q refused: %v", c.sid, err)
		}
		defer conn.Close()
		testutil.Eventually(t, 5*time.Second, "connect log for "+c.path, func() bool {
			return env.logs.has("srt publisher connected", "stream="+c.path)
		})
	}
	logs := alogs.String()
	if n := strings.Count(logs, "request refused"); n != 1 {
		t.Errorf("%d refusal lines for one client within a minute, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs+env.logs.String(), "wrong") {
		t.Errorf("a password was logged:\n%s\n%s", logs, env.logs)
	}
}

func TestAuthSRTCredentialsLeaveTheStreamIDParseable(t *testing.T) {
	for _, c := range []struct{ sid, rest, user, pass string }{
		{"publish:live/a:u:p:q", "publish:live/a", "u", "p:q"},
		{"publish:live/a:u", "publish:live/a", "u", ""},
		{"publish:live/a", "publish:live/a", "", ""},
		{"#!::r=live/a,u=x,m=publish,s=y", "#!::r=live/a,m=publish", "x", "y"},
		{"#!::r=live/a,u=x,u=z,m=publish", "#!::r=live/a,u=z,m=publish", "x", ""},
		{"live/a", "live/a", "", ""},
	} {
		rest, user, pass := srtCredentials(c.sid)
		if rest != c.rest || user != c.user || pass != c.pass {
			t.Errorf("srtCredentials(%q) = %q %q %q, want %q %q %q", c.sid, rest, user, pass, c.rest, c.user, c.pass)
		}
	}
}
