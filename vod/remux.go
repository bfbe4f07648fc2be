package vod

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
)

// PackageConfig says how a title is cut.
type PackageConfig struct {
	// SegmentDuration is the target segment length: a segment is cut at
	// the first keyframe at or after each multiple of it.
	SegmentDuration time.Duration `yaml:"segment_duration" json:"segment_duration"`
	// Ladder are the renditions encoded besides the source, each only
	// when it is lower than the source; nil or empty for none.
	Ladder []LadderRung `yaml:"ladder" json:"ladder"`
}

// DefaultPackageConfig cuts 4 s segments with the default ladder.
func DefaultPackageConfig() PackageConfig {
	return PackageConfig{SegmentDuration: 4 * time.Second, Ladder: DefaultLadder()}
}

// ErrNeedsTranscode is wrapped by the error Package returns for a source
// it would have to transcode but cannot: this FFmpeg lacks the decoder for
// its codec (named in the error) or the libx264 / AAC encoder.
var ErrNeedsTranscode = errors.New("needs transcoding")

const (
	videoTimescale = 90000
	videoTrackID   = 1
	audioTrackID   = 2
	// audioLag is how far video may run ahead of audio before a segment is
	// cut without waiting for the audio that belongs in it (a source whose
	// audio stops early).
	audioLag = 10 * time.Second
)

// Package packages src into fMP4 HLS, first the rendition named "source":
// one init section and media segments that each start at a keyframe, cut
// at the first keyframe at or after each multiple of cfg.SegmentDuration,
// every chunk put into out as soon as it is complete (one segment per
// rendition is held in memory at a time). Then one rendition per rung of
// cfg.Ladder lower than the source, tallest first: H.264 from libx264 at
// the rung's height and bitrate, all rungs encoded from one decode of the
// source (one split filter graph), with IDR frames forced on exactly the
// frames where the source's segments start and the source's time origin,
// so that every rendition's segments cover the same media time; each
// carries the source's audio.
//
// H.264 (8-bit 4:2:0) video is copied packet for packet, as are AAC and
// Opus audio; any other video FFmpeg decodes is transcoded to H.264 with
// libx264 (IDR frames forced on the segment grid; decoded once with the
// ladder's rungs when there are any) and any other audio to AAC. progress
// (may be nil) hears 0..100 by media time read, for the whole job; cancelling
// ctx stops packaging within a packet. A file that is not media gives an
// error wrapping ErrNotMedia, one without video ErrNoVideo, one cut short
// an error saying "truncated".
func Package(ctx context.Context, src string, cfg PackageConfig, out ChunkPutter, progress func(pct int), log *slog.Logger) (*Manifest, error) {
	if cfg.SegmentDuration <= 0 {
		cfg.SegmentDuration = DefaultPackageConfig().SegmentDuration
	}
	if progress == nil {
		progress = func(int) {}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in, err := openInput(src)
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", src, err)
	}
	defer in.close()
	info := in.info()
	stop := context.AfterFunc(ctx, in.intr.Interrupt)
	defer stop()

	// Each track is copied when fMP4 HLS can carry its codec, else
	// transcoded (H.264 / AAC).
	var vst, ast *stage
	defer func() {
		for _, st := range []*stage{vst, ast} {
			if st != nil {
				st.close()
			}
		}
	}()
	video := streamSpec(in.video)
	if !phonesPlay(in.video) {
		if vst, err = newVideoStage(in, cfg); err != nil {
			return nil, fmt.Errorf("package %s: transcode %s video: %w", src, info.VideoCodec, err)
		}
		video = trackSpec{tb: vst.enc.TimeBase(), codec: astiav.CodecIDH264, extra: vst.enc.ExtraData(),
			width: vst.enc.Width(), height: vst.enc.Height()}
	}
	var audio *trackSpec
	switch info.AudioCodec {
	case "":
	case "aac", "opus":
		a := streamSpec(in.audio)
		audio = &a
	default:
		if ast, err = newAudioStage(in); err != nil {
			return nil, fmt.Errorf("package %s: transcode %s audio: %w", src, info.AudioCodec, err)
		}
		audio = &trackSpec{tb: ast.enc.TimeBase(), codec: astiav.CodecIDAac, extra: ast.enc.ExtraData(),
			rate: transcodeRate, channels: 2}
	}
	r, err := newRemuxer(in, video, audio, cfg, out, log)
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", src, err)
	}
	defer r.freePending()

	// The ladder: rungs lower than the source, from one decode of it.
	var lad *ladder
	srcFromLadder := false
	if rungs := rungsFor(cfg.Ladder, video.height); len(rungs) > 0 {
		var keys keyer = cutKeyer{src: r}
		if vst != nil {
			keys = newGridKeyer(cfg.SegmentDuration, in.video.TimeBase())
		}
		if lad, err = newLadder(in, rungs, video.width, video.height, keys); err != nil {
			return nil, fmt.Errorf("package %s: ladder: %w", src, err)
		}
		defer lad.close()
		for i, rung := range rungs {
			enc := lad.encs[i]
			rr, err := newRemuxer(in, trackSpec{tb: enc.TimeBase(), codec: astiav.CodecIDH264, extra: enc.ExtraData(),
				width: enc.Width(), height: enc.Height()}, audio, cfg, out, log)
			if err != nil {
				return nil, fmt.Errorf("package %s: ladder %s: %w", src, rung.Name, err)
			}
			defer rr.freePending()
			rr.rendition.Name = rung.Name
			rr.originFrom = r
			lad.out = append(lad.out, rr)
		}
		if vst != nil {
			// One decode for every rendition: the source's encoder moves
			// into the ladder's graph, keyed on the same grid.
			lad.feedSource(vst.enc, vst.enc.Width(), vst.enc.Height(), r)
			vst.enc = nil
			vst.close()
			vst, srcFromLadder = nil, true
		}
	}
	all := []*remuxer{r}
	if lad != nil {
		for _, rr := range lad.out {
			if rr != r {
				all = append(all, rr)
			}
		}
	}
	handle, drain := r.packetsTo(all, vst, ast, lad, srcFromLadder)
	log.Info("packaging", "src", src, "container", info.Container, "video", info.VideoCodec,
		"audio", info.AudioCodec, "size", fmt.Sprintf("%dx%d", info.Width, info.Height), "duration", info.Duration,
		"transcode_video", vst != nil || srcFromLadder, "transcode_audio", ast != nil, "ladder", len(all)-1)
	m, err := r.run(ctx, info.Duration, progress, handle, drain, all[1:])
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", src, err)
	}
	progress(100)
	log.Info("packaged", "src", src, "segments", len(m.Renditions[0].Segments), "duration", m.Duration,
		"bytes", m.Bytes(), "kbps", m.Renditions[0].Kbps, "renditions", len(m.Renditions))
	return m, nil
}

// sample is one access unit waiting for its segment; times are in the
// track's timescale, relative to the title's origin.
type sample struct {
	dts, pts int64
	dur      uint32
	key      bool
	payload  []byte
}

type track struct {
	id    int
	tb    astiav.Rational // of the packets handed to the track
	scale int64
	queue []sample
	// audio: the running decode time, so that sample durations follow the
	// codec's frame size, not the container's rounded timestamps.
	next      int64
	frameSize int64
	eof       bool
}

func (t *track) toScale(ts int64) int64 {
	return astiav.RescaleQ(ts, t.tb, astiav.NewRational(1, int(t.scale)))
}

func (t *track) seconds(v int64) time.Duration {
	return time.Duration(float64(v) / float64(t.scale) * float64(time.Second))
}

// cut is a decided segment boundary: the video keyframe at queue index idx
// whose presentation time is pts (video timescale).
type cut struct {
	idx int
	pts int64
}

type remuxer struct {
	in    *input
	cfg   PackageConfig
	out   ChunkPutter
	log   *slog.Logger
	video *track
	audio *track

	// H.264 framing of the source: AVCC with nalLen-byte lengths, or Annex B.
	annexB   bool
	nalLen   int
	sps, pps []byte
	// AAC: in ADTS frames (MPEG-TS sources) rather than raw.
	adts      bool
	aacConfig *mpeg4audio.AudioSpecificConfig
	opusCh    int

	started  bool
	early    []earlyAudio
	originTS int64 // first keyframe's DTS in the video track's time base
	// originPTS is the first keyframe's PTS, cutTS those of the keyframes
	// cut at (video track time base): what a ladder keys its rungs on.
	originPTS int64
	cutTS     map[int64]bool
	// originFrom, for a ladder rung, is the source rendition's remuxer:
	// the rung shares its time origin so that both cover the same media
	// time; packets that come before the source has started wait in
	// pending.
	originFrom *remuxer
	pending    []*astiav.Packet
	boundary   int64 // next cut time, video timescale
	segStart   int64 // current segment's first PTS
	cuts       []cut
	initDone   bool
	seq        uint32

	seg       segmentWriter
	segTracks []segTrack

	rendition Rendition
	bytes     int64
	maxEnd    int64 // end of the latest video sample (PTS + duration)
}

// trackSpec is what the remuxer needs of a track: the time base of its
// packets and its codec's parameters.
type trackSpec struct {
	tb            astiav.Rational
	codec         astiav.CodecID
	extra         []byte
	width, height int
	rate          int
	channels      int
}

func streamSpec(s *astiav.Stream) trackSpec {
	cp := s.CodecParameters()
	return trackSpec{tb: s.TimeBase(), codec: cp.CodecID(), extra: cp.ExtraData(), width: cp.Width(), height: cp.Height(),
		rate: cp.SampleRate(), channels: cp.ChannelLayout().NbChannels()}
}

// newRemuxer packages H.264 packets of v and AAC or Opus packets of a (nil
// for none), read from in.
func newRemuxer(in *input, v trackSpec, a *trackSpec, cfg PackageConfig, out ChunkPutter, log *slog.Logger) (*remuxer, error) {
	r := &remuxer{in: in, cfg: cfg, out: out, log: log}
	r.video = &track{id: videoTrackID, tb: v.tb, scale: videoTimescale}
	r.rendition = Rendition{Name: "source", Width: v.width, Height: v.height}
	if err := r.parseAVCC(v.extra); err != nil {
		return nil, err
	}
	if a != nil {
		if a.rate <= 0 {
			return nil, fmt.Errorf("audio stream %s without a sample rate", a.codec.Name())
		}
		r.audio = &track{id: audioTrackID, tb: a.tb, scale: int64(a.rate)}
		switch a.codec {
		case astiav.CodecIDAac:
			r.audio.frameSize = 1024
			if ed := a.extra; len(ed) > 0 {
				var c mpeg4audio.AudioSpecificConfig
				if err := c.Unmarshal(ed); err != nil {
					return nil, fmt.Errorf("AAC AudioSpecificConfig: %w", err)
				}
				r.aacConfig = &c
				if c.FrameLengthFlag {
					r.audio.frameSize = 960
				}
			} else {
				r.adts = true // config comes with the first frame
			}
		case astiav.CodecIDOpus:
			r.audio.scale = 48000 // Opus in MP4 always counts 48 kHz
			r.opusCh = a.channels
			if r.opusCh <= 0 {
				r.opusCh = 2
			}
		default:
			return nil, fmt.Errorf("audio codec %s cannot go into fMP4 HLS as it is", a.codec.Name())
		}
	}
	r.boundary = int64(cfg.SegmentDuration.Seconds() * videoTimescale)
	return r, nil
}

// parseAVCC reads the avcC record (ISO 14496-15) FFmpeg hands over as
// extradata for MP4 and Matroska sources; Annex B extradata (or none, as in
// MPEG-TS) means the packets carry start codes and parameter sets in band.
func (r *remuxer) parseAVCC(ed []byte) error {
	if len(ed) == 0 || ed[0] != 1 {
		r.annexB = true
		if len(ed) > 0 {
			var au h264.AnnexB
			if err := au.Unmarshal(ed); err == nil {
				r.takeParams(au)
			}
		}
		return nil
	}
	if len(ed) < 7 {
		return fmt.Errorf("H.264 avcC record of %d bytes is too short", len(ed))
	}
	r.nalLen = int(ed[4]&3) + 1
	pos := 5
	read := func() ([][]byte, error) {
		if pos >= len(ed) {
			return nil, errors.New("H.264 avcC record truncated")
		}
		n := int(ed[pos])
		pos++
		if pos == 6 {
			n &= 0x1f
		}
		var out [][]byte
		for range n {
			if pos+2 > len(ed) {
				return nil, errors.New("H.264 avcC record truncated")
			}
			l := int(binary.BigEndian.Uint16(ed[pos:]))
			pos += 2
			if pos+l > len(ed) {
				return nil, errors.New("H.264 avcC record truncated")
			}
			out = append(out, bytes.Clone(ed[pos:pos+l]))
			pos += l
		}
		return out, nil
	}
	spss, err := read()
	if err != nil {
		return err
	}
	ppss, err := read()
	if err != nil {
		return err
	}
	if len(spss) == 0 || len(ppss) == 0 || len(spss[0]) < 4 {
		return errors.New("H.264 avcC record without SPS and PPS")
	}
	r.sps, r.pps = spss[0], ppss[0]
	return nil
}

func (r *remuxer) takeParams(nalus [][]byte) {
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if r.sps == nil && len(n) >= 4 {
				r.sps = bytes.Clone(n)
			}
		case h264.NALUTypePPS:
			if r.pps == nil {
				r.pps = bytes.Clone(n)
			}
		}
	}
}

// videoPayload turns a packet into an fMP4 H.264 sample: NAL units with
// 4-byte lengths. AVCC packets with 4-byte lengths are copied byte for byte.
func (r *remuxer) videoPayload(data []byte) ([]byte, error) {
	if !r.annexB && r.nalLen == 4 {
		return data, nil // Packet.Data is already a copy
	}
	var nalus [][]byte
	if r.annexB {
		var au h264.AnnexB
		if err := au.Unmarshal(data); err != nil {
			return nil, fmt.Errorf("H.264 Annex B packet: %w", err)
		}
		nalus = au
		r.takeParams(nalus)
	} else {
		for p := data; len(p) > 0; {
			if len(p) < r.nalLen {
				return nil, errors.New("H.264 packet: truncated NAL unit length")
			}
			var l int
			for i := range r.nalLen {
				l = l<<8 | int(p[i])
			}
			p = p[r.nalLen:]
			if l > len(p) {
				return nil, errors.New("H.264 packet: NAL unit longer than the packet")
			}
			nalus = append(nalus, p[:l])
			p = p[l:]
		}
	}
	b, err := h264.AVCC(nalus).Marshal()
	if err != nil {
		return nil, fmt.Errorf("H.264 packet: %w", err)
	}
	return b, nil
}

// run reads the input to its end, handing each packet to handle (which
// feeds the tracks), then drain (which feeds what encoders still hold), and
// writes the segments as they complete.
func (r *remuxer) run(ctx context.Context, duration time.Duration, progress func(int),
	handle func(*astiav.Packet) error, drain func() error, rungs []*remuxer) (*Manifest, error) {
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	lastPct := -1
	var reached time.Duration
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("stopped after %s of media: %w", reached.Round(time.Millisecond), context.Cause(ctx))
		}
		if err := r.in.fc.ReadFrame(pkt); err != nil {
			if errors.Is(err, astiav.ErrEof) {
				break
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("stopped after %s of media: %w", reached.Round(time.Millisecond), context.Cause(ctx))
			}
			return nil, fmt.Errorf("read after %s of media (truncated or damaged file?): FFmpeg: %w", reached.Round(time.Millisecond), err)
		}
		err := handle(pkt)
		pkt.Unref()
		if err != nil {
			return nil, err
		}
		if r.started && len(r.video.queue) > 0 {
			reached = r.video.seconds(r.video.queue[len(r.video.queue)-1].dts)
		}
		if duration > 0 {
			if pct := min(99, int(100*reached/duration)); pct > lastPct {
				lastPct = pct
				progress(pct)
			}
		}
		if err := r.flushReady(false); err != nil {
			return nil, err
		}
		for _, rr := range rungs {
			if err := rr.flushReady(false); err != nil {
				return nil, err
			}
		}
	}
	if drain != nil {
		if err := drain(); err != nil {
			return nil, err
		}
	}
	if !r.started {
		return nil, errors.New("no H.264 keyframe in the video stream (empty or damaged file?)")
	}
	for _, rr := range rungs {
		if len(rr.pending) > 0 {
			if err := rr.replayPending(); err != nil {
				return nil, err
			}
		}
		if !rr.started {
			return nil, fmt.Errorf("ladder %s: no picture came out of its encoder", rr.rendition.Name)
		}
	}
	for _, rr := range append([]*remuxer{r}, rungs...) {
		rr.video.eof = true
		if rr.audio != nil {
			rr.audio.eof = true
		}
		rr.finishDurations()
		if err := rr.flushReady(true); err != nil {
			return nil, err
		}
	}
	// A file cut short still opens when its index comes first (MP4 with
	// moov up front): its video ends well before what the index declares.
	// The video stream's own duration is the measure when the container
	// gives one, so audio that outlasts the video is no truncation.
	end, declared := r.video.seconds(r.maxEnd), duration
	if d := r.in.video.Duration(); d > 0 && d != astiav.NoPtsValue {
		declared = tsDuration(d, r.in.video.TimeBase())
	}
	if declared > 0 && end < declared-r.cfg.SegmentDuration-time.Second {
		return nil, fmt.Errorf("truncated file: its video ends at %s of the %s its %s container declares",
			end.Round(time.Millisecond), declared.Round(time.Millisecond), r.in.fc.InputFormat().Name())
	}
	m := r.manifest()
	for _, rr := range rungs {
		mr := rr.manifest()
		m.Renditions = append(m.Renditions, mr.Renditions...)
		m.TargetDuration = max(m.TargetDuration, mr.TargetDuration)
	}
	return m, nil
}

// phonesPlay reports whether the video stream can be copied: H.264 in
// 8-bit 4:2:0, what every phone and browser decodes (High 10 or 4:2:2
// H.264 is transcoded like any other codec).
func phonesPlay(s *astiav.Stream) bool {
	cp := s.CodecParameters()
	if cp.CodecID() != astiav.CodecIDH264 {
		return false
	}
	switch cp.PixelFormat() {
	case astiav.PixelFormatYuv420P, astiav.PixelFormatYuvj420P, astiav.PixelFormatNone:
		return true
	}
	return false
}

// packetsTo gives the packet handler and the drain: video goes to the
// source rendition r (through vst when it is transcoded, through the
// ladder when srcFromLadder) and to the ladder (nil for none), audio to
// every rendition in all (through ast when it is transcoded). Either stage
// may be nil: that track is copied.
func (r *remuxer) packetsTo(all []*remuxer, vst, ast *stage, lad *ladder, srcFromLadder bool) (handle func(*astiav.Packet) error, drain func() error) {
	audioOut := func(pkt *astiav.Packet) error {
		for _, rr := range all {
			if err := rr.audioPacket(pkt); err != nil {
				return err
			}
		}
		return nil
	}
	if vst != nil {
		vst.emit = r.videoPacket
	}
	if ast != nil {
		ast.emit = audioOut
	}
	handle = func(pkt *astiav.Packet) error {
		switch {
		case pkt.StreamIndex() == r.in.video.Index():
			var err error
			switch {
			case vst != nil:
				err = vst.decode(pkt)
			case srcFromLadder:
			default:
				// First the source, which decides its cuts, then the
				// ladder, which keys its rungs on them.
				err = r.videoPacket(pkt)
			}
			if err == nil && lad != nil {
				err = lad.decode(pkt)
			}
			return err
		case r.audio != nil && pkt.StreamIndex() == r.in.audio.Index():
			if ast != nil {
				return ast.decode(pkt)
			}
			return audioOut(pkt)
		}
		return nil
	}
	drain = func() error {
		for _, st := range []*stage{vst, ast} {
			if st != nil {
				if err := st.decode(nil); err != nil {
					return err
				}
			}
		}
		if lad != nil {
			return lad.decode(nil)
		}
		return nil
	}
	return handle, drain
}

func (r *remuxer) videoPacket(pkt *astiav.Packet) error {
	key := pkt.Flags().Has(astiav.PacketFlagKey)
	dtsTS, ptsTS := pkt.Dts(), pkt.Pts()
	if dtsTS == astiav.NoPtsValue {
		dtsTS = ptsTS
	}
	if ptsTS == astiav.NoPtsValue {
		ptsTS = dtsTS
	}
	if dtsTS == astiav.NoPtsValue {
		return nil // a packet with no time cannot be placed
	}
	if r.originFrom != nil && !r.started {
		if !r.originFrom.started {
			r.pending = append(r.pending, pkt.Clone())
			return nil
		}
		if len(r.pending) > 0 {
			if err := r.replayPending(); err != nil {
				return err
			}
		}
	}
	if !r.started {
		if !key {
			return nil // undecodable before the first keyframe
		}
		r.started = true
		r.originTS, r.originPTS = dtsTS, ptsTS
		if o := r.originFrom; o != nil {
			r.originTS = astiav.RescaleQ(o.originTS, o.video.tb, r.video.tb)
		}
	}
	t := r.video
	origin := t.toScale(r.originTS)
	dts, pts := t.toScale(dtsTS)-origin, t.toScale(ptsTS)-origin
	payload, err := r.videoPayload(pkt.Data())
	if err != nil {
		return err
	}
	if n := len(t.queue); n > 0 {
		prev := &t.queue[n-1]
		if d := dts - prev.dts; d > 0 {
			prev.dur = uint32(d)
		} else {
			// Equal or backward DTS: keep decode order with a tick.
			prev.dur = 1
			dts = prev.dts + 1
		}
	}
	if len(t.queue) == 0 && len(r.cuts) == 0 && r.seq == 0 && !r.initDone {
		r.segStart = pts
	}
	if key && pts >= r.boundary-videoTimescale/1000 {
		r.cuts = append(r.cuts, cut{idx: len(t.queue), pts: pts})
		if r.cutTS == nil {
			r.cutTS = map[int64]bool{}
		}
		r.cutTS[ptsTS] = true
		for r.boundary <= pts+videoTimescale/1000 {
			r.boundary += int64(r.cfg.SegmentDuration.Seconds() * videoTimescale)
		}
	}
	t.queue = append(t.queue, sample{dts: dts, pts: pts, key: key, payload: payload})
	if len(r.early) > 0 {
		return r.startAudio()
	}
	return nil
}

// replayPending hands on the rung packets that came before the source
// rendition started.
func (r *remuxer) replayPending() error {
	p := r.pending
	r.pending = nil
	defer func() {
		for _, pkt := range p {
			pkt.Free()
		}
	}()
	for _, pkt := range p {
		if err := r.videoPacket(pkt); err != nil {
			return err
		}
	}
	return nil
}

func (r *remuxer) freePending() {
	for _, pkt := range r.pending {
		pkt.Free()
	}
	r.pending = nil
}

// earlyAudio is an audio packet read before the first video keyframe:
// kept until that keyframe's time says whether it belongs in the title (an
// encoder's delay makes transcoded video start late).
type earlyAudio struct {
	dts, dur int64
	data     []byte
}

// maxEarlyAudio bounds the audio kept while no video has started.
const maxEarlyAudio = 4096

func (r *remuxer) audioPacket(pkt *astiav.Packet) error {
	dtsTS := pkt.Dts()
	if dtsTS == astiav.NoPtsValue {
		dtsTS = pkt.Pts()
	}
	if dtsTS == astiav.NoPtsValue {
		return nil
	}
	if !r.started {
		if len(r.early) == maxEarlyAudio {
			r.early = r.early[1:]
		}
		r.early = append(r.early, earlyAudio{dts: dtsTS, dur: pkt.Duration(), data: pkt.Data()}) // a copy
		return nil
	}
	return r.audioSample(dtsTS, pkt.Duration(), pkt.Data())
}

// startAudio queues the audio read before video started.
func (r *remuxer) startAudio() error {
	early := r.early
	r.early = nil
	for _, e := range early {
		if err := r.audioSample(e.dts, e.dur, e.data); err != nil {
			return err
		}
	}
	return nil
}

func (r *remuxer) audioSample(dtsTS, durTS int64, data []byte) error {
	t := r.audio
	ts := t.toScale(dtsTS) - astiav.RescaleQ(r.originTS, r.video.tb, astiav.NewRational(1, int(t.scale)))
	if ts < 0 {
		return nil // before the first video keyframe
	}
	var payloads [][]byte
	if r.adts {
		var pkts mpeg4audio.ADTSPackets
		if err := pkts.Unmarshal(data); err != nil {
			return fmt.Errorf("AAC ADTS packet: %w", err)
		}
		for _, p := range pkts {
			if r.aacConfig == nil {
				r.aacConfig = &mpeg4audio.AudioSpecificConfig{Type: p.Type, SampleRate: p.SampleRate, ChannelConfig: p.ChannelConfig, ChannelCount: p.ChannelCount}
			}
			payloads = append(payloads, p.AU)
		}
	} else {
		payloads = [][]byte{data}
	}
	durTS = t.toScale(durTS)
	for i, p := range payloads {
		if len(t.queue) == 0 && t.next == 0 {
			t.next = ts
		}
		// Follow the codec's frame size while the container's timestamps
		// agree with it (within 3 ms); resync on a gap or overlap.
		if i == 0 && (ts-t.next > t.scale*3/1000 || t.next-ts > t.scale*3/1000) {
			t.next = ts
		}
		if n := len(t.queue); n > 0 {
			prev := &t.queue[n-1]
			prev.dur = uint32(max(1, t.next-prev.dts))
		}
		t.queue = append(t.queue, sample{dts: t.next, pts: t.next, key: true, payload: p}) // data is the packet's copy
		step := t.frameSize
		if step == 0 {
			step = durTS / int64(len(payloads))
		}
		if step <= 0 {
			step = t.scale / 50
		}
		t.next += step
	}
	return nil
}

// finishDurations gives the last sample of each track a duration at the
// end of the input.
func (r *remuxer) finishDurations() {
	for _, t := range []*track{r.video, r.audio} {
		if t == nil || len(t.queue) == 0 {
			continue
		}
		last := &t.queue[len(t.queue)-1]
		if t == r.audio {
			last.dur = uint32(max(1, t.next-last.dts))
			continue
		}
		if len(t.queue) > 1 {
			last.dur = t.queue[len(t.queue)-2].dur
		} else {
			last.dur = videoTimescale / 30
		}
	}
}

// flushReady writes every segment whose end is decided and whose audio has
// arrived; at the end of the input (final) it writes what is left.
func (r *remuxer) flushReady(final bool) error {
	for len(r.cuts) > 0 {
		c := r.cuts[0]
		if c.idx == 0 {
			// The cut is the start of what is queued: no segment before it.
			r.segStart = c.pts
			r.cuts = r.cuts[1:]
			continue
		}
		if !final && r.audio != nil && !r.audio.eof {
			at := r.video.seconds(c.pts)
			var audioAt time.Duration
			if n := len(r.audio.queue); n > 0 {
				audioAt = r.audio.seconds(r.audio.queue[n-1].dts)
			}
			videoAt := r.video.seconds(r.video.queue[len(r.video.queue)-1].dts)
			if audioAt < at && videoAt-at < audioLag {
				return nil
			}
		}
		if err := r.writeSegment(c.idx, c.pts); err != nil {
			return err
		}
		r.cuts = r.cuts[1:]
		for i := range r.cuts {
			r.cuts[i].idx -= c.idx
		}
		r.segStart = c.pts
	}
	if final && len(r.video.queue) > 0 {
		end := int64(math.MinInt64)
		for _, s := range r.video.queue {
			end = max(end, s.pts+int64(s.dur))
		}
		return r.writeSegment(len(r.video.queue), end)
	}
	return nil
}

func (r *remuxer) ensureInit() error {
	if r.initDone {
		return nil
	}
	if r.sps == nil || r.pps == nil {
		return errors.New("H.264 stream without SPS/PPS before its first segment")
	}
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{
		ID: videoTrackID, TimeScale: videoTimescale,
		Codec: &fmp4.CodecH264{SPS: r.sps, PPS: r.pps},
	}}}
	codecs := fmt.Sprintf("avc1.%02x%02x%02x", r.sps[1], r.sps[2], r.sps[3])
	if r.audio != nil {
		switch {
		case r.opusCh > 0:
			init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: audioTrackID, TimeScale: uint32(r.audio.scale),
				Codec: &fmp4.CodecOpus{ChannelCount: r.opusCh}})
			codecs += ",opus"
		case r.aacConfig != nil:
			init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: audioTrackID, TimeScale: uint32(r.audio.scale),
				Codec: &fmp4.CodecMPEG4Audio{Config: *r.aacConfig}})
			codecs += fmt.Sprintf(",mp4a.40.%d", r.aacConfig.Type)
		default:
			// ADTS audio that never delivered a frame: package video only.
			r.audio = nil
		}
	}
	var buf seekablebuffer.Buffer
	if err := init.Marshal(&buf); err != nil {
		return fmt.Errorf("fMP4 init section: %w", err)
	}
	ch, err := r.out.Put(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return fmt.Errorf("store init section: %w", err)
	}
	r.rendition.Init = ch
	r.rendition.Codecs = codecs
	r.initDone = true
	return nil
}

// writeSegment puts the video samples before index idx, and the audio
// samples before the video time endPTS, into one moof+mdat segment.
func (r *remuxer) writeSegment(idx int, endPTS int64) error {
	if err := r.ensureInit(); err != nil {
		return err
	}
	v := r.video.queue[:idx]
	r.segTracks = append(r.segTracks[:0], segTrack{id: videoTrackID, baseTime: uint64(v[0].dts), samples: v})
	for _, s := range v {
		r.maxEnd = max(r.maxEnd, s.pts+int64(s.dur))
	}
	var na int
	if a := r.audio; a != nil {
		end := astiav.RescaleQ(endPTS, astiav.NewRational(1, videoTimescale), astiav.NewRational(1, int(a.scale)))
		// The last segment ends with the video: audio that outlasts it
		// would play over nothing and is left out.
		for na < len(a.queue) && a.queue[na].dts < end {
			na++
		}
		if na > 0 {
			r.segTracks = append(r.segTracks, segTrack{id: audioTrackID, baseTime: uint64(a.queue[0].dts), samples: a.queue[:na]})
		}
	}
	rd, _, err := r.seg.reader(r.seq+1, r.segTracks)
	if err != nil {
		return fmt.Errorf("fMP4 segment %d: %w", r.seq, err)
	}
	ch, err := r.out.Put(rd)
	if err != nil {
		return fmt.Errorf("store segment %d: %w", r.seq, err)
	}
	ch.Start = r.video.seconds(r.segStart)
	ch.Duration = r.video.seconds(endPTS - r.segStart)
	r.rendition.Segments = append(r.rendition.Segments, ch)
	r.bytes += ch.Size
	r.seq++
	r.video.queue = dropFront(r.video.queue, idx)
	if r.audio != nil {
		r.audio.queue = dropFront(r.audio.queue, na)
	}
	clear(r.segTracks)
	return nil
}

// dropFront removes the first n samples, moving the rest to the front of
// the same array so that the queue's memory is reused and the written
// payloads are released.
func dropFront(q []sample, n int) []sample {
	m := copy(q, q[n:])
	clear(q[m:])
	return q[:m]
}

func (r *remuxer) manifest() *Manifest { return singleRenditionManifest(r.rendition, r.bytes) }

// singleRenditionManifest completes rd (its segments cut, bytes their
// total size) with its average and peak bitrates and wraps it in a
// manifest with its duration and target duration.
func singleRenditionManifest(rd Rendition, bytes int64) *Manifest {
	var total, longest time.Duration
	for _, s := range rd.Segments {
		total += s.Duration
		longest = max(longest, s.Duration)
		if s.Duration > 0 {
			rd.PeakKbps = max(rd.PeakKbps, int(float64(s.Size)*8/s.Duration.Seconds()/1000+0.5))
		}
	}
	if total > 0 {
		rd.Kbps = int(float64(bytes)*8/total.Seconds()/1000 + 0.5)
	}
	// Rounded up, less a few milliseconds of timestamp rounding, so that a
	// 4.001 s segment keeps a 4 s target: HLS only asks that each EXTINF
	// rounded to the nearest second be no longer.
	target := time.Duration(math.Ceil((longest - 5*time.Millisecond).Seconds())) * time.Second
	return &Manifest{TargetDuration: target, Duration: total, Renditions: []Rendition{rd}}
}
