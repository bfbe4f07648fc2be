package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
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

// rtspSupported is appended to every codec refusal.
const rtspSupported = "Gradient carries H.264 video with AAC or Opus audio"

// rtspCodecError refuses an ANNOUNCE for its codecs (answered 415).
type rtspCodecError struct{ msg string }

func (e *rtspCodecError) Error() string { return e.msg + ": " + rtspSupported }

// rtspInTrack is one carried media of a publisher: where its packets come
// from, how they are depacketized and which hub track they feed.
type rtspInTrack struct {
	track     int // index into the publisher's Description
	media     *description.Media
	format    format.Format
	clockRate int64

	h264 *rtph264.Decoder
	aac  *rtpmpeg4audio.Decoder
	latm *rtpfragmented.Decoder
	// latmConfig is the out-of-band StreamMuxConfig of LATM audio.
	latmConfig *mpeg4audio.StreamMuxConfig
	latmInBand bool
}

// rtspPublisher turns one RECORD session's RTP packets into hub units.
type rtspPublisher struct {
	s      *RTSPServer
	log    *slog.Logger
	path   string
	source string

	session *gortsplib.ServerSession
	desc    media.Description
	tracks  []*rtspInTrack
	video   *rtspInTrack

	mu       sync.Mutex
	pub      *media.Publisher // nil until the H.264 parameter sets are known
	closed   bool
	sps, pps []byte
	waitKey  bool // drop video until the next IDR (after loss or a decode error)
	hasBase  bool
	base     time.Duration // DTS of the first unit written; units are relative to it
	dts      h264.DTSExtractor
	dtsReady bool
	drops    uint64
}

// newRTSPPublisher checks an ANNOUNCEd SDP and prepares the tracks it
// carries. It refuses an SDP without H.264 video with an *rtspCodecError
// that names the codec found.
func newRTSPPublisher(s *RTSPServer, ss *gortsplib.ServerSession, path, source string, sd *description.Session) (*rtspPublisher, error) {
	p := &rtspPublisher{
		s:       s,
		log:     s.log.With("stream", path, "source", source),
		path:    path,
		source:  source,
		session: ss,
	}
	var refusedVideo []string
	hasAudio := false
	for _, m := range sd.Medias {
		for _, f := range m.Formats {
			t, err := p.addFormat(m, f, &hasAudio)
			if err != nil {
				return nil, err
			}
			if t != nil {
				break // one format per media is enough
			}
			if _, isH264 := f.(*format.H264); !isH264 && m.Type == description.MediaTypeVideo {
				refusedVideo = append(refusedVideo, rtspCodecName(f))
			}
		}
	}
	if p.video == nil {
		if len(refusedVideo) > 0 {
			return nil, &rtspCodecError{msg: fmt.Sprintf("codec %s not supported", refusedVideo[0])}
		}
		return nil, &rtspCodecError{msg: "no H264 video in the SDP"}
	}
	if len(refusedVideo) > 0 {
		p.log.Info("rtsp publish: extra video media ignored", "codecs", refusedVideo)
	}
	return p, nil
}

// rtspCodecName names a format for logs ("H265", "MJPEG", "VP8").
func rtspCodecName(f format.Format) string {
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
func (p *rtspPublisher) addFormat(m *description.Media, f format.Format, hasAudio *bool) (*rtspInTrack, error) {
	t := &rtspInTrack{track: len(p.desc.Tracks), media: m, format: f, clockRate: int64(f.ClockRate())}
	var tr *media.Track
	switch f := f.(type) {
	case *format.H264:
		if p.video != nil {
			p.log.Info("rtsp publish: second H264 media ignored")
			return nil, nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("H264 depacketizer: %w", err)
		}
		t.h264 = d
		sps, pps := f.SafeParams()
		tr = &media.Track{Codec: media.CodecH264}
		if len(sps) > 0 && len(pps) > 0 {
			if _, _, _, err := (&media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps}).Video(); err == nil {
				p.sps, p.pps = append([]byte(nil), sps...), append([]byte(nil), pps...)
			} else {
				p.log.Info("rtsp publish: SDP parameter sets unusable, waiting for in-band ones", "err", err)
			}
		}
		p.video = t
	case *format.MPEG4Audio:
		if *hasAudio || f.Config == nil {
			p.log.Info("rtsp publish: audio media ignored", "codec", "AAC", "reason", rtspAudioIgnoredReason(*hasAudio))
			return nil, nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			p.log.Info("rtsp publish: audio media ignored", "codec", "AAC", "reason", err.Error())
			return nil, nil
		}
		t.aac = d
		tr = &media.Track{Codec: media.CodecAAC, AAC: f.Config, SampleRate: f.Config.SampleRate, Channels: rtspAACChannels(f.Config)}
	case *format.MPEG4AudioLATM:
		if *hasAudio || f.StreamMuxConfig == nil || len(f.StreamMuxConfig.Programs) == 0 ||
			len(f.StreamMuxConfig.Programs[0].Layers) == 0 || f.StreamMuxConfig.Programs[0].Layers[0].AudioSpecificConfig == nil {
			p.log.Info("rtsp publish: audio media ignored", "codec", "AAC LATM", "reason", rtspAudioIgnoredReason(*hasAudio))
			return nil, nil
		}
		d, err := f.CreateDecoder()
		if err != nil {
			p.log.Info("rtsp publish: audio media ignored", "codec", "AAC LATM", "reason", err.Error())
			return nil, nil
		}
		conf := f.StreamMuxConfig.Programs[0].Layers[0].AudioSpecificConfig
		t.latm, t.latmConfig, t.latmInBand = d, f.StreamMuxConfig, f.CPresent
		tr = &media.Track{Codec: media.CodecAAC, AAC: conf, SampleRate: conf.SampleRate, Channels: rtspAACChannels(conf)}
	case *format.Opus:
		if *hasAudio {
			p.log.Info("rtsp publish: audio media ignored", "codec", "Opus", "reason", rtspAudioIgnoredReason(true))
			return nil, nil
		}
		ch := f.ChannelCount
		if ch == 0 {
			ch = 2
		}
		tr = &media.Track{Codec: media.CodecOpus, SampleRate: 48000, Channels: ch}
	default:
		if m.Type != description.MediaTypeVideo {
			p.log.Info("rtsp publish: media ignored", "type", string(m.Type), "codec", rtspCodecName(f))
		}
		return nil, nil
	}
	if t.clockRate <= 0 {
		return nil, nil
	}
	if tr.Codec != media.CodecH264 {
		*hasAudio = true
	}
	p.desc.Tracks = append(p.desc.Tracks, tr)
	p.tracks = append(p.tracks, t)
	return t, nil
}

func rtspAudioIgnoredReason(second bool) string {
	if second {
		return "only one audio track is carried"
	}
	return "no decoder configuration in the SDP"
}

// rtspAACChannels is the channel count an AudioSpecificConfig declares.
func rtspAACChannels(c *mpeg4audio.AudioSpecificConfig) int {
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

// publishIfReady publishes into the hub once the H.264 parameter sets are
// known. Called with p.mu not held.
func (p *rtspPublisher) publishIfReady() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.publishLocked()
}

func (p *rtspPublisher) publishLocked() error {
	if p.pub != nil || p.closed || len(p.sps) == 0 || len(p.pps) == 0 {
		return nil
	}
	v := p.desc.Tracks[p.video.track]
	v.SPS, v.PPS = p.sps, p.pps
	pub, err := p.s.hub.Publish(p.path, p.desc, p.source)
	if err != nil {
		v.SPS, v.PPS = nil, nil
		return fmt.Errorf("rtsp publish %s: %w", p.path, err)
	}
	p.pub = pub
	return nil
}

// record hooks the session's packets; called on RECORD.
func (p *rtspPublisher) record(ss *gortsplib.ServerSession) error {
	setup := map[*description.Media]bool{}
	for _, m := range ss.SetuppedMedias() {
		setup[m] = true
	}
	if !setup[p.video.media] {
		return errors.New("the H264 media was not set up")
	}
	var codecs []string
	for _, t := range p.tracks {
		codecs = append(codecs, rtspCodecName(t.format))
		if !setup[t.media] {
			p.log.Info("rtsp publish: media announced but not set up", "codec", rtspCodecName(t.format))
			continue
		}
		t := t
		ss.OnPacketRTP(t.media, t.format, func(pkt *rtp.Packet) {
			p.onPacket(ss, t, pkt)
		})
	}
	p.log.Info("rtsp publisher recording", "transport", rtspTransport(ss.SetuppedTransport()), "codecs", codecs)
	return nil
}

// lost is told of lost packets: video waits for the next IDR.
func (p *rtspPublisher) lost(n uint64) {
	p.mu.Lock()
	p.waitKey = true
	p.mu.Unlock()
	p.log.Debug("rtsp packets lost, waiting for the next IDR", "lost", n)
}

// close ends the stream; readers are told and the path can be published again.
func (p *rtspPublisher) close(reason error) {
	p.mu.Lock()
	p.closed = true
	pub := p.pub
	p.pub = nil
	p.mu.Unlock()
	if pub != nil {
		pub.Close()
	}
	p.log.Info("rtsp publisher gone", "reason", fmt.Sprint(reason))
}

// rtspDuration converts ticks of a clock to a duration without overflow.
func rtspDuration(ticks, clockRate int64) time.Duration {
	sec, rem := ticks/clockRate, ticks%clockRate
	return time.Duration(sec)*time.Second + time.Duration(rem)*time.Second/time.Duration(clockRate)
}

// onPacket depacketizes one RTP packet; it runs on gortsplib's reading
// goroutine and never panics out of it.
func (p *rtspPublisher) onPacket(ss *gortsplib.ServerSession, t *rtspInTrack, pkt *rtp.Packet) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("rtsp packet handling panic, closing the publisher", "panic", fmt.Sprint(r))
			ss.Close()
		}
	}()
	// Every packet goes through the time decoder, which follows the
	// timestamps' wrap-around.
	pts, ptsOK := ss.PacketPTS2(t.media, pkt)
	now := time.Now()
	switch {
	case t.h264 != nil:
		au, err := t.h264.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
				p.decodeError("H264", err)
			}
			return
		}
		if ptsOK {
			p.writeVideo(t, au, pts, now)
		}
	case t.aac != nil:
		aus, err := t.aac.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
				p.decodeError("AAC", err)
			}
			return
		}
		if ptsOK {
			p.writeAudio(t, aus, pts, rtspAACDuration(p.desc.Tracks[t.track]), now)
		}
	case t.latm != nil:
		el, err := t.latm.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpfragmented.ErrMorePacketsNeeded) {
				p.decodeError("AAC LATM", err)
			}
			return
		}
		ame := mpeg4audio.AudioMuxElement{MuxConfigPresent: t.latmInBand, StreamMuxConfig: t.latmConfig}
		if err := ame.Unmarshal(el); err != nil {
			p.decodeError("AAC LATM", err)
			return
		}
		var aus [][]byte
		for _, sub := range ame.Payloads {
			if len(sub) > 0 && len(sub[0]) > 0 {
				aus = append(aus, sub[0][0])
			}
		}
		if ptsOK {
			p.writeAudio(t, aus, pts, rtspAACDuration(p.desc.Tracks[t.track]), now)
		}
	default: // Opus: one packet per RTP packet
		if ptsOK && len(pkt.Payload) > 0 {
			p.writeAudio(t, [][]byte{pkt.Payload}, pts, 0, now)
		}
	}
}

func (p *rtspPublisher) decodeError(codec string, err error) {
	p.mu.Lock()
	p.waitKey = true
	p.drops++
	n := p.drops
	p.mu.Unlock()
	if n == 1 || n%100 == 0 {
		p.log.Debug("rtsp depacketization error, waiting for the next IDR", "codec", codec, "err", err, "errors", n)
	}
}

// writeVideo writes one H.264 access unit, publishing the stream at the
// first IDR whose parameter sets are known.
func (p *rtspPublisher) writeVideo(t *rtspInTrack, au [][]byte, pts int64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	hasSPS, hasPPS := false, false
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			hasSPS = true
			if string(n) != string(p.sps) {
				var sps h264.SPS
				if err := sps.Unmarshal(n); err == nil {
					p.sps = append([]byte(nil), n...)
				}
			}
		case h264.NALUTypePPS:
			hasPPS = true
			p.pps = append(p.pps[:0:0], n...)
		}
	}
	key := h264.IsRandomAccess(au)
	if p.pub == nil {
		if !key {
			return // nothing is buffered before the first IDR
		}
		if err := p.publishLocked(); err != nil {
			p.log.Info("rtsp publish failed, closing the publisher", "err", err)
			p.closed = true
			p.session.Close()
			return
		}
		if p.pub == nil {
			return // parameter sets still unknown
		}
	}
	if p.waitKey || !p.dtsReady {
		if !key {
			return
		}
		p.waitKey = false
		p.dts = h264.DTSExtractor{}
		p.dts.Initialize()
		p.dtsReady = true
	}
	if key && (!hasSPS || !hasPPS) {
		// Readers joining at this IDR need the parameter sets in band.
		au = append([][]byte{p.sps, p.pps}, au...)
	}
	dts, err := p.dts.Extract(au, pts)
	if err != nil {
		p.waitKey, p.dtsReady = true, false
		p.drops++
		p.log.Debug("rtsp H264 timestamps unusable, waiting for the next IDR", "err", err)
		return
	}
	d := rtspDuration(dts, t.clockRate)
	if !p.hasBase {
		p.base, p.hasBase = d, true
	}
	p.pub.Write(&media.Unit{
		Track:    t.track,
		PTS:      rtspDuration(pts, t.clockRate) - p.base,
		DTS:      d - p.base,
		Data:     au,
		Key:      key,
		Received: now,
	})
}

// rtspAACDuration is the duration of one AAC access unit of the track.
func rtspAACDuration(tr *media.Track) time.Duration {
	if tr.SampleRate <= 0 {
		return 0
	}
	return time.Duration(mpeg4audio.SamplesPerAccessUnit) * time.Second / time.Duration(tr.SampleRate)
}

// writeAudio writes audio units; auDur spaces the units of one packet
// (several AAC access units share one RTP timestamp).
func (p *rtspPublisher) writeAudio(t *rtspInTrack, aus [][]byte, pts int64, auDur time.Duration, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.pub == nil || !p.hasBase {
		return // audio starts with the first video IDR
	}
	for i, au := range aus {
		if len(au) == 0 {
			continue
		}
		d := rtspDuration(pts, t.clockRate) + time.Duration(i)*auDur - p.base
		if d < 0 {
			continue
		}
		p.pub.Write(&media.Unit{Track: t.track, PTS: d, DTS: d, Data: [][]byte{au}, Key: true, Received: now})
	}
}
