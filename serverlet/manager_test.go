package serverlet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

func TestTwoReadersShareOneServerletThatStopsAfterTheLastLeaves(t *testing.T) {
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{IdleStop: 500 * time.Millisecond})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4})
	a, err := hub.Subscribe("live/cam1@180p", "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hub.Subscribe("live/cam1@180p", "b")
	if err != nil {
		t.Fatal(err)
	}
	if a.Stream() != b.Stream() {
		t.Fatal("two readers of @180p read two different streams")
	}
	readUnits(t, a, 10, 10*time.Second)
	readUnits(t, b, 10, 10*time.Second)
	if st := m.Stats(); st.Used != 1 || len(st.Serverlets) != 1 || st.Serverlets[0].Readers != 2 {
		t.Fatalf("stats %+v: want one serverlet with two readers", st)
	}
	a.Close()
	// One reader left: the serverlet keeps running past the idle time.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if _, err := b.Read(); err != nil {
			t.Fatalf("the remaining reader lost its stream: %v", err)
		}
	}
	b.Close()
	testutil.Eventually(t, 5*time.Second, "serverlet stopped after its last reader left", func() bool {
		_, live := hub.Lookup("live/cam1@180p")
		return m.Stats().Used == 0 && !live
	})
	// Asking again starts it again.
	c, err := hub.Subscribe("live/cam1@180p", "c")
	if err != nil {
		t.Fatal(err)
	}
	readUnits(t, c, 5, 10*time.Second)
	c.Close()
}

func TestServerletBeyondSlotsIsRefused(t *testing.T) {
	hub, m, _ := newTestManager(t, serverlet.ManagerConfig{Slots: 1})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4})
	r, err := hub.Subscribe("live/cam1@180p", "a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = hub.Subscribe("live/cam1@240p", "b")
	if !errors.Is(err, serverlet.ErrNoCapacity) || !strings.Contains(err.Error(), "1 of 1 slots") {
		t.Fatalf("second serverlet with one slot: err %v, want ErrNoCapacity", err)
	}
	// A second reader of the running one needs no slot.
	r2, err := hub.Subscribe("live/cam1@180p", "c")
	if err != nil {
		t.Fatalf("second reader of a running rendition: %v", err)
	}
	r2.Close()
	if st := m.Stats(); st.Slots != 1 || st.Used != 1 || st.Refused != 1 {
		t.Errorf("stats %+v: want 1 slot, 1 used, 1 refused", st)
	}
}

func TestAudioServerletTranscodesAACToOpusAndPassesVideo(t *testing.T) {
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{Ladder: map[string]string{"opus": "audio opus"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, Audio: "aac"})
	src, _ := hub.Lookup("live/cam1")
	r, err := hub.Subscribe("live/cam1@opus", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := r.Description()
	a := d.AudioTrack()
	if a < 0 || d.Tracks[a].Codec != media.CodecOpus || d.Tracks[a].SampleRate != 48000 {
		t.Fatalf("@opus tracks %v, want H264 and Opus 48 kHz", d.Tracks)
	}
	sv := src.Description().Tracks[src.Description().VideoTrack()]
	if string(d.Tracks[d.VideoTrack()].SPS) != string(sv.SPS) {
		t.Error("@opus re-encoded the video; it should pass through")
	}
	units := readUnits(t, r, 60, 10*time.Second)
	dec := astiav.AllocCodecContext(astiav.FindDecoder(astiav.CodecIDOpus))
	defer dec.Free()
	dec.SetSampleRate(48000)
	dec.SetChannelLayout(astiav.ChannelLayoutStereo)
	if err := dec.Open(astiav.FindDecoder(astiav.CodecIDOpus), nil); err != nil {
		t.Fatal(err)
	}
	pkt, frm := astiav.AllocPacket(), astiav.AllocFrame()
	defer pkt.Free()
	defer frm.Free()
	samples, packets := 0, 0
	var last time.Duration = -1
	for _, u := range units {
		if u.Track != a {
			continue
		}
		if u.PTS <= last {
			t.Fatalf("Opus PTS %v after %v", u.PTS, last)
		}
		last = u.PTS
		packets++
		pkt.FromData(u.Data[0])
		if err := dec.SendPacket(pkt); err != nil {
			t.Fatalf("decode Opus packet %d: %v", packets, err)
		}
		pkt.Unref()
		for dec.ReceiveFrame(frm) == nil {
			samples += frm.NbSamples()
			frm.Unref()
		}
	}
	// 60 video frames at 30 fps are 2 s: about 100 Opus packets of 20 ms.
	if packets < 60 || samples < packets*900 {
		t.Fatalf("%d Opus packets decoded to %d samples; want 20 ms packets for 2 s", packets, samples)
	}
}

func TestEnsureOfMissingSourceIsNotFound(t *testing.T) {
	_, m, _ := newTestManager(t, serverlet.ManagerConfig{})
	err := m.Ensure(context.Background(), "live/nobody@180p")
	if !errors.Is(err, media.ErrNotFound) {
		t.Fatalf("rendition of a missing source: %v, want ErrNotFound", err)
	}
}

func TestPanickingSetupAndConstructorAreErrors(t *testing.T) {
	reg := serverlet.NewRegistry()
	reg.Register("setuppanic", func(serverlet.Args) (serverlet.Serverlet, error) {
		return serverlet.SetupFunc(func(*serverlet.Pipeline) error { panic("bad setup") }), nil
	})
	reg.Register("ctorpanic", func(serverlet.Args) (serverlet.Serverlet, error) { panic("bad constructor") })
	if _, _, err := startManager(serverlet.ManagerConfig{Registry: reg, Ladder: map[string]string{"x": "ctorpanic"}}, nil); err == nil ||
		!strings.Contains(err.Error(), "ladder.x: ") || !strings.Contains(err.Error(), "constructor panicked") {
		t.Errorf("ladder with a panicking constructor: %v", err)
	}
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{Registry: reg, Ladder: map[string]string{"x": "setuppanic"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4})
	for i := 0; i < 2; i++ { // the second time proves no lock was left held
		if _, err := hub.Subscribe("live/cam1@x", "test"); err == nil || !strings.Contains(err.Error(), "setup panicked") {
			t.Fatalf("rendition whose setup panics: %v", err)
		}
	}
}

// TestServerletWithNothingToDecodeStopsAtStartTimeout: a source that never
// sends a keyframe (a publisher that only announced, a bogus request) must
// not hold a transcode slot: the run ends at start_timeout and the slot is
// free for a real viewer.
func TestServerletWithNothingToDecodeStopsAtStartTimeout(t *testing.T) {
	hub, m, logs := newTestManager(t, serverlet.ManagerConfig{Slots: 1, StartTimeout: 700 * time.Millisecond})
	sps := []byte{0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
		0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20}
	pub, err := hub.Publish("live/silent", media.Description{Tracks: []*media.Track{
		{Codec: media.CodecH264, SPS: sps, PPS: []byte{0x68, 0xce, 0x3c, 0x80}}}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if r, err := hub.SubscribeContext(ctx, "live/silent@180p", "bogus"); err == nil {
		r.Close()
	}
	if m.Stats().Used != 1 {
		t.Fatalf("stats %+v: want the silent source's serverlet running", m.Stats())
	}
	testutil.Eventually(t, 5*time.Second, "the serverlet with nothing to decode stopped", func() bool {
		return m.Stats().Used == 0
	})
	if !strings.Contains(logs.String(), "start_timeout") {
		t.Error("the stop does not name start_timeout in the log")
	}
	// The slot serves a real stream now.
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 640, Height: 360, FPS: 30, Seconds: 4})
	r, err := hub.Subscribe("live/cam1@180p", "viewer")
	if err != nil {
		t.Fatalf("a real viewer after the timeout: %v", err)
	}
	defer r.Close()
	readUnits(t, r, 5, 10*time.Second)
}
