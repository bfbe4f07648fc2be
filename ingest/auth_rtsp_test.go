package ingest_test

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// newTestAuthorizer builds an Authorizer logging into its own buffer.
func newTestAuthorizer(t *testing.T, cfg auth.Config) (*auth.Authorizer, *testutil.LogBuffer) {
	t.Helper()
	logs := &testutil.LogBuffer{}
	a, err := auth.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a, logs
}

// TestAuthRTSPDigestPublishAndRead publishes with ffmpeg over RTSP Digest:
// no credentials and wrong ones get 401, a path the user may not publish
// 403, the right ones publish; readers need the read permission.
func TestAuthRTSPDigestPublishAndRead(t *testing.T) {
	a, alogs := newTestAuthorizer(t, auth.Config{InternalUsers: []auth.User{
		{User: "cam", Pass: "secret", Permissions: []auth.Permission{{Action: auth.ActionPublish, Path: "live/*"}}},
		{User: "viewer", Pass: "v", Permissions: []auth.Permission{{Action: auth.ActionRead}}},
	}})
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true, Authorize: a.Authorize})
	clip := rtspShortGOPClip(t)

	anon := testutil.FFmpegPublish(t, clip, "rtsp", n.url("live/a"), "-rtsp_transport", "tcp")
	anon.Wait(t, 15*time.Second)
	if !strings.Contains(anon.Output(), "401") {
		t.Fatalf("anonymous publisher not refused with 401:\n%s", anon.Output())
	}
	wrong := testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://cam:nope@"+n.addr+"/live/a", "-rtsp_transport", "tcp")
	wrong.Wait(t, 15*time.Second)
	if !strings.Contains(wrong.Output(), "401") {
		t.Fatalf("wrong password not refused with 401:\n%s", wrong.Output())
	}
	other := testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://cam:secret@"+n.addr+"/other/a", "-rtsp_transport", "tcp")
	other.Wait(t, 15*time.Second)
	if !strings.Contains(other.Output(), "403") {
		t.Fatalf("publishing outside live/* not refused with 403:\n%s", other.Output())
	}
	testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://cam:secret@"+n.addr+"/live/a", "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/a")

	_, err := rtspPlay(t, n.url("live/a"))
	var bad liberrors.ErrClientBadStatusCode
	if !errors.As(err, &bad) || bad.Code != base.StatusUnauthorized {
		t.Fatalf("anonymous reader: %v, want 401", err)
	}
	_, err = rtspPlay(t, "rtsp://cam:secret@"+n.addr+"/live/a")
	if !errors.As(err, &bad) || bad.Code != base.StatusForbidden {
		t.Fatalf("publisher-only user reading: %v, want 403", err)
	}
	p, err := rtspPlay(t, "rtsp://viewer:v@"+n.addr+"/live/a")
	if err != nil {
		t.Fatalf("viewer: %v", err)
	}
	p.WaitFrames(t, 10, 320, 240, 10*time.Second)
	p.Close()

	// All refusals came from 127.0.0.1: one line per action a minute.
	logs := alogs.String()
	if c := strings.Count(logs, "request refused"); c != 2 {
		t.Errorf("%d refusal lines, want 2 (one publish, one read):\n%s", c, logs)
	}
}

// TestAuthRTSPBasicForHashedPasswords publishes with a hashed password,
// which only Basic can check.
func TestAuthRTSPBasicForHashedPasswords(t *testing.T) {
	sum := sha256.Sum256([]byte("hashed-secret"))
	a, _ := newTestAuthorizer(t, auth.Config{InternalUsers: []auth.User{
		{User: "cam", Pass: "sha256:" + base64.StdEncoding.EncodeToString(sum[:]), Permissions: []auth.Permission{{Action: auth.ActionPublish}}},
		{User: auth.AnyUser, Permissions: []auth.Permission{{Action: auth.ActionRead}}},
	}})
	n := startRTSPNode(t, ingest.RTSPConfig{DisableUDP: true, Authorize: a.Authorize, BasicAuth: true})
	clip := rtspShortGOPClip(t)
	wrong := testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://cam:hashed@"+n.addr+"/live/h", "-rtsp_transport", "tcp")
	wrong.Wait(t, 15*time.Second)
	if !strings.Contains(wrong.Output(), "401") {
		t.Fatalf("wrong password not refused with 401:\n%s", wrong.Output())
	}
	testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://cam:hashed-secret@"+n.addr+"/live/h", "-rtsp_transport", "tcp")
	n.waitPublished(t, "live/h")
	n.stillServes(t, "live/h") // "any" reads, without credentials
}
