package media

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func testDesc() Description {
	// A real 320x240 baseline SPS/PPS (x264).
	sps := []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80}
	pps := []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
	return Description{Tracks: []*Track{{Codec: CodecH264, SPS: sps, PPS: pps}, {Codec: CodecOpus, SampleRate: 48000, Channels: 2}}}
}

func video(i int, key bool) *Unit {
	return &Unit{Track: 0, PTS: time.Duration(i) * 33 * time.Millisecond, Key: key, Data: [][]byte{{0x65, byte(i)}}}
}

func TestDescriptionNeedsH264(t *testing.T) {
	d := testDesc()
	if w, h, _, err := d.Tracks[0].Video(); err != nil || w != 320 || h != 240 {
		t.Fatalf("Video() = %d %d %v, want 320x240", w, h, err)
	}
	if err := (Description{Tracks: []*Track{{Codec: CodecOpus}}}).Validate(); err == nil {
		t.Fatal("audio-only description accepted")
	}
	if err := (Description{Tracks: []*Track{{Codec: "H265"}}}).Validate(); err == nil {
		t.Fatal("H265 accepted")
	}
}

func TestHubRefusesSecondPublisher(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	p, err := h.Publish("live/cam1", testDesc(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Publish("live/cam1", testDesc(), "b"); !errors.Is(err, ErrAlreadyPublished) {
		t.Fatalf("second publish: %v, want ErrAlreadyPublished", err)
	}
	if _, err := h.Publish("live/../x", testDesc(), "c"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("hostile name: %v, want ErrInvalidName", err)
	}
	p.Close()
	if _, err := h.Publish("live/cam1", testDesc(), "b"); err != nil {
		t.Fatalf("publish after the first left: %v", err)
	}
}

func TestHubNewReaderStartsAtLastKeyframe(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	p, _ := h.Publish("live/cam1", testDesc(), "a")
	for i := 0; i < 10; i++ {
		p.Write(video(i, i%5 == 0))
	}
	r, err := h.Subscribe("live/cam1", "t")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := r.Read()
	if !u.Key || u.Data[0][1] != 5 {
		t.Fatalf("first unit %d key=%v, want keyframe 5", u.Data[0][1], u.Key)
	}
	for want := 6; want < 10; want++ {
		if u, _ := r.Read(); int(u.Data[0][1]) != want {
			t.Fatalf("got unit %d, want %d", u.Data[0][1], want)
		}
	}
}

func TestHubReaderWaitsForKeyframeWithoutGOP(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	p, _ := h.Publish("live/cam1", testDesc(), "a")
	p.Write(video(0, false)) // no keyframe yet: nothing to start from
	r, _ := h.Subscribe("live/cam1", "t")
	p.Write(video(1, false))
	p.Write(video(2, true))
	if u, _ := r.Read(); u.Data[0][1] != 2 {
		t.Fatalf("first unit %d, want the keyframe 2", u.Data[0][1])
	}
}

func TestHubSlowReaderSkipsToKeyframeWithoutSlowingOthers(t *testing.T) {
	h := newTestHub(t, HubConfig{ReaderQueue: 8})
	p, _ := h.Publish("live/cam1", testDesc(), "a")
	slow, _ := h.Subscribe("live/cam1", "slow")
	fast, _ := h.Subscribe("live/cam1", "fast")
	got := make(chan int, 1000)
	go func() {
		for {
			u, err := fast.Read()
			if err != nil {
				close(got)
				return
			}
			got <- int(u.Data[0][1])
		}
	}()
	fastGot := 0
	done := make(chan struct{})
	go func() {
		// The writer must never block, though slow never reads; it waits
		// for fast to take each unit, as a real-time publisher would.
		defer close(done)
		for i := 0; i < 100; i++ {
			p.Write(video(i, i%10 == 0))
			if <-got == i {
				fastGot++
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publisher blocked by a slow reader")
	}
	if fastGot != 100 {
		t.Fatalf("fast reader got %d of 100 units in order", fastGot)
	}
	if slow.Skips() == 0 || slow.Dropped() == 0 {
		t.Fatalf("slow reader skips=%d dropped=%d, want both > 0", slow.Skips(), slow.Dropped())
	}
	// After a skip the slow reader resumes exactly at a keyframe.
	p.Write(video(100, true))
	u, _ := slow.Read()
	if !u.Key {
		t.Fatalf("slow reader resumed at non-key unit %d", u.Data[0][1])
	}
	p.Close()
}

type observerFunc func(HubEvent)

func (f observerFunc) OnHubEvent(e HubEvent) { f(e) }

func BenchmarkHubFanOut100Readers(b *testing.B) {
	h := newTestHub(b, HubConfig{ReaderQueue: 1 << 16})
	p, _ := h.Publish("live/cam1", testDesc(), "a")
	var rs []*Reader
	for i := 0; i < 100; i++ {
		r, _ := h.Subscribe("live/cam1", "r")
		rs = append(rs, r)
		go func() {
			for {
				if _, err := r.Read(); err != nil {
					return
				}
			}
		}()
	}
	u := video(1, false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Write(u)
	}
	b.StopTimer()
	p.Close()
}

type renditionFunc func(ctx context.Context, path string) error

func (f renditionFunc) Ensure(ctx context.Context, path string) error { return f(ctx, path) }

func TestHubAsksRenditionProviderForMissingRendition(t *testing.T) {
	var h *Hub
	var asked []string
	h = newTestHub(t, HubConfig{Renditions: renditionFunc(func(ctx context.Context, path string) error {
		asked = append(asked, path)
		if path != "live/cam1@360p" {
			return fmt.Errorf("no such rendition: %w", ErrNotFound)
		}
		_, err := h.Publish(path, testDesc(), "serverlet")
		return err
	})})
	if _, err := h.Subscribe("live/cam1@360p", "t"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rendition of a missing source: %v, want ErrNotFound", err)
	}
	if len(asked) != 0 {
		t.Fatal("provider asked for a rendition of a stream that is not live")
	}
	h.Publish("live/cam1", testDesc(), "src")
	r, err := h.Subscribe("live/cam1@360p", "t")
	if err != nil || r.Stream().Path() != "live/cam1@360p" {
		t.Fatalf("on-demand rendition: %v", err)
	}
	if _, err := h.Subscribe("live/cam1@9000p", "t"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown rendition: %v, want ErrNotFound", err)
	}
	if len(asked) != 2 {
		t.Fatalf("provider asked %v", asked)
	}
}

func TestHubTakeoverKeepsReadersAndSilencesTheOldPublisher(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	old, _ := h.Publish("live/cam1@360p", testDesc(), "serverlet scale x360")
	r, err := h.Subscribe("live/cam1@360p", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		old.Write(video(i, i == 0))
	}
	serverletOnly := func(si StreamInfo) bool { return si.Source == "serverlet scale x360" }
	if _, err := h.Takeover("live/cam1@360p", testDesc(), "relay x", func(StreamInfo) bool { return false }); !errors.Is(err, ErrAlreadyPublished) {
		t.Fatalf("takeover the stream refuses: %v, want ErrAlreadyPublished", err)
	}
	other := testDesc()
	other.Tracks = other.Tracks[:1]
	if _, err := h.Takeover("live/cam1@360p", other, "relay x", serverletOnly); !errors.Is(err, ErrAlreadyPublished) {
		t.Fatalf("takeover with other tracks: %v, want ErrAlreadyPublished", err)
	}
	last, _ := h.streams["live/cam1@360p"].Last()
	if last != 2*33*time.Millisecond {
		t.Fatalf("Last() = %v, want the third unit's PTS", last)
	}
	nw, err := h.Takeover("live/cam1@360p", testDesc(), "relay x", serverletOnly)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Replaced():
	default:
		t.Fatal("the old publisher was not told it was replaced")
	}
	old.Write(video(99, true)) // dropped
	nw.Write(video(3, true))
	old.Close() // must not end the stream
	nw.Write(video(4, false))
	for want := 0; want < 5; want++ {
		u, err := r.Read()
		if err != nil {
			t.Fatalf("reader after takeover: %v", err)
		}
		if int(u.Data[0][1]) != want {
			t.Fatalf("reader got unit %d, want %d (the old publisher's writes after the takeover must be dropped)", u.Data[0][1], want)
		}
	}
	if st, ok := h.Lookup("live/cam1@360p"); !ok || st.Info().Source != "relay x" {
		t.Fatalf("stream after takeover: %v %+v, want live with source relay x", ok, st)
	}
	nw.Close()
	if _, err := r.Read(); !errors.Is(err, ErrStreamEnded) {
		t.Fatalf("read after the new publisher closed: %v, want ErrStreamEnded", err)
	}
	// With nothing to take over, Takeover publishes.
	p, err := h.Takeover("live/cam1@360p", testDesc(), "relay y", serverletOnly)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}

func TestHubWaitReturnsTheFirstPathPublished(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if _, err := h.Wait(ctx, "live/a", "live/b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with nothing published: %v, want the deadline", err)
	}
	cancel()
	got := make(chan string, 1)
	go func() {
		s, err := h.Wait(context.Background(), "live/a", "live/b")
		if err != nil {
			got <- err.Error()
			return
		}
		got <- s.Path()
	}()
	// Publish only once Wait sleeps, so that the wake-up is what is tested.
	waitForWaiters(t, h, 1)
	other, _ := h.Publish("live/c", testDesc(), "x") // not waited for
	defer other.Close()
	p, _ := h.Publish("live/b", testDesc(), "x")
	defer p.Close()
	if g := <-got; g != "live/b" {
		t.Fatalf("Wait returned %q, want live/b", g)
	}
	if s, err := h.Wait(context.Background(), "live/b"); err != nil || s.Path() != "live/b" {
		t.Fatalf("Wait on a live path: %v %v", s, err)
	}
	closed := make(chan error, 1)
	go func() {
		_, err := h.Wait(context.Background(), "live/z")
		closed <- err
	}()
	waitForWaiters(t, h, 1)
	h.Close()
	if err := <-closed; !errors.Is(err, ErrHubClosed) {
		t.Fatalf("Wait across Close: %v, want ErrHubClosed", err)
	}
	if len(h.waiters) != 0 {
		t.Fatalf("%d waiters left behind", len(h.waiters))
	}
}

// newTestHub builds a hub, failing the test when cfg is refused.
func newTestHub(t testing.TB, cfg HubConfig) *Hub {
	t.Helper()
	h, err := NewHub(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHubConfigDefaultsValidateAndErrorsNameTheKey(t *testing.T) {
	if err := DefaultHubConfig().Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	bad := DefaultHubConfig()
	bad.GOPCacheUnits = -1
	if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), "gop_cache_units: ") {
		t.Fatalf("Validate(gop_cache_units -1) = %v, want an error naming gop_cache_units", err)
	}
	if _, err := NewHub(HubConfig{ReaderQueue: -5}, nil); err == nil || !strings.Contains(err.Error(), "reader_queue") {
		t.Fatalf("NewHub(reader_queue -5) = %v, want an error naming reader_queue", err)
	}
}

// waitForWaiters polls until n Wait calls sleep on the hub.
func waitForWaiters(t *testing.T, h *Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got := len(h.waiters)
		h.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Wait calls sleeping after 5 s, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// orderObserver records, per path, whether the events it got alternate
// Published, Ended, Published … as the promise to observers says.
type orderObserver struct {
	mu   sync.Mutex
	last map[string]bool // path → last event was Published
	bad  []string
}

func (o *orderObserver) OnHubEvent(ev HubEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last[ev.Stream] == ev.Published {
		o.bad = append(o.bad, fmt.Sprintf("%s Published=%v twice in a row", ev.Stream, ev.Published))
	}
	o.last[ev.Stream] = ev.Published
}

func TestHubObserversSeeEndedBeforeTheRepublishedEvent(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	obs := &orderObserver{last: map[string]bool{}}
	h.Observe(obs)
	pub, err := h.Publish("live/cam1", testDesc(), "first")
	if err != nil {
		t.Fatal(err)
	}
	// A publisher ends while the next one publishes the same path as soon
	// as it is free, again and again.
	for i := 0; i < 2000; i++ {
		next := make(chan *Publisher)
		go func() {
			for {
				if p, err := h.Publish("live/cam1", testDesc(), "next"); err == nil {
					next <- p
					return
				}
			}
		}()
		pub.Close()
		pub = <-next
	}
	pub.Close()
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.bad) > 0 {
		t.Fatalf("observer saw events out of order %d times, first: %s", len(obs.bad), obs.bad[0])
	}
	if obs.last["live/cam1"] {
		t.Fatal("the last event of live/cam1 is Published, but it ended")
	}
}

// TestHubGOPCacheIsBoundedInBytes: a GOP of few but huge units is not
// kept for new readers past gop_cache_bytes; they wait for the next
// keyframe instead.
func TestHubGOPCacheIsBoundedInBytes(t *testing.T) {
	h := newTestHub(t, HubConfig{GOPCacheBytes: 1 << 20})
	p, _ := h.Publish("live/big", testDesc(), "a")
	big := func(i int, key bool) *Unit {
		u := video(i, key)
		u.Data = [][]byte{append([]byte{0x65, byte(i)}, make([]byte, 400<<10)...)}
		return u
	}
	for i := range 4 { // 1.6 MB since the keyframe
		p.Write(big(i, i == 0))
	}
	r, err := h.Subscribe("live/big", "t")
	if err != nil {
		t.Fatal(err)
	}
	p.Write(big(4, false))
	p.Write(video(5, true))
	if u, _ := r.Read(); !u.Key || u.Data[0][1] != 5 {
		t.Fatalf("first unit %d key=%v: the over-sized GOP was kept, want the next keyframe 5", u.Data[0][1], u.Key)
	}
	if got := h.cfg.GOPCacheBytes; got != 1<<20 {
		t.Fatalf("gop_cache_bytes %d", got)
	}
}
