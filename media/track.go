package media

import (
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// Codec names a track's coding format.
type Codec string

// The codecs a stream may carry. H.264 video is required of every stream;
// audio is optional.
const (
	CodecH264 Codec = "H264"
	CodecAAC  Codec = "AAC"
	CodecOpus Codec = "Opus"
)

// IsVideo tells whether the codec is a video codec.
func (c Codec) IsVideo() bool { return c == CodecH264 }

// Track describes one elementary stream of a published stream.
type Track struct {
	Codec Codec

	// H.264 parameter sets (without start codes), known before publishing.
	SPS []byte
	PPS []byte

	// AAC decoder configuration.
	AAC *mpeg4audio.AudioSpecificConfig

	// Audio channel count (AAC and Opus) and sample rate (AAC; Opus is
	// always 48 kHz).
	Channels   int
	SampleRate int
}

// Video returns the picture size and frame rate the track's SPS declares.
// fps is 0 when the SPS does not say.
func (t *Track) Video() (width, height int, fps float64, err error) {
	if t.Codec != CodecH264 {
		return 0, 0, 0, fmt.Errorf("track is %s, not video", t.Codec)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(t.SPS); err != nil {
		return 0, 0, 0, fmt.Errorf("parse SPS: %w", err)
	}
	return sps.Width(), sps.Height(), sps.FPS(), nil
}

// String describes the track for logs and the API, e.g. "H264 1280x720".
func (t *Track) String() string {
	switch t.Codec {
	case CodecH264:
		if w, h, _, err := t.Video(); err == nil {
			return fmt.Sprintf("H264 %dx%d", w, h)
		}
	case CodecAAC, CodecOpus:
		return fmt.Sprintf("%s %d Hz %dch", t.Codec, t.SampleRate, t.Channels)
	}
	return string(t.Codec)
}

// Description is what a publisher announces: its tracks. Track indices are
// the Unit.Track values.
type Description struct {
	Tracks []*Track
}

// Validate checks the rules every published stream obeys: exactly one H.264
// video track with its parameter sets, and at most one audio track, AAC or
// Opus.
func (d Description) Validate() error {
	video, audio := 0, 0
	for i, t := range d.Tracks {
		switch t.Codec {
		case CodecH264:
			video++
			if len(t.SPS) == 0 || len(t.PPS) == 0 {
				return fmt.Errorf("track %d: H264 without SPS/PPS", i)
			}
			if _, _, _, err := t.Video(); err != nil {
				return fmt.Errorf("track %d: %w", i, err)
			}
		case CodecAAC:
			audio++
			if t.AAC == nil {
				return fmt.Errorf("track %d: AAC without AudioSpecificConfig", i)
			}
		case CodecOpus:
			audio++
		default:
			return fmt.Errorf("track %d: unsupported codec %q", i, t.Codec)
		}
	}
	if video != 1 {
		return fmt.Errorf("a stream needs exactly one H264 video track, got %d", video)
	}
	if audio > 1 {
		return fmt.Errorf("at most one audio track is carried, got %d", audio)
	}
	return nil
}

// VideoTrack returns the index of the H.264 track, or -1.
func (d Description) VideoTrack() int {
	for i, t := range d.Tracks {
		if t.Codec == CodecH264 {
			return i
		}
	}
	return -1
}

// AudioTrack returns the index of the audio track, or -1.
func (d Description) AudioTrack() int {
	for i, t := range d.Tracks {
		if t.Codec == CodecAAC || t.Codec == CodecOpus {
			return i
		}
	}
	return -1
}

// Unit is one access unit of one track. Units are shared between readers
// and must not be modified after Publisher.Write.
type Unit struct {
	Track int           // index into Description.Tracks
	PTS   time.Duration // presentation time, relative to the stream's start
	DTS   time.Duration // decoding time; equals PTS for audio and streams without B-frames

	// Data holds the payload: for H.264 the NAL units of the access unit
	// (without start codes or length prefixes, SPS/PPS included when sent
	// in band); for AAC the raw access units; for Opus the packets.
	Data [][]byte

	// Key marks a random-access point: an IDR for video, every unit for audio.
	Key bool

	// Received is when the node received the unit's last byte, taken by
	// ingest; egress measures the node's own latency from it.
	Received time.Time
}

// Size is the payload size in bytes.
func (u *Unit) Size() int {
	n := 0
	for _, d := range u.Data {
		n += len(d)
	}
	return n
}
