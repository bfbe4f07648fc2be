package serverlet

import (
	"fmt"
	"strconv"
)

// fps: "fps 15" lowers the frame rate (FFmpeg's fps filter drops frames
// evenly). A source at or below the rate is left as it is.
func init() { RegisterBuiltin("fps", newFPS) }

type fpsServerlet struct{ rate float64 }

func newFPS(a Args) (Serverlet, error) {
	pos := a.Positional()
	if len(pos) != 1 {
		return nil, fmt.Errorf("want one frame rate, e.g. fps 15")
	}
	f, err := strconv.ParseFloat(pos[0], 64)
	if err != nil || f <= 0 || f > 240 {
		return nil, fmt.Errorf("frame rate %q: want a number in (0, 240]", pos[0])
	}
	return &fpsServerlet{rate: f}, nil
}

func (s *fpsServerlet) Setup(p *Pipeline) error {
	if p.FPS > 0 && p.FPS <= s.rate+0.01 {
		return nil
	}
	p.Filter("fps=" + strconv.FormatFloat(s.rate, 'f', -1, 64))
	p.FPS = s.rate
	if p.Bitrate == 0 {
		p.Bitrate = p.estimateBitrate()
	}
	return nil
}
