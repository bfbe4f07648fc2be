package egress

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gohlslib/v2"
)

// HLS variants, the values of HLSConfig.Variant.
const (
	// HLSVariantLowLatency is fMP4 segments with LL-HLS parts and blocking
	// playlist reloads, which non-LL players play as plain HLS.
	HLSVariantLowLatency = "lowLatency"
	// HLSVariantFMP4 is fMP4 segments without parts.
	HLSVariantFMP4 = "fmp4"
	// HLSVariantMPEGTS is MPEG-TS segments (no Opus).
	HLSVariantMPEGTS = "mpegts"
)

var hlsVariants = map[string]gohlslib.MuxerVariant{
	HLSVariantLowLatency: gohlslib.MuxerVariantLowLatency,
	HLSVariantFMP4:       gohlslib.MuxerVariantFMP4,
	HLSVariantMPEGTS:     gohlslib.MuxerVariantMPEGTS,
}

// HLSConfig tunes the HLS egress: the node's `hls` section.
// DefaultHLSConfig gives the defaults; NewHLS fills the zero fields of a
// hand-built config from it.
type HLSConfig struct {
	// SegmentDuration is the minimum segment duration; a segment always
	// starts at a keyframe, so segments last at least one GOP. Default 1s.
	SegmentDuration time.Duration `yaml:"segment_duration"`

	// PartDuration is the minimum LL-HLS part duration (adjusted by the
	// muxer to the frame duration). Default 200ms.
	PartDuration time.Duration `yaml:"part_duration"`

	// SegmentCount is how many segments each playlist keeps. Low-Latency HLS
	// needs at least 7, the other variants 3. Default 7.
	SegmentCount int `yaml:"segment_count"`

	// IdleTimeout closes a stream's muxer, and releases its hub reader, when
	// no request for the stream came for that long. Default 30s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`

	// FirstSegmentTimeout bounds how long the first request for a stream
	// waits for the muxer's first segment, so that players (and ffmpeg)
	// succeed on their first try instead of reading an empty playlist.
	// After it the request is answered 503. Default 10s.
	FirstSegmentTimeout time.Duration `yaml:"first_segment_timeout"`

	// Variant is the muxer variant: "lowLatency" (fMP4 segments with LL-HLS
	// parts and blocking playlist reloads, which non-LL players play as
	// plain HLS), "fmp4" or "mpegts". Default "lowLatency".
	Variant string `yaml:"variant"`

	// ViewerTimeout is how long a client counts as a viewer of a stream
	// (see Viewers) after its last answered request for one of the
	// stream's files. A playing client reloads the media playlist at least
	// once per target duration (a segment: SegmentDuration or one GOP,
	// whichever is longer) and an LL-HLS client several times a second, so
	// the window must exceed the stream's longest segment: 3 ×
	// SegmentDuration is safe. Default 10s.
	ViewerTimeout time.Duration `yaml:"viewer_timeout"`
}

// DefaultHLSConfig returns the HLS egress defaults.
func DefaultHLSConfig() HLSConfig {
	return HLSConfig{
		SegmentDuration:     time.Second,
		PartDuration:        200 * time.Millisecond,
		SegmentCount:        7,
		IdleTimeout:         30 * time.Second,
		FirstSegmentTimeout: 10 * time.Second,
		Variant:             HLSVariantLowLatency,
		ViewerTimeout:       10 * time.Second,
	}
}

// Validate checks every field and names the bad one by its YAML key.
func (c HLSConfig) Validate() error {
	if _, ok := hlsVariants[c.Variant]; !ok {
		return fmt.Errorf("variant: %q is not lowLatency, fmp4 or mpegts", c.Variant)
	}
	switch {
	case c.SegmentDuration <= 0:
		return errors.New("segment_duration: must be > 0")
	case c.PartDuration <= 0 || c.PartDuration > c.SegmentDuration:
		return fmt.Errorf("part_duration: must be > 0 and ≤ segment_duration (%v)", c.SegmentDuration)
	case c.Variant == HLSVariantLowLatency && c.SegmentCount < 7:
		return errors.New("segment_count: must be ≥ 7 for LL-HLS")
	case c.SegmentCount < 3:
		return errors.New("segment_count: must be ≥ 3")
	case c.IdleTimeout <= 0:
		return errors.New("idle_timeout: must be > 0")
	case c.FirstSegmentTimeout <= 0:
		return errors.New("first_segment_timeout: must be > 0")
	case c.ViewerTimeout <= 0:
		return errors.New("viewer_timeout: must be > 0")
	}
	return nil
}
