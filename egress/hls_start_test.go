package egress_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// blockingRenditions is a RenditionProvider whose Ensure waits until the
// test closes release (or the caller gives up), like a serverlet that
// takes seconds to make its first frame.
type blockingRenditions struct {
	calls    atomic.Int32
	err      error         // the first Ensure's result, set before returned is closed
	entered  chan struct{} // closed by the first Ensure
	release  chan struct{} // closed by the test
	returned chan struct{} // closed when the first Ensure returns
}

func (b *blockingRenditions) Ensure(ctx context.Context, path string) (err error) {
	if b.calls.Add(1) == 1 {
		close(b.entered)
		defer func() {
			b.err = err
			close(b.returned)
		}()
	}
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newBlockingRenditions() *blockingRenditions {
	return &blockingRenditions{entered: make(chan struct{}), release: make(chan struct{}), returned: make(chan struct{})}
}

func TestHLSServesOtherStreamsWhileARenditionStarts(t *testing.T) {
	rp := newBlockingRenditions()
	hub := testutil.NewHub(t, media.HubConfig{Renditions: rp}, nil)
	clip := hlsClip(t)
	testutil.PublishFile(t, hub, "live/cam1", clip, false)
	testutil.PublishFile(t, hub, "live/cam2", clip, false)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{})

	type result struct {
		status int
		body   string
	}
	get := func(path string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			res, err := http.Get(srv.URL + "/" + path + "/index.m3u8")
			if err != nil {
				ch <- result{body: err.Error()}
				return
			}
			defer res.Body.Close()
			ch <- result{status: res.StatusCode}
		}()
		return ch
	}

	// Two first requests for a rendition that is not made yet.
	first := get("live/cam1@360p")
	<-rp.entered
	second := get("live/cam1@360p")

	// While they wait, a live stream is served.
	other := <-get("live/cam2")
	select {
	case <-rp.returned:
		t.Fatal("the request for live/cam2 was answered only after the rendition's start gave up: " +
			"the HLS egress held its lock while it waited for live/cam1@360p")
	default:
	}
	if other.status != http.StatusOK {
		t.Fatalf("live/cam2 while live/cam1@360p starts: status %d %s, want 200", other.status, other.body)
	}

	// The rendition comes: both waiting requests get it, from one muxer.
	testutil.PublishFile(t, hub, "live/cam1@360p", clip, false)
	close(rp.release)
	for i, ch := range []<-chan result{first, second} {
		if r := <-ch; r.status != http.StatusOK {
			t.Fatalf("request %d for live/cam1@360p: status %d %s, want 200", i+1, r.status, r.body)
		}
	}
	if n := rp.calls.Load(); n != 1 {
		t.Errorf("Ensure called %d times for two concurrent first requests, want 1 (one muxer start)", n)
	}
	if n := hlsReaders(hub, "live/cam1@360p"); n != 1 {
		t.Errorf("live/cam1@360p has %d hub readers, want 1: concurrent first requests must share one muxer", n)
	}
}

func TestHLSCloseEndsARequestWaitingForARendition(t *testing.T) {
	rp := newBlockingRenditions()
	hub := testutil.NewHub(t, media.HubConfig{Renditions: rp}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	h, srv := newHLSServer(t, hub, egress.HLSConfig{})

	status := make(chan int, 1)
	go func() {
		res, err := http.Get(srv.URL + "/live/cam1@360p/index.m3u8")
		if err != nil {
			status <- 0
			return
		}
		res.Body.Close()
		status <- res.StatusCode
	}()
	<-rp.entered
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the start it interrupted: Ensure has returned.
	select {
	case <-rp.returned:
	default:
		t.Fatal("Close returned while a muxer start still waited for its rendition")
	}
	if !errors.Is(rp.err, context.Canceled) {
		t.Fatalf("the rendition's Ensure ended with %v, want context.Canceled: Close must cancel the wait", rp.err)
	}
	if code := <-status; code != http.StatusServiceUnavailable {
		t.Fatalf("request waiting for the rendition at Close: status %d, want 503", code)
	}
}

// A rendition that never delivers a keyframe (its serverlet's Ensure
// never returns) is answered 503 with Retry-After once
// FirstSegmentTimeout has passed, not 500: the player may try again.
func TestHLSRenditionWithoutKeyframeAnswers503(t *testing.T) {
	rp := newBlockingRenditions()
	hub := testutil.NewHub(t, media.HubConfig{Renditions: rp}, nil)
	testutil.PublishFile(t, hub, "live/cam1", hlsClip(t), false)
	_, srv := newHLSServer(t, hub, egress.HLSConfig{FirstSegmentTimeout: 300 * time.Millisecond})
	res, err := http.Get(srv.URL + "/live/cam1@360p/index.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("stalled rendition: status %s, want 503", res.Status)
	}
	if res.Header.Get("Retry-After") == "" {
		t.Error("stalled rendition: 503 without Retry-After")
	}
	<-rp.returned
	if !errors.Is(rp.err, context.DeadlineExceeded) {
		t.Errorf("the rendition's Ensure ended with %v, want the FirstSegmentTimeout deadline", rp.err)
	}
}
