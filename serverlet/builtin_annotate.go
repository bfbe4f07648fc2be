package serverlet

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// annotate burns text or an image into the picture (a caption, a local ad,
// a watermark) with FFmpeg's drawtext and overlay filters:
//
//	annotate text='Hello Paris' x=10 y=10 size=24 color=white box=0.5
//	annotate clock              the node's wall clock (HH:MM:SS)
//	annotate node               the node's name
//	annotate image=/srv/logo.png x=W-w-10 y=10 opacity=0.6
//
// x and y are FFmpeg expressions (w, h: picture; tw, th: text size; W, H
// and w, h for overlays). size is the font height in pixels or an
// expression of h (default h/12); box is the opacity of a black box behind
// the text (default 0.5, 0 for none).
func init() { RegisterBuiltin("annotate", newAnnotate) }

type annotate struct {
	text, image       string
	clock, node       bool
	x, y, size, color string
	box, opacity      float64
	font              string
}

func newAnnotate(a Args) (Serverlet, error) {
	s := &annotate{x: "10", y: "10", size: "h/12", color: "white", box: 0.5, opacity: 1}
	for _, w := range a.Positional() {
		switch w {
		case "clock":
			s.clock = true
		case "node":
			s.node = true
		default:
			return nil, fmt.Errorf("unknown word %q (clock, node, or key=value)", w)
		}
	}
	s.text, _ = a.Get("text")
	s.image, _ = a.Get("image")
	s.font, _ = a.Get("font")
	if v, ok := a.Get("x"); ok {
		s.x = v
	}
	if v, ok := a.Get("y"); ok {
		s.y = v
	}
	if v, ok := a.Get("size"); ok {
		s.size = v
	}
	if v, ok := a.Get("color"); ok {
		s.color = v
	}
	for _, f := range []struct {
		key string
		dst *float64
	}{{"box", &s.box}, {"opacity", &s.opacity}} {
		if v, ok := a.Get(f.key); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil || x < 0 || x > 1 {
				return nil, fmt.Errorf("%s %q: want a number in [0, 1]", f.key, v)
			}
			*f.dst = x
		}
	}
	n := 0
	for _, b := range []bool{s.text != "", s.image != "", s.clock, s.node} {
		if b {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("give exactly one of text=, image=, clock, node")
	}
	if s.image != "" {
		if _, err := os.Stat(s.image); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	return s, nil
}

func (s *annotate) Setup(p *Pipeline) error {
	if s.image != "" {
		label := fmt.Sprintf("annotate%d", len(p.filters))
		p.Filter(fmt.Sprintf("movie=%s,format=rgba,colorchannelmixer=aa=%g[%s];[in][%s]overlay=x=%s:y=%s[out]",
			escapeGraph(escapeValue(s.image)), s.opacity, label, label, escapeGraph(escapeValue(s.x)), escapeGraph(escapeValue(s.y))))
		return nil
	}
	var opts []string
	switch {
	case s.clock:
		opts = append(opts, `text=%{localtime\:%T}`, "expansion=normal")
	case s.node:
		opts = append(opts, "text="+escapeValue(p.In.Node), "expansion=none")
	default:
		opts = append(opts, "text="+escapeValue(s.text), "expansion=none")
	}
	if s.font != "" {
		opts = append(opts, "fontfile="+escapeValue(s.font))
	}
	opts = append(opts, "x="+escapeValue(s.x), "y="+escapeValue(s.y), "fontsize="+escapeValue(s.size),
		"fontcolor="+escapeValue(s.color))
	if s.box > 0 {
		opts = append(opts, "box=1", fmt.Sprintf("boxcolor=black@%g", s.box), "boxborderw=4")
	}
	p.Filter(escapeGraph("drawtext=" + strings.Join(opts, ":")))
	return nil
}

// escapeValue escapes a filter option value (FFmpeg filters(1), "Notes on
// filtergraph escaping", first level).
func escapeValue(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, `:`, `\:`)
	return r.Replace(v)
}

// escapeGraph escapes a filter description for the graph parser (second
// level).
func escapeGraph(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, `[`, `\[`, `]`, `\]`, `,`, `\,`, `;`, `\;`)
	return r.Replace(v)
}
