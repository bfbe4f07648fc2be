package ingest

import (
	"fmt"
	"io"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/gradient-cdn/gradient/media"
)

// tsSupported is appended to every codec refusal so that a broadcaster
// knows what to send instead.
const tsSupported = "Gradient carries H.264 video with AAC or Opus audio"

// tsCodecError refuses a stream that carries a codec the hub does not.
type tsCodecError struct{ msg string }

func (e *tsCodecError) Error() string { return e.msg + ": " + tsSupported }

// tsPublishFunc registers the stream in the hub once its description is
// complete (the first IDR brought SPS and PPS).
type tsPublishFunc func(media.Description) (*media.Publisher, error)

// tsDemuxer turns an MPEG-TS byte stream into hub units: H.264 video (its
// parameter sets taken in band) and AAC or Opus audio. Nothing is published
// before the first IDR with SPS and PPS; units start at that IDR, with
// timestamps relative to its DTS.
type tsDemuxer struct {
	r       *mpegts.Reader
	publish tsPublishFunc

	video, audio *media.Track
	videoIdx     int
	audioIdx     int

	td      mpegts.TimeDecoder // 33-bit wrap-around, shared by all tracks
	base    int64              // decoded DTS of the first IDR, 90 kHz
	pub     *media.Publisher
	decErrs uint64
}

// newTSDemuxer reads the PAT/PMT (and the first AAC frame, for its
// configuration) from r and checks the codecs. It fails with a
// *tsCodecError, naming the codec, when the stream carries anything
// but one H.264 track and at most one AAC or Opus track.
func newTSDemuxer(r io.Reader, publish tsPublishFunc) (*tsDemuxer, error) {
	d := &tsDemuxer{r: &mpegts.Reader{R: r}, publish: publish, videoIdx: -1, audioIdx: -1}
	if err := d.r.Initialize(); err != nil {
		return nil, fmt.Errorf("read MPEG-TS program: %w", err)
	}

	var videoTrack, audioTrack *mpegts.Track
	for _, t := range d.r.Tracks() {
		switch c := t.Codec.(type) {
		case *codecs.H264:
			if videoTrack != nil {
				return nil, &tsCodecError{"more than one H264 video track"}
			}
			videoTrack = t
			d.video = &media.Track{Codec: media.CodecH264}
		case *codecs.MPEG4Audio:
			if audioTrack != nil {
				return nil, &tsCodecError{"more than one audio track"}
			}
			audioTrack = t
			conf := c.Config
			d.audio = &media.Track{Codec: media.CodecAAC, AAC: &conf, SampleRate: conf.SampleRate,
				Channels: tsAACChannels(&conf)}
		case *codecs.Opus:
			if audioTrack != nil {
				return nil, &tsCodecError{"more than one audio track"}
			}
			audioTrack = t
			ch := 2
			if c.Desc != nil {
				ch = c.Desc.ChannelCount()
			}
			d.audio = &media.Track{Codec: media.CodecOpus, SampleRate: 48000, Channels: ch}
		default:
			return nil, &tsCodecError{"codec " + tsCodecName(t.Codec) + " not supported"}
		}
	}
	if videoTrack == nil {
		return nil, &tsCodecError{"no H264 video track"}
	}

	d.videoIdx = 0
	d.r.OnDataH264(videoTrack, d.onH264)
	if audioTrack != nil {
		d.audioIdx = 1
		switch d.audio.Codec {
		case media.CodecAAC:
			d.r.OnDataMPEG4Audio(audioTrack, d.onAudio)
		case media.CodecOpus:
			d.r.OnDataOpus(audioTrack, d.onAudio)
		}
	}
	d.r.OnDecodeError(func(error) { d.decErrs++ })
	return d, nil
}

// run demuxes until the reader fails (the connection closed) or the
// stream cannot be published.
func (d *tsDemuxer) run() error {
	for {
		if err := d.r.Read(); err != nil {
			return err
		}
	}
}

// publisher is the hub publisher, nil until the first IDR.
func (d *tsDemuxer) publisher() *media.Publisher { return d.pub }

// decodeErrors counts the non-fatal MPEG-TS errors seen (corrupt packets,
// PES without PTS …).
func (d *tsDemuxer) decodeErrors() uint64 { return d.decErrs }

func (d *tsDemuxer) onH264(pts, dts int64, au [][]byte) error {
	pts, dts = d.td.Decode(pts), d.td.Decode(dts)
	idr := false
	var sps, pps []byte
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeIDR:
			idr = true
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
	}
	if sps != nil {
		d.video.SPS = append([]byte(nil), sps...)
	}
	if pps != nil {
		d.video.PPS = append([]byte(nil), pps...)
	}

	if d.pub == nil {
		if !idr || d.video.SPS == nil || d.video.PPS == nil {
			return nil // wait for a decodable start
		}
		if err := d.start(dts); err != nil {
			return err
		}
	}

	if idr {
		// Make every keyframe decodable on its own, as readers start there.
		au = media.WithParameterSets(au, d.video.SPS, d.video.PPS)
	}
	d.pub.Write(&media.Unit{
		Track:    d.videoIdx,
		PTS:      tsDuration(pts - d.base),
		DTS:      tsDuration(dts - d.base),
		Data:     au,
		Key:      idr,
		Received: time.Now(),
	})
	return nil
}

func (d *tsDemuxer) onAudio(pts int64, data [][]byte) error {
	pts = d.td.Decode(pts)
	if d.pub == nil || pts < d.base {
		return nil // audio before the first IDR has nothing to play with
	}
	t := tsDuration(pts - d.base)
	d.pub.Write(&media.Unit{Track: d.audioIdx, PTS: t, DTS: t, Data: data, Key: true, Received: time.Now()})
	return nil
}

// start publishes the stream at the first decodable IDR.
func (d *tsDemuxer) start(dts int64) error {
	desc := media.Description{Tracks: []*media.Track{{Codec: media.CodecH264, SPS: d.video.SPS, PPS: d.video.PPS}}}
	if d.audio != nil {
		desc.Tracks = append(desc.Tracks, d.audio)
	}
	pub, err := d.publish(desc)
	if err != nil {
		return err
	}
	d.pub, d.base = pub, dts
	return nil
}

// tsDuration converts 90 kHz ticks without overflowing for long streams.
func tsDuration(ticks int64) time.Duration {
	return time.Duration(ticks/90000)*time.Second + time.Duration(ticks%90000)*time.Second/90000
}

// tsAACChannels is the channel count of an AAC configuration (ISO 14496-3
// table 1.19).
func tsAACChannels(c *mpeg4audio.AudioSpecificConfig) int {
	switch {
	case c.ChannelConfig >= 1 && c.ChannelConfig <= 6:
		return int(c.ChannelConfig)
	case c.ChannelConfig == 7:
		return 8
	default:
		return c.ChannelCount //nolint:staticcheck // set from ADTS when the layout is in a PCE
	}
}

// tsCodecName names an MPEG-TS codec for logs and refusals.
func tsCodecName(c codecs.Codec) string {
	switch c.(type) {
	case *codecs.H264:
		return "H264"
	case *codecs.H265:
		return "H265"
	case *codecs.MPEG1Video:
		return "MPEG-1/2 Video"
	case *codecs.MPEG4Video:
		return "MPEG-4 Video"
	case *codecs.MPEG4Audio:
		return "AAC"
	case *codecs.MPEG4AudioLATM:
		return "AAC-LATM"
	case *codecs.MPEG1Audio:
		return "MPEG-1/2 Audio"
	case *codecs.Opus:
		return "Opus"
	case *codecs.AC3:
		return "AC-3"
	case *codecs.EAC3:
		return "E-AC-3"
	case *codecs.KLV:
		return "KLV"
	case *codecs.DVBSubtitle:
		return "DVB subtitles"
	default:
		return "unknown"
	}
}
