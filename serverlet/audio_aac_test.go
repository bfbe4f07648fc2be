package serverlet_test

import (
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/serverlet"
)

// TestAudioServerletTranscodesOpusToAACAndPassesVideo: "audio aac" of an
// Opus source publishes AAC-LC 48 kHz with its AudioSpecificConfig, whose
// units decode with FFmpeg's AAC decoder in rising PTS, and passes the
// video through.
func TestAudioServerletTranscodesOpusToAACAndPassesVideo(t *testing.T) {
	hub, _, _ := newTestManager(t, serverlet.ManagerConfig{Ladder: map[string]string{"aac": "audio aac"}})
	publishClip(t, hub, "live/cam1", testutil.ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 4, Audio: "opus"})
	src, _ := hub.Lookup("live/cam1")
	if a := src.Description().AudioTrack(); a < 0 || src.Description().Tracks[a].Codec != media.CodecOpus {
		t.Fatalf("source tracks %v, want Opus audio", src.Description().Tracks)
	}
	r, err := hub.Subscribe("live/cam1@aac", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := r.Description()
	a := d.AudioTrack()
	if a < 0 || d.Tracks[a].Codec != media.CodecAAC || d.Tracks[a].AAC == nil || d.Tracks[a].AAC.SampleRate != 48000 {
		t.Fatalf("@aac tracks %v, want H264 and AAC 48 kHz with its config", d.Tracks)
	}
	sv := src.Description().Tracks[src.Description().VideoTrack()]
	if string(d.Tracks[d.VideoTrack()].SPS) != string(sv.SPS) {
		t.Error("@aac re-encoded the video; it should pass through")
	}
	units := readUnits(t, r, 60, 10*time.Second)
	conf, err := d.Tracks[a].AAC.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	codec := astiav.FindDecoder(astiav.CodecIDAac)
	dec := astiav.AllocCodecContext(codec)
	defer dec.Free()
	if err := dec.SetExtraData(conf); err != nil {
		t.Fatal(err)
	}
	if err := dec.Open(codec, nil); err != nil {
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
			t.Fatalf("AAC PTS %v after %v", u.PTS, last)
		}
		last = u.PTS
		packets++
		pkt.FromData(u.Data[0])
		if err := dec.SendPacket(pkt); err != nil {
			t.Fatalf("decode AAC unit %d: %v", packets, err)
		}
		pkt.Unref()
		for dec.ReceiveFrame(frm) == nil {
			samples += frm.NbSamples()
			if frm.SampleRate() != 48000 {
				t.Fatalf("AAC decodes at %d Hz, want 48000", frm.SampleRate())
			}
			frm.Unref()
		}
	}
	// 60 video frames at 30 fps are 2 s: about 94 AAC units of 1024 samples.
	if packets < 60 || samples < (packets-2)*1024 {
		t.Fatalf("%d AAC units decoded to %d samples; want 1024-sample units for 2 s", packets, samples)
	}
}
