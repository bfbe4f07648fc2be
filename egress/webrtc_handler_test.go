package egress_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// sessionEvents is a WebRTC handler that records the session hooks.
type sessionEvents struct {
	mu     sync.Mutex
	opens  []egress.SessionOpenCtx
	closes []egress.SessionCloseCtx
	closed chan egress.SessionCloseCtx
}

func newSessionEvents() *sessionEvents {
	return &sessionEvents{closed: make(chan egress.SessionCloseCtx, 16)}
}

func (e *sessionEvents) OnSessionOpen(c *egress.SessionOpenCtx) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opens = append(e.opens, *c)
}

func (e *sessionEvents) OnSessionClose(c *egress.SessionCloseCtx) {
	e.mu.Lock()
	e.closes = append(e.closes, *c)
	e.mu.Unlock()
	e.closed <- *c
}

func (e *sessionEvents) opened() []egress.SessionOpenCtx {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]egress.SessionOpenCtx(nil), e.opens...)
}

// waitClose returns the next session close, failing the test after d.
func (e *sessionEvents) waitClose(t *testing.T, d time.Duration, what string) egress.SessionCloseCtx {
	t.Helper()
	select {
	case c := <-e.closed:
		return c
	case <-time.After(d):
		t.Fatalf("no OnSessionClose within %v after %s", d, what)
		return egress.SessionCloseCtx{}
	}
}

// sessionID is the last element of a WHEP session's Location.
func sessionID(s *testutil.WHEPSession) string {
	r := s.Resource()
	return r[strings.LastIndex(r, "/")+1:]
}

func TestWHEPSessionHooksSeeOpenWithDeviceAndCloseOnDelete(t *testing.T) {
	ev := newSessionEvents()
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) { c.Handler = ev }))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/cam1", clip, false)

	s := dial(t, env.url("live/cam1")+"?device=tv&viewer=abcdefgh", testutil.WHEPOptions{})
	id := sessionID(s)
	// The hook ran before the 201: no polling needed.
	opens := ev.opened()
	if len(opens) != 1 {
		t.Fatalf("%d OnSessionOpen calls after one 201, want 1", len(opens))
	}
	o := opens[0]
	if o.ID != id || o.Path != "live/cam1" || o.Device != "tv" || o.Query.Get("viewer") != "abcdefgh" {
		t.Fatalf("OnSessionOpen got %+v, want id %s, path live/cam1, device tv, query viewer=abcdefgh", o, id)
	}
	waitAUs(t, s, 5, "the session plays")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if code, err := s.Delete(ctx); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	c := ev.waitClose(t, 10*time.Second, "DELETE")
	if c.ID != id || c.Path != "live/cam1" || c.Device != "tv" || c.Err != nil {
		t.Fatalf("OnSessionClose after DELETE got %+v, want id %s, path live/cam1, device tv, no error", c, id)
	}
}

func TestWHEPSessionHookSeesCloseOfViewerThatVanishes(t *testing.T) {
	ev := newSessionEvents()
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) {
		c.Handler = ev
		c.SessionTimeout = 2 * time.Second // ICE: disconnected after 1 s, failed 1 s later
	}))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/cam1", clip, false)

	s := dial(t, env.url("live/cam1"), testutil.WHEPOptions{})
	waitAUs(t, s, 5, "the session plays")
	// The viewer goes silent: its ICE agent stops, no DELETE, no DTLS
	// close alert reaches the node.
	if err := s.PeerConnection().SCTP().Transport().ICETransport().Stop(); err != nil {
		t.Fatal(err)
	}
	c := ev.waitClose(t, 20*time.Second, "the viewer vanished")
	if c.ID != sessionID(s) || !errors.Is(c.Err, egress.ErrSessionConnectionLost) {
		t.Fatalf("OnSessionClose got %+v, want session %s ended by ErrSessionConnectionLost", c, sessionID(s))
	}
}

func TestWHEPSessionHookSeesCloseOfEgressAndOfNeverConnectedSession(t *testing.T) {
	ev := newSessionEvents()
	env := newWHEPEnv(t, webrtcConfig(func(c *egress.WebRTCConfig) {
		c.Handler = ev
		c.SessionTimeout = time.Second
	}))
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 2})
	testutil.PublishFile(t, env.hub, "live/cam1", clip, false)

	// An offer whose answer is never applied: ICE never completes.
	ghost := dial(t, env.url("live/cam1"), testutil.WHEPOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offer := ghost.PeerConnection().LocalDescription().SDP
	code, body, err := testutil.PostWHEP(ctx, env.url("live/cam1"), "application/sdp", []byte(strings.Replace(offer, "a=ice-ufrag:", "a=ice-ufrag:x", 1)))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("POST offer: %d %v %s", code, err, body)
	}
	waitAUs(t, ghost, 5, "the connected session plays")
	c := ev.waitClose(t, 10*time.Second, "the session timeout")
	if !errors.Is(c.Err, egress.ErrSessionNotConnected) {
		t.Fatalf("OnSessionClose got %+v, want ErrSessionNotConnected", c)
	}

	if err := env.w.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waits for the hooks of the sessions it ends.
	select {
	case c := <-ev.closed:
		if c.ID != sessionID(ghost) || !errors.Is(c.Err, egress.ErrWebRTCClosed) {
			t.Fatalf("OnSessionClose at Close got %+v, want session %s ended by ErrWebRTCClosed", c, sessionID(ghost))
		}
	default:
		t.Fatal("Close returned before OnSessionClose of its open session")
	}
	ev.mu.Lock()
	n := len(ev.closes)
	ev.mu.Unlock()
	if o := len(ev.opened()); o != 2 || n != 2 {
		t.Fatalf("%d opens and %d closes, want 2 of each", o, n)
	}
}
