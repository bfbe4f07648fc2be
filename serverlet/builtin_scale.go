package serverlet

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// scale: "scale 640x360 800k", "scale x360 800k maxfps=15", "scale 640x".
// A side left out keeps the source's aspect ratio. Asking for a picture
// larger than the source is ErrNoSuchRendition: no upscaling.
func init() { RegisterBuiltin("scale", newScale) }

type scale struct {
	w, h    int // 0 = from the aspect ratio
	bitrate int
	maxFPS  float64
}

func newScale(a Args) (Serverlet, error) {
	s := &scale{}
	for _, w := range a.Positional() {
		switch {
		case strings.Contains(w, "x"):
			ws, hs, _ := strings.Cut(w, "x")
			var err error
			if s.w, err = optInt(ws); err != nil {
				return nil, fmt.Errorf("size %q: %w", w, err)
			}
			if s.h, err = optInt(hs); err != nil {
				return nil, fmt.Errorf("size %q: %w", w, err)
			}
		case strings.HasSuffix(w, "fps"):
			f, err := strconv.ParseFloat(strings.TrimSuffix(w, "fps"), 64)
			if err != nil || f <= 0 {
				return nil, fmt.Errorf("frame rate %q: want e.g. 15fps", w)
			}
			s.maxFPS = f
		default:
			b, err := ParseBitrate(w)
			if err != nil {
				return nil, err
			}
			s.bitrate = b
		}
	}
	if v, ok := a.Get("width"); ok {
		n, err := optInt(v)
		if err != nil {
			return nil, fmt.Errorf("width: %w", err)
		}
		s.w = n
	}
	if v, ok := a.Get("height"); ok {
		n, err := optInt(v)
		if err != nil {
			return nil, fmt.Errorf("height: %w", err)
		}
		s.h = n
	}
	if v, ok := a.Get("bitrate"); ok {
		b, err := ParseBitrate(v)
		if err != nil {
			return nil, err
		}
		s.bitrate = b
	}
	if v, ok := a.Get("maxfps"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return nil, fmt.Errorf("maxfps %q: want a positive number", v)
		}
		s.maxFPS = f
	}
	if s.w == 0 && s.h == 0 {
		return nil, fmt.Errorf("give a size: WxH, Wx or xH (got %q)", strings.Join(a, " "))
	}
	return s, nil
}

func optInt(s string) (int, error) {
	if s == "" || s == "-" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 16384 {
		return 0, fmt.Errorf("%q is not a size in pixels", s)
	}
	return n, nil
}

// ParseBitrate reads "800k", "2.5M", "800000" as bits per second.
func ParseBitrate(s string) (int, error) {
	mult := 1.0
	num := s
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, num = 1e3, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, num = 1e6, s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*mult < 10_000 || f*mult > 1e9 {
		return 0, fmt.Errorf("bitrate %q: want e.g. 800k or 2.5M (10k to 1000M)", s)
	}
	return int(f * mult), nil
}

func (s *scale) Setup(p *Pipeline) error {
	w, h := s.w, s.h
	switch {
	case w == 0:
		w = even(float64(p.Width) * float64(h) / float64(p.Height))
	case h == 0:
		h = even(float64(p.Height) * float64(w) / float64(p.Width))
	}
	if w > p.Width || h > p.Height {
		return fmt.Errorf("%w: %dx%d is larger than the source %dx%d (no upscaling)", ErrNoSuchRendition, w, h, p.Width, p.Height)
	}
	if w != p.Width || h != p.Height {
		if len(p.filters) == 0 {
			p.scaleW, p.scaleH = w, h
		}
		p.Filter(fmt.Sprintf("scale=%d:%d:flags=bicubic", w, h))
		p.Width, p.Height = w, h
	}
	if s.maxFPS > 0 && (p.FPS <= 0 || p.FPS > s.maxFPS+0.01) {
		p.Filter("fps=" + strconv.FormatFloat(s.maxFPS, 'f', -1, 64))
		p.FPS = s.maxFPS
	}
	if s.bitrate > 0 {
		p.Bitrate = s.bitrate
	} else if p.Bitrate == 0 {
		p.Bitrate = p.estimateBitrate()
	}
	return nil
}

// even rounds to the nearest even number of at least 2: 4:2:0 needs even sizes.
func even(f float64) int {
	return max(2, 2*int(math.Round(f/2)))
}
