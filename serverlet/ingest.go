package serverlet

import (
	"fmt"
	"strings"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/media"
)

// IngestTranscoder turns a publisher's video in a codec the hub does not
// carry (VP8 or VP9 from a WHIP publisher) into H.264 on the ingest node,
// so that every viewer and every rendition can take it: libavcodec
// decodes, libx264 encodes with the serverlets' encoder settings, an IDR
// where the source has a keyframe. It is used by one goroutine.
type IngestTranscoder struct {
	tc       *transcoder
	enc      EncoderConfig
	sps, pps []byte
	w, h     int           // the encoder's picture size, once open
	key      bool          // the frame being decoded is a source keyframe
	out      []*media.Unit // filled by onPacket during Transcode
}

// IngestCodecs are the video codecs NewIngestTranscoder takes, by the
// names WebRTC gives them.
var IngestCodecs = []string{"VP8", "VP9"}

// NewIngestTranscoder opens a decoder of codec ("VP8" or "VP9").
func NewIngestTranscoder(codec string, enc EncoderConfig) (*IngestTranscoder, error) {
	var id astiav.CodecID
	switch strings.ToUpper(codec) {
	case "VP8":
		id = astiav.CodecIDVp8
	case "VP9":
		id = astiav.CodecIDVp9
	default:
		return nil, fmt.Errorf("no ingest transcode from %s (takes %s)", codec, strings.Join(IngestCodecs, ", "))
	}
	if enc.Preset == "" {
		enc.Preset = "veryfast"
	}
	if enc.Threads <= 0 {
		enc.Threads = 1
	}
	t := &IngestTranscoder{enc: enc}
	tc, err := newTranscoder(transcoderSpec{
		decodes: strings.ToUpper(codec), encodes: "H.264", clock: videoClock,
		graph: func(f *astiav.Frame) (string, astiav.FilterArgs, string, string) {
			spec := "[in]format=yuv420p[out]"
			if t.w > 0 {
				// The publisher changed its picture size: libx264 keeps the
				// size it was opened with (a smaller picture than that must
				// never reach it).
				spec = fmt.Sprintf("[in]scale=%d:%d:flags=bicubic,format=yuv420p[out]", t.w, t.h)
			}
			return "buffer", bufferArgs(f, 0), "buffersink", spec
		},
		openEncoder: t.openEncoder,
		frame:       t.frame,
		onPacket:    t.onPacket,
	}, decoderOptions{id: id, threads: enc.Threads, lowDelay: true})
	if err != nil {
		return nil, err
	}
	t.tc = tc
	return t, nil
}

// Transcode takes one compressed frame with its presentation time and
// whether it is a keyframe, and returns the H.264 access units it
// completed (Track 0, PTS = DTS; Received is the caller's to set).
func (t *IngestTranscoder) Transcode(frame []byte, pts time.Duration, key bool) ([]*media.Unit, error) {
	t.out = t.out[:0]
	t.key = key
	ticks := media.DurationToTicks(pts, videoClock)
	if err := t.tc.decode(frame, ticks, ticks, key); err != nil {
		return nil, err
	}
	out := make([]*media.Unit, len(t.out))
	copy(out, t.out)
	return out, nil
}

// ParameterSets are the H.264 SPS and PPS, known after the first frame
// was encoded.
func (t *IngestTranscoder) ParameterSets() (sps, pps []byte) { return t.sps, t.pps }

// Close frees the codecs.
func (t *IngestTranscoder) Close() { t.tc.close() }

func (t *IngestTranscoder) openEncoder(f *astiav.Frame) (*astiav.CodecContext, error) {
	// 0.1 bit per pixel at 30 fps, as the serverlets' estimate: about 2.8
	// Mbit/s at 720p, 900 kbit/s at 640x480.
	est := Pipeline{Width: f.Width(), Height: f.Height(), FPS: 30}
	enc, sps, pps, err := openX264(f.Width(), f.Height(), 30, est.estimateBitrate(), t.enc)
	t.sps, t.pps, t.w, t.h = sps, pps, f.Width(), f.Height()
	return enc, err
}

// frame makes the picture of a source keyframe an IDR.
func (t *IngestTranscoder) frame(f *astiav.Frame) error {
	if t.key {
		f.SetPictureType(astiav.PictureTypeI)
	} else {
		f.SetPictureType(astiav.PictureTypeNone)
	}
	return nil
}

func (t *IngestTranscoder) onPacket(pkt *astiav.Packet) error {
	var au h264.AnnexB
	if err := au.Unmarshal(pkt.Data()); err != nil {
		return fmt.Errorf("libx264 output: %w", err)
	}
	pts := media.TicksToDuration(pkt.Pts(), videoClock)
	t.out = append(t.out, &media.Unit{PTS: pts, DTS: pts, Data: [][]byte(au), Key: pkt.Flags().Has(astiav.PacketFlagKey)})
	return nil
}
