package serverlet_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/serverlet"
)

func TestParseSpecsBuildsPipelines(t *testing.T) {
	in := serverlet.Format{Width: 1280, Height: 720, FPS: 30, Audio: "AAC"}
	for _, tc := range []struct {
		spec        string
		w, h        int
		fps         float64
		bitrate     int
		transcodes  bool
		audio       serverlet.AudioMode
		errContains string
	}{
		{spec: "scale x360 800k", w: 640, h: 360, fps: 30, bitrate: 800000, transcodes: true},
		{spec: "scale 640x 1.2M 15fps", w: 640, h: 360, fps: 15, bitrate: 1200000, transcodes: true},
		{spec: "scale width=320 height=180 bitrate=250k", w: 320, h: 180, fps: 30, bitrate: 250000, transcodes: true},
		{spec: "scale x1080", errContains: "no upscaling"},
		{spec: "scale", errContains: "give a size"},
		{spec: "scale x360 fast", errContains: "bitrate"},
		{spec: "fps 10", w: 1280, h: 720, fps: 10, transcodes: true},
		{spec: "fps 60", w: 1280, h: 720, fps: 30},
		{spec: "audio opus", w: 1280, h: 720, fps: 30, audio: serverlet.AudioOpus},
		{spec: "scale x180 | audio opus 32k", w: 320, h: 180, fps: 30, transcodes: true, audio: serverlet.AudioOpus},
		{spec: "annotate text='a: b, c' x=10", w: 1280, h: 720, fps: 30, transcodes: true},
		{spec: "annotate", errContains: "exactly one"},
		{spec: "annotate image=/nonexistent.png", errContains: "image"},
		{spec: "nosuch 1", errContains: "unknown serverlet"},
		{spec: "scale x180 |", errContains: "empty serverlet"},
		{spec: "annotate text='open", errContains: "unterminated"},
	} {
		s, err := serverlet.NewRegistry().Parse(tc.spec)
		var p *serverlet.Pipeline
		if err == nil {
			p = serverlet.NewPipeline(in)
			err = s.Setup(p)
		}
		if tc.errContains != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errContains) {
				t.Errorf("%q: err %v, want one containing %q", tc.spec, err, tc.errContains)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if p.Width != tc.w || p.Height != tc.h || p.FPS != tc.fps || (tc.bitrate > 0 && p.Bitrate != tc.bitrate) ||
			p.TranscodesVideo() != tc.transcodes || p.Audio != tc.audio {
			t.Errorf("%q: pipeline %dx%d %.0ffps %d bit/s transcodes=%v audio=%v; want %dx%d %.0ffps %d transcodes=%v audio=%v",
				tc.spec, p.Width, p.Height, p.FPS, p.Bitrate, p.TranscodesVideo(), p.Audio, tc.w, tc.h, tc.fps, tc.bitrate, tc.transcodes, tc.audio)
		}
	}
	_, err := serverlet.NewRegistry().Parse("scale x1080")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := serverlet.NewRegistry().Parse("scale x1080")
	if err := s.Setup(serverlet.NewPipeline(serverlet.Format{Width: 640, Height: 360})); !errors.Is(err, serverlet.ErrNoSuchRendition) {
		t.Errorf("upscale: %v, want ErrNoSuchRendition", err)
	}
}

func TestRegistryRefusesDuplicateAndBadNames(t *testing.T) {
	r := serverlet.NewRegistry()
	c := func(serverlet.Args) (serverlet.Serverlet, error) { return serverlet.Chain{}, nil }
	if err := r.Register("scale", c); err == nil {
		t.Error("registered a second scale")
	}
	if err := r.Register("a b", c); err == nil {
		t.Error("registered a name with a space")
	}
	if err := r.Register("mine", c); err != nil {
		t.Fatal(err)
	}
	if _, ok := serverlet.NewRegistry().Lookup("mine"); ok {
		t.Error("a registration leaked into other registries")
	}
	for _, name := range []string{"scale", "fps", "annotate", "audio"} {
		if _, ok := r.Lookup(name); !ok {
			t.Errorf("built-in %s missing", name)
		}
	}
}
