package vod

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func peerRequest(t *testing.T, path string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, "http://node-b:8081"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPeerAuthSignVerify(t *testing.T) {
	const secret = "cluster secret"
	path := "/internal/vod/chunks/" + digestOf("x").String()
	now := time.Now()

	t.Run("good", func(t *testing.T) {
		r := peerRequest(t, path+"?fill=1&origin=node-a")
		SignPeerRequest(r, secret, "node-c")
		h := r.Header.Get("Authorization")
		if !strings.HasPrefix(h, "Gradient-Peer node=node-c,ts=") || !strings.Contains(h, ",sig=") {
			t.Fatalf("Authorization = %q", h)
		}
		if strings.Contains(h, secret) {
			t.Fatalf("the secret is in the header: %q", h)
		}
		node, err := VerifyPeerRequest(r, secret, now)
		if err != nil || node != "node-c" {
			t.Fatalf("Verify = %q, %v", node, err)
		}
		// Within the skew either way.
		for _, off := range []time.Duration{-55 * time.Second, 55 * time.Second} {
			if _, err := VerifyPeerRequest(r, secret, now.Add(off)); err != nil {
				t.Fatalf("at %s: %v", off, err)
			}
		}
	})
	refused := func(t *testing.T, r *http.Request, secret string, now time.Time, want string) {
		t.Helper()
		_, err := VerifyPeerRequest(r, secret, now)
		if !errors.Is(err, ErrPeerAuth) {
			t.Fatalf("Verify err = %v, want ErrPeerAuth", err)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Verify err = %q, want it to say %q", err, want)
		}
	}
	t.Run("wrong secret", func(t *testing.T) {
		r := peerRequest(t, path)
		SignPeerRequest(r, "another secret", "node-c")
		refused(t, r, secret, now, "signature does not match")
	})
	t.Run("tampered path", func(t *testing.T) {
		r := peerRequest(t, path)
		SignPeerRequest(r, secret, "node-c")
		r.URL.Path = "/internal/vod/chunks/" + digestOf("y").String()
		refused(t, r, secret, now, "signature does not match")
	})
	t.Run("tampered node", func(t *testing.T) {
		r := peerRequest(t, path)
		SignPeerRequest(r, secret, "node-c")
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "node=node-c", "node=node-d", 1))
		refused(t, r, secret, now, "signature does not match")
	})
	t.Run("tampered method", func(t *testing.T) {
		r := peerRequest(t, path)
		SignPeerRequest(r, secret, "node-c")
		r.Method = http.MethodDelete
		refused(t, r, secret, now, "signature does not match")
	})
	t.Run("stale", func(t *testing.T) {
		r := peerRequest(t, path)
		SignPeerRequest(r, secret, "node-c")
		refused(t, r, secret, now.Add(2*time.Minute), "timestamp")
		refused(t, r, secret, now.Add(-2*time.Minute), "timestamp")
	})
	t.Run("missing header", func(t *testing.T) {
		refused(t, peerRequest(t, path), secret, now, "no Authorization header")
	})
	t.Run("malformed", func(t *testing.T) {
		for _, h := range []string{"Basic dXNlcjpwYXNz", "Gradient-Peer node=c", "Gradient-Peer node=c,ts=1,sig", "Gradient-Peer node=c,ts=x,sig=00"} {
			r := peerRequest(t, path)
			r.Header.Set("Authorization", h)
			if _, err := VerifyPeerRequest(r, secret, now); !errors.Is(err, ErrPeerAuth) {
				t.Fatalf("%q: err = %v", h, err)
			}
		}
	})
	t.Run("empty secret is open", func(t *testing.T) {
		r := peerRequest(t, path)
		SignPeerRequest(r, "", "node-c")
		if h := r.Header.Get("Authorization"); h != "" {
			t.Fatalf("signed with no secret: %q", h)
		}
		if _, err := VerifyPeerRequest(r, "", now); err != nil {
			t.Fatalf("open cluster refused: %v", err)
		}
	})
}
