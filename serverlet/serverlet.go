// Package serverlet transforms live streams inside a node: a serverlet
// turns one rendition of a stream into another (a smaller picture, a lower
// frame rate, burnt-in text, Opus audio for WebRTC viewers) and the result
// is published in the hub as "<stream>@<rendition>".
//
// A Serverlet is a small, composable description in the spirit of
// net/http's Handler: Setup adds its steps (FFmpeg filters, a Go function
// run on every decoded frame, encoder settings, audio transcoding) to a
// Pipeline, and the runtime builds decode → filters → frame functions →
// encode (libx264, zerolatency, no B-frames; libopus for audio) from it.
// Serverlets chain: "scale x360 800k | annotate text=LIVE" runs both.
// The renditions of one source share one decoder (shared.go): its
// pictures go by reference to each rendition's filters, frame functions
// and encoder, each on its own goroutine.
//
// Built-ins register by name at init (scale, fps, annotate, audio);
// operators add their own as Go plugins (see LoadPlugin and
// examples/grayscale). The Manager makes renditions on demand for the hub
// (media.RenditionProvider), bounded by a number of transcode slots, and
// measures what each running serverlet costs: NewManager builds it from a
// ManagerConfig (a node's `serverlets` YAML section), Start loads the
// plugins and the ladder, Close stops every serverlet.
package serverlet

import (
	"fmt"
	"strings"

	"github.com/gradient-cdn/gradient/media"
)

// Serverlet configures one transformation of a stream. Setup is called
// once each time the serverlet starts, with the pipeline built so far by
// the serverlets before it in the chain; it adds its steps or returns an
// error that refuses the rendition (wrap ErrNoSuchRendition when the
// rendition makes no sense for this source, e.g. upscaling).
type Serverlet interface {
	Setup(p *Pipeline) error
}

// SetupFunc adapts a function to a Serverlet.
type SetupFunc func(p *Pipeline) error

// Setup calls f(p).
func (f SetupFunc) Setup(p *Pipeline) error { return f(p) }

// FrameFunc is a serverlet that runs a Go function on every decoded video
// frame (planar YUV 4:2:0, writable) after the pipeline's filters. An
// error or a panic stops the rendition.
type FrameFunc func(f *Frame) error

// Setup adds f to the pipeline's frame functions.
func (f FrameFunc) Setup(p *Pipeline) error {
	p.OnFrame(f)
	return nil
}

// Chain runs several serverlets in order on one pipeline.
type Chain []Serverlet

// Setup sets up every serverlet of the chain in order.
func (c Chain) Setup(p *Pipeline) error {
	for _, s := range c {
		if err := s.Setup(p); err != nil {
			return err
		}
	}
	return nil
}

// Format describes the source a serverlet transforms.
type Format struct {
	Stream        string  // source stream path, "live/cam1"
	Rendition     string  // the rendition being made, "360p"
	Node          string  // the node's name, for annotations
	Width, Height int     // source picture size
	FPS           float64 // source frame rate; 0 when unknown
	// Audio is the source's audio codec, "" without audio.
	Audio           media.Codec
	AudioChannels   int
	AudioSampleRate int
}

// AudioMode says what happens to the source's audio.
type AudioMode int

// Audio modes.
const (
	AudioCopy AudioMode = iota // pass the source's audio units through
	AudioOpus                  // transcode to Opus, 48 kHz
	AudioDrop                  // publish without audio
	AudioAAC                   // transcode Opus to AAC-LC, 48 kHz
)

// Pipeline is what a chain of serverlets asks the runtime to run. Only
// serverlets' Setup methods modify it.
type Pipeline struct {
	// In is the source; read-only.
	In Format

	// Width and Height are the output picture size as the serverlets so
	// far expect it (the filters decide; these are for the next
	// serverlet's arithmetic). They start at the source size.
	Width, Height int
	// FPS is the expected output frame rate, starting at the source's.
	FPS float64

	// Bitrate is the output video bitrate in bit/s; 0 lets the runtime
	// estimate one from the output size and frame rate.
	Bitrate int

	// Audio is the audio mode; AudioCopy by default.
	Audio AudioMode
	// OpusBitrate is the Opus bitrate in bit/s with AudioOpus. Default 64000.
	OpusBitrate int
	// AACBitrate is the AAC bitrate in bit/s with AudioAAC. Default 128000.
	AACBitrate int

	filters []string
	frames  []FrameFunc
	// scaleW and scaleH, when set, are the size the first filter (the
	// scale serverlet's) scales the source to: a rung whose pipeline
	// begins so may scale a larger rung's picture instead of the source's
	// (ManagerConfig.CascadeScale).
	scaleW, scaleH int
}

// NewPipeline starts a pipeline for the source in.
func NewPipeline(in Format) *Pipeline {
	return &Pipeline{In: in, Width: in.Width, Height: in.Height, FPS: in.FPS}
}

// Filter appends an FFmpeg video filter chain, e.g. "scale=640:360". A
// graph with more than one input uses the labels [in] and [out] for the
// video coming in and going out, e.g.
// "movie=logo.png[wm];[in][wm]overlay=10:10[out]"; its other labels must
// be unique in the pipeline.
func (p *Pipeline) Filter(chain string) { p.filters = append(p.filters, chain) }

// OnFrame appends a function run on every frame after the filters.
func (p *Pipeline) OnFrame(f FrameFunc) { p.frames = append(p.frames, f) }

// scalesFirst gives the size the pipeline's first filter scales the
// source to, if that filter is the scale serverlet's.
func (p *Pipeline) scalesFirst() (w, h int, ok bool) {
	return p.scaleW, p.scaleH, p.scaleW > 0 && len(p.filters) > 0
}

// onlyScales tells whether the pipeline's pictures are the source's
// scaled and nothing else: no other filter, no frame function. Such a
// rung's picture may be the source of smaller rungs' scaling.
func (p *Pipeline) onlyScales() bool {
	_, _, ok := p.scalesFirst()
	return ok && len(p.filters) == 1 && len(p.frames) == 0
}

// TranscodesVideo tells whether the video is decoded and re-encoded; a
// pipeline that only changes audio passes the video units through.
func (p *Pipeline) TranscodesVideo() bool {
	return len(p.filters) > 0 || len(p.frames) > 0 || p.Bitrate > 0
}

// filterGraph joins the stages into one graph from [in] to [out], ending in
// yuv420p for libx264.
func (p *Pipeline) filterGraph() string {
	var b strings.Builder
	stages := append(append([]string(nil), p.filters...), "format=yuv420p")
	for i, st := range stages {
		in, out := fmt.Sprintf("[s%d]", i), fmt.Sprintf("[s%d]", i+1)
		if i == 0 {
			in = "[in]"
		}
		if i == len(stages)-1 {
			out = "[out]"
		}
		if i > 0 {
			b.WriteString(";")
		}
		if strings.Contains(st, "[in]") {
			st = strings.ReplaceAll(st, "[in]", in)
			st = strings.ReplaceAll(st, "[out]", out)
			b.WriteString(st)
		} else {
			b.WriteString(in + st + out)
		}
	}
	return b.String()
}

// estimateBitrate is the bitrate used when no serverlet sets one: 0.1 bit
// per pixel at the frame rate (about 700 kbit/s for 640x360 at 30 fps),
// within the usual ladders' range for H.264.
func (p *Pipeline) estimateBitrate() int {
	fps := p.FPS
	if fps <= 0 {
		fps = 30
	}
	return max(100_000, int(0.1*float64(p.Width*p.Height)*fps))
}
