package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"

	"github.com/gradient-cdn/gradient/ingest/testsrc"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// slowSeed is a gossip seed that accepts the join's TCP connection and
// answers nothing until release is closed (at most hold), then resets it:
// a node joining it spends that long in its join.
func slowSeed(t *testing.T, hold time.Duration) (addr string, release func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rel := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	t.Cleanup(func() {
		once.Do(func() { close(rel) })
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-rel:
				case <-time.After(hold):
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String(), func() { once.Do(func() { close(rel) }) }
}

// startNodeWhilePublishing starts a node whose join takes seconds (see
// slowSeed) while a publisher pushes live/cam1 to its RTSP address from
// before node.New is called, retrying until the node takes it. Once the
// stream can be read from the node, duringStart runs (with the node's
// RTSP URL base) and the seed is released: on a node that serves RTSP
// during its join, duringStart runs within the join.
func startNodeWhilePublishing(t *testing.T, duringStart func(base string)) *Node {
	t.Helper()
	seed, release := slowSeed(t, 3*time.Second)
	cfg := testOverlayConfig(t, "joiner", "", []string{seed})
	base := "rtsp://" + cfg.RTSP.Addr + "/"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	quiet := slog.New(slog.DiscardHandler)
	retry := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
			return true
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			p, err := testsrc.New(testsrc.Config{URL: base + "live/cam1", Width: 320, Height: 240, FPS: 15, Bitrate: 300_000}, quiet)
			if err != nil {
				t.Error(err)
				return
			}
			p.Run(ctx) // returns at once while the node does not listen
			if !retry() {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		defer release()
		for {
			p, err := testutil.RTSPPlay(t, base+"live/cam1", testutil.RTSPPlayOptions{Transport: gortsplib.TransportTCP})
			if err == nil {
				p.Close()
				break
			}
			if !retry() {
				return
			}
		}
		duringStart(base)
	}()
	n, err := New(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestAStreamPublishedWhileTheNodeJoinsIsAnnounced: a broadcaster that
// publishes while the node is still joining the cluster must find its
// stream announced (rooted here) once the join is over.
func TestAStreamPublishedWhileTheNodeJoinsIsAnnounced(t *testing.T) {
	n := startNodeWhilePublishing(t, func(string) {})
	testutil.Eventually(t, 10*time.Second, "live/cam1, published during the join, is announced with this node as root", func() bool {
		s, ok := n.Members.Stream("live/cam1")
		return ok && s.Root == "joiner"
	})
}

// TestReadingARenditionWhileTheNodeStartsIsRaceFree reads a rendition
// (which asks the hub's rendition provider) while the node starts. Under
// -race it fails if the provider reads node fields New is still writing.
func TestReadingARenditionWhileTheNodeStartsIsRaceFree(t *testing.T) {
	n := startNodeWhilePublishing(t, func(base string) {
		if p, err := testutil.RTSPPlay(t, base+"live/cam1@180p", testutil.RTSPPlayOptions{Transport: gortsplib.TransportTCP}); err == nil {
			p.Close()
		}
	})
	testutil.Eventually(t, 20*time.Second, "live/cam1@180p can be read once the node runs", func() bool {
		p, err := testutil.RTSPPlay(t, fmt.Sprintf("rtsp://%s/live/cam1@180p", n.cfg.RTSP.Addr), testutil.RTSPPlayOptions{Transport: gortsplib.TransportTCP})
		if err != nil {
			return false
		}
		p.Close()
		return true
	})
}
