package serverlet_test

import (
	"fmt"

	"github.com/gradient-cdn/gradient/serverlet"
)

// A serverlet of one's own: a FrameFunc that darkens the picture, chained
// after the built-in scale in a ladder spec.
func ExampleFrameFunc() {
	reg := serverlet.NewRegistry()
	reg.Register("darken", func(args serverlet.Args) (serverlet.Serverlet, error) {
		return serverlet.FrameFunc(func(f *serverlet.Frame) error {
			y, _ := f.Plane(0)
			for i := range y {
				y[i] /= 2
			}
			return nil
		}), nil
	})
	s, err := reg.Parse("scale x360 800k | darken")
	if err != nil {
		fmt.Println(err)
		return
	}
	p := serverlet.NewPipeline(serverlet.Format{Width: 1280, Height: 720, FPS: 30})
	if err := s.Setup(p); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%dx%d at %d bit/s, video transcoded: %v\n", p.Width, p.Height, p.Bitrate, p.TranscodesVideo())
	// Output: 640x360 at 800000 bit/s, video transcoded: true
}

// A filter-graph serverlet: any FFmpeg video filter chain.
func ExampleSetupFunc() {
	mirror := serverlet.SetupFunc(func(p *serverlet.Pipeline) error {
		p.Filter("hflip")
		return nil
	})
	p := serverlet.NewPipeline(serverlet.Format{Width: 640, Height: 360, FPS: 30})
	mirror.Setup(p)
	fmt.Println(p.TranscodesVideo())
	// Output: true
}
