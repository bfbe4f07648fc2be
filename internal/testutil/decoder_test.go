package testutil

import (
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/media"
)

func TestPublishFileFeedsDecodableVideoWithSEI(t *testing.T) {
	hub := NewHub(t, media.HubConfig{}, nil)
	clip := Clip(t, ClipOptions{Width: 320, Height: 240, FPS: 30, Seconds: 1, Audio: "aac"})
	PublishFile(t, hub, "live/file", clip, true)
	r, err := hub.Subscribe("live/file", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	video, audio, frames := r.Description().VideoTrack(), 0, 0
	deadline := time.After(20 * time.Second)
	// 45 frames spans a loop of the 1 s clip, so re-opening is exercised.
	for frames < 45 || audio == 0 {
		select {
		case u := <-r.C():
			if u.Track != video {
				audio++
				continue
			}
			if _, ok := media.CaptureTime(u.Data); !ok {
				t.Fatal("video unit without capture SEI")
			}
			fs, err := d.Decode(u.Data, int64(u.PTS))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				if f.Width != 320 || f.Height != 240 {
					t.Fatalf("decoded %dx%d, want 320x240", f.Width, f.Height)
				}
			}
			frames += len(fs)
		case <-deadline:
			t.Fatalf("decoded %d frames and %d audio units in 20 s", frames, audio)
		}
	}
}
