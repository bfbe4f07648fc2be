// Package rtpdepay turns the RTP packets of an RTSP session into media
// access units: the one RTP → unit mapping of Gradient, used by the RTSP
// publisher (ingest), the relay client (overlay) and the tests' RTSP
// reader, as mediamtx keeps one to_stream mapping per protocol.
//
// It carries H.264 video (RFC 6184) with PTS and DTS, AAC audio (RFC 3640
// and LATM, RFC 6416) and Opus (RFC 7587). Video starts at the first IDR
// whose parameter sets are known, every keyframe carries its SPS and PPS in
// band, and after a decode error or packet loss video waits for the next
// IDR, so that what comes out always decodes.
package rtpdepay

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpfragmented"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/media"
)

// Supported is appended to every codec refusal.
const Supported = "Gradient carries H.264 video with AAC or Opus audio"

// CodecError refuses a session description for its codecs (an RTSP server
// answers it with 415).
type CodecError struct{ Msg string }

func (e *CodecError) Error() string { return e.Msg + ": " + Supported }

// Track is one carried media of the session: its packets become units of
// track Index of the Stream's description.
type Track struct {
	Index  int // the Unit.Track of its units
	Media  *description.Media
	Format format.Format

	clockRate int64
	auDur     time.Duration // AAC: the duration of one access unit
	h264      *rtph264.Decoder
	aac       *rtpmpeg4audio.Decoder
	latm      *rtpfragmented.Decoder
	// latmConfig is the out-of-band StreamMuxConfig of LATM audio.
	latmConfig *mpeg4audio.StreamMuxConfig
	latmInBand bool
}

// Stream maps the packets of one RTSP session (publishing or playing) to
// units. Decode may be called from several goroutines.
type Stream struct {
	log    *slog.Logger
	desc   media.Description // the video track's SPS/PPS are filled by Description
	tracks []*Track
	video  *Track

	mu       sync.Mutex
	sps, pps []byte
	waitKey  bool // drop video until the next IDR (after loss or a decode error)
	dts      h264.DTSExtractor
	dtsReady bool
	errs     uint64
}

// New prepares the mapping of a session description: its first H.264
// media, and at most one audio media (AAC, AAC-LATM or Opus). Other media
// are ignored (and logged); a description without H.264 video is refused
// with a *CodecError that names the video codec found.
func New(sd *description.Session, log *slog.Logger) (*Stream, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Stream{log: log}
	var refusedVideo []string
	hasAudio := false
	for _, m := range sd.Medias {
		for _, f := range m.Formats {
			t, err := s.addFormat(m, f, &hasAudio)
			if err != nil {
				return nil, err
			}
			if t != nil {
				break // one format per media is enough
			}
			if _, isH264 := f.(*format.H264); !isH264 && m.Type == description.MediaTypeVideo {
				refusedVideo = append(refusedVideo, CodecName(f))
			}
		}
	}
	if s.video == nil {
		if len(refusedVideo) > 0 {
			return nil, &CodecError{Msg: fmt.Sprintf("codec %s not supported", refusedVideo[0])}
		}
		return nil, &CodecError{Msg: "no H264 video in the SDP"}
	}
	if len(refusedVideo) > 0 {
		s.log.Info("rtsp: extra video media ignored", "codecs", refusedVideo)
	}
	return s, nil
}

// CodecName names a format for logs ("H264", "AAC", "MJPEG", "VP8").
func CodecName(f format.Format) string {
	switch f.(type) {
	case *format.MJPEG:
		return "MJPEG"
	case *format.MPEG4Audio:
		return "AAC"
	case *format.MPEG4AudioLATM:
		return "AAC-LATM"
	}
	return f.Codec()
}

// addFormat adds f as a track when it is carried and not yet present. It
// returns nil, nil for a format that is ignored.
func (s *Stream) addFormat(m *description.Media, f format.Format, hasAudio *bool) (*Track, error) {
	t := &Track{Index: len(s.desc.Tracks), Media: m, Format: f, clockRate: int64(f.ClockRate())}
	var tr *media.Track
	switch f := f.(type) {
	case *format.H264:
		if s.video != nil {
			s.log.Info("rtsp: second H264 media ignored")
			return nil, nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("H264 depacketizer: %w", err)
		}
		t.h264 = d
		tr = &media.Track{Codec: media.CodecH264}
		if sps, pps := f.SafeParams(); len(sps) > 0 && len(pps) > 0 {
			if _, _, _, err := (&media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps}).Video(); err == nil {
				s.sps, s.pps = append([]byte(nil), sps...), append([]byte(nil), pps...)
			} else {
				s.log.Info("rtsp: SDP parameter sets unusable, waiting for in-band ones", "err", err)
			}
		}
		s.video = t
	case *format.MPEG4Audio:
		if *hasAudio || f.Config == nil {
			s.log.Info("rtsp: audio media ignored", "codec", "AAC", "reason", audioIgnoredReason(*hasAudio))
			return nil, nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			s.log.Info("rtsp: audio media ignored", "codec", "AAC", "reason", err.Error())
			return nil, nil
		}
		t.aac = d
		tr = aacTrack(f.Config)
	case *format.MPEG4AudioLATM:
		if *hasAudio || f.StreamMuxConfig == nil || len(f.StreamMuxConfig.Programs) == 0 ||
			len(f.StreamMuxConfig.Programs[0].Layers) == 0 || f.StreamMuxConfig.Programs[0].Layers[0].AudioSpecificConfig == nil {
			s.log.Info("rtsp: audio media ignored", "codec", "AAC LATM", "reason", audioIgnoredReason(*hasAudio))
			return nil, nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			s.log.Info("rtsp: audio media ignored", "codec", "AAC LATM", "reason", err.Error())
			return nil, nil
		}
		t.latm, t.latmConfig, t.latmInBand = d, f.StreamMuxConfig, f.CPresent
		tr = aacTrack(f.StreamMuxConfig.Programs[0].Layers[0].AudioSpecificConfig)
	case *format.Opus:
		if *hasAudio {
			s.log.Info("rtsp: audio media ignored", "codec", "Opus", "reason", audioIgnoredReason(true))
			return nil, nil
		}
		ch := f.ChannelCount
		if ch == 0 {
			ch = 2
		}
		tr = &media.Track{Codec: media.CodecOpus, SampleRate: 48000, Channels: ch}
	default:
		if m.Type != description.MediaTypeVideo {
			s.log.Info("rtsp: media ignored", "type", string(m.Type), "codec", CodecName(f))
		}
		return nil, nil
	}
	if t.clockRate <= 0 {
		return nil, nil
	}
	if tr.Codec != media.CodecH264 {
		*hasAudio = true
	}
	if tr.Codec == media.CodecAAC && tr.SampleRate > 0 {
		t.auDur = time.Duration(mpeg4audio.SamplesPerAccessUnit) * time.Second / time.Duration(tr.SampleRate)
	}
	s.desc.Tracks = append(s.desc.Tracks, tr)
	s.tracks = append(s.tracks, t)
	return t, nil
}

func audioIgnoredReason(second bool) string {
	if second {
		return "only one audio track is carried"
	}
	return "no decoder configuration in the SDP"
}

func aacTrack(c *mpeg4audio.AudioSpecificConfig) *media.Track {
	return &media.Track{Codec: media.CodecAAC, AAC: c, SampleRate: c.SampleRate, Channels: aacChannels(c)}
}

// aacChannels is the channel count an AudioSpecificConfig declares.
func aacChannels(c *mpeg4audio.AudioSpecificConfig) int {
	if c.ChannelCount > 0 { //nolint:staticcheck // set by Unmarshal alongside ChannelConfig
		return c.ChannelCount //nolint:staticcheck
	}
	switch {
	case c.ChannelConfig >= 1 && c.ChannelConfig <= 6:
		return int(c.ChannelConfig)
	case c.ChannelConfig == 7:
		return 8
	}
	return 2
}

// Tracks are the carried media, in the order of the description's tracks.
func (s *Stream) Tracks() []*Track { return s.tracks }

// Video is the H.264 track.
func (s *Stream) Video() *Track { return s.video }

// Description returns a copy of the hub description, with the video
// track's parameter sets as known so far; ok is false while they are not
// (then the stream cannot be published yet).
func (s *Stream) Description() (desc media.Description, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.desc.Tracks {
		c := *t
		desc.Tracks = append(desc.Tracks, &c)
	}
	v := desc.Tracks[s.video.Index]
	v.SPS, v.PPS = s.sps, s.pps
	return desc, len(s.sps) > 0 && len(s.pps) > 0
}

// Lost tells the mapping that packets were lost: video waits for the next
// IDR, since the access units around a loss may not decode.
func (s *Stream) Lost(n uint64) {
	s.mu.Lock()
	s.waitKey = true
	s.mu.Unlock()
	s.log.Debug("rtsp packets lost, waiting for the next IDR", "lost", n)
}

// Errors counts the decode errors so far (bad packets, unusable
// timestamps), each of which made video wait for the next IDR.
func (s *Stream) Errors() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs
}

// decodeError makes video wait for the next IDR and logs the first error
// and every hundredth.
func (s *Stream) decodeError(codec string, err error) {
	s.mu.Lock()
	s.waitKey = true
	s.errs++
	n := s.errs
	s.mu.Unlock()
	if n == 1 || n%100 == 0 {
		s.log.Debug("rtsp depacketization error, waiting for the next IDR", "codec", codec, "err", err, "errors", n)
	}
}

// Decode depacketizes one RTP packet of t. pts is the packet's
// presentation time in ticks of the track's clock, as gortsplib's
// PacketPTS2 gives it (ok false: the time is not known yet, the packet
// only feeds the depacketizer). It returns the units the packet completes,
// timed from the session's time origin, Received set to now. Decode
// errors are handled here (logged, counted, video waits for the next IDR),
// never returned.
func (s *Stream) Decode(t *Track, pkt *rtp.Packet, pts int64, ok bool, now time.Time) []*media.Unit {
	switch {
	case t.h264 != nil:
		au, err := t.h264.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
				s.decodeError("H264", err)
			}
			return nil
		}
		if !ok {
			return nil
		}
		return s.video264(t, au, pts, now)
	case t.aac != nil:
		aus, err := t.aac.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
				s.decodeError("AAC", err)
			}
			return nil
		}
		return t.audio(aus, pts, ok, now)
	case t.latm != nil:
		el, err := t.latm.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpfragmented.ErrMorePacketsNeeded) {
				s.decodeError("AAC LATM", err)
			}
			return nil
		}
		ame := mpeg4audio.AudioMuxElement{MuxConfigPresent: t.latmInBand, StreamMuxConfig: t.latmConfig}
		if err := ame.Unmarshal(el); err != nil {
			s.decodeError("AAC LATM", err)
			return nil
		}
		var aus [][]byte
		for _, sub := range ame.Payloads {
			if len(sub) > 0 && len(sub[0]) > 0 {
				aus = append(aus, sub[0][0])
			}
		}
		return t.audio(aus, pts, ok, now)
	default: // Opus: one packet per RTP packet
		if len(pkt.Payload) == 0 {
			return nil
		}
		return t.audio([][]byte{pkt.Payload}, pts, ok, now)
	}
}

// audio makes one unit of each access unit; the access units of one
// packet share its timestamp and follow each other.
func (t *Track) audio(aus [][]byte, pts int64, ok bool, now time.Time) []*media.Unit {
	if !ok {
		return nil
	}
	out := make([]*media.Unit, 0, len(aus))
	for i, au := range aus {
		if len(au) == 0 {
			continue
		}
		d := media.TicksToDuration(pts, t.clockRate) + time.Duration(i)*t.auDur
		out = append(out, &media.Unit{Track: t.Index, PTS: d, DTS: d, Data: [][]byte{au}, Key: true, Received: now})
	}
	return out
}

// video264 turns one H.264 access unit into a unit: it learns in-band
// parameter sets, starts (and restarts after an error) at an IDR whose
// parameter sets are known, puts them in front of every IDR, and computes
// the DTS.
func (s *Stream) video264(t *Track, au [][]byte, pts int64, now time.Time) []*media.Unit {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if string(n) != string(s.sps) {
				var sps h264.SPS
				if err := sps.Unmarshal(n); err == nil {
					s.sps = append([]byte(nil), n...)
				}
			}
		case h264.NALUTypePPS:
			if string(n) != string(s.pps) {
				s.pps = append([]byte(nil), n...)
			}
		}
	}
	key := h264.IsRandomAccess(au)
	if s.waitKey || !s.dtsReady {
		if !key || len(s.sps) == 0 || len(s.pps) == 0 {
			return nil
		}
		s.waitKey = false
		s.dts = h264.DTSExtractor{}
		s.dts.Initialize()
		s.dtsReady = true
	}
	if key {
		au = media.WithParameterSets(au, s.sps, s.pps)
	}
	dts, err := s.dts.Extract(au, pts)
	if err != nil {
		s.waitKey, s.dtsReady = true, false
		s.errs++
		s.log.Debug("rtsp H264 timestamps unusable, waiting for the next IDR", "err", err)
		return nil
	}
	return []*media.Unit{{
		Track:    t.Index,
		PTS:      media.TicksToDuration(pts, t.clockRate),
		DTS:      media.TicksToDuration(dts, t.clockRate),
		Data:     au,
		Key:      key,
		Received: now,
	}}
}
