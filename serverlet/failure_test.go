package serverlet_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

func TestUndecodableSourceStopsRenditionNotSource(t *testing.T) {
	hub, m, logs := newTestManager(t, serverlet.ManagerConfig{})
	// A good stream to take parameter sets from, and one whose video after
	// its first keyframe is garbage.
	publishClip(t, hub, "live/good", testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4})
	good, _ := hub.Lookup("live/good")
	pub, err := hub.Publish("live/bad", good.Description(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	gr, err := hub.Subscribe("live/good", "test")
	if err != nil {
		t.Fatal(err)
	}
	first := readUnits(t, gr, 1, 5*time.Second)[0] // a keyframe
	gr.Close()
	pub.Write(&media.Unit{Track: 0, Key: true, Data: first.Data})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			junk := make([]byte, 2000) // units are immutable once written
			for j := range junk {
				junk[j] = byte(j*7 + i)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			junk[0] = 0x65 // an IDR slice header that does not parse
			pub.Write(&media.Unit{Track: 0, PTS: time.Duration(i) * 33 * time.Millisecond, DTS: time.Duration(i) * 33 * time.Millisecond,
				Key: true, Data: [][]byte{junk}})
		}
	}()
	defer func() { close(stop); <-done }()

	r, err := hub.Subscribe("live/bad@180p", "test")
	if err == nil {
		for {
			if _, err = r.Read(); err != nil {
				break
			}
		}
		r.Close()
	}
	if !errors.Is(err, media.ErrStreamEnded) && !errors.Is(err, media.ErrNotFound) {
		t.Fatalf("reader of a rendition whose source does not decode: %v, want the stream to end", err)
	}
	testutil.Eventually(t, 5*time.Second, "failure counted", func() bool { return m.Stats().Failed >= 1 })
	if !strings.Contains(logs.String(), "serverlet failed") {
		t.Error("the failure is not logged")
	}
	if _, ok := hub.Lookup("live/bad"); !ok {
		t.Error("the source ended with its serverlet")
	}
	// Another stream's rendition still works.
	g, err := hub.Subscribe("live/good@180p", "test")
	if err != nil {
		t.Fatal(err)
	}
	readUnits(t, g, 10, 10*time.Second)
	g.Close()
}
