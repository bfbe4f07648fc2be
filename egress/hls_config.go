package egress

import (
	"time"

	"github.com/bluenviron/gohlslib/v2"
)

// HLSConfig tunes the HLS egress. The zero value is usable; see the field
// defaults.
type HLSConfig struct {
	// SegmentDuration is the minimum segment duration; a segment always
	// starts at a keyframe, so segments last at least one GOP. Default 1 s.
	SegmentDuration time.Duration

	// PartDuration is the minimum LL-HLS part duration (adjusted by the
	// muxer to the frame duration). Default 200 ms.
	PartDuration time.Duration

	// SegmentCount is how many segments each playlist keeps. Low-Latency HLS
	// needs at least 7. Default 7.
	SegmentCount int

	// IdleTimeout closes a stream's muxer, and releases its hub reader, when
	// no request for the stream came for that long. Default 30 s.
	IdleTimeout time.Duration

	// FirstSegmentTimeout bounds how long the first request for a stream
	// waits for the muxer's first segment, so that players (and ffmpeg)
	// succeed on their first try instead of reading an empty playlist.
	// After it the request is answered 503. Default 10 s.
	FirstSegmentTimeout time.Duration

	// Variant is the gohlslib muxer variant. Default
	// gohlslib.MuxerVariantLowLatency: fMP4 segments with LL-HLS parts and
	// blocking playlist reloads, which non-LL players play as plain HLS.
	Variant gohlslib.MuxerVariant

	// ViewerTimeout is how long a client counts as a viewer of a stream
	// (see Viewers) after its last answered request for one of the
	// stream's files. A playing client reloads the media playlist at least
	// once per target duration (a segment: SegmentDuration or one GOP,
	// whichever is longer) and an LL-HLS client several times a second, so
	// the window must exceed the stream's longest segment. Default 10 s,
	// or 3 × SegmentDuration where that is longer.
	ViewerTimeout time.Duration
}

func (c HLSConfig) withDefaults() HLSConfig {
	if c.SegmentDuration <= 0 {
		c.SegmentDuration = time.Second
	}
	if c.PartDuration <= 0 {
		c.PartDuration = 200 * time.Millisecond
	}
	if c.SegmentCount <= 0 {
		c.SegmentCount = 7
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.FirstSegmentTimeout <= 0 {
		c.FirstSegmentTimeout = 10 * time.Second
	}
	if c.Variant == 0 {
		c.Variant = gohlslib.MuxerVariantLowLatency
	}
	if c.ViewerTimeout <= 0 {
		c.ViewerTimeout = max(10*time.Second, 3*c.SegmentDuration)
	}
	return c
}
