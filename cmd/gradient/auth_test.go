package main

import (
	"bytes"
	"io"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/auth"
)

// TestAuthCmdHashAndSignAreWhatTheNodeAccepts hashes a password and signs
// a link with the command and checks them with the node's authorizer.
func TestAuthCmdHashAndSignAreWhatTheNodeAccepts(t *testing.T) {
	for _, flags := range [][]string{{"hash"}, {"hash", "--argon2"}} {
		var out bytes.Buffer
		if err := authCmd(flags, strings.NewReader("s3cret\n"), &out, io.Discard, time.Now()); err != nil {
			t.Fatal(err)
		}
		a, err := auth.New(auth.Config{InternalUsers: []auth.User{{User: "u", Pass: strings.TrimSpace(out.String()),
			Permissions: []auth.Permission{{Action: auth.ActionPublish}}}}}, nil)
		if err != nil {
			t.Fatalf("%v: %q: %v", flags, out.String(), err)
		}
		r := auth.Request{Action: auth.ActionPublish, Path: "live/x", IP: netip.MustParseAddr("10.0.0.1"), User: "u", Pass: "s3cret"}
		if err := a.Authorize(r); err != nil {
			t.Errorf("%v: the hashed password does not check: %v", flags, err)
		}
	}
	key := "0123456789abcdef0123"
	var out bytes.Buffer
	if err := authCmd([]string{"sign", "--key", key, "--path", "live/cam1", "--ttl", "1m"}, nil, &out, io.Discard, time.Now()); err != nil {
		t.Fatal(err)
	}
	q, _ := url.ParseQuery(strings.TrimSpace(out.String()))
	a, _ := auth.New(auth.Config{URLSigningKey: key, InternalUsers: []auth.User{{User: "x", Pass: "y"}}}, nil)
	if err := a.Authorize(auth.Request{Action: auth.ActionRead, Path: "live/cam1", Query: q}); err != nil {
		t.Errorf("signed %q refused: %v", out.String(), err)
	}
}
