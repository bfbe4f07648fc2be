package testsrc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gradient-cdn/gradient/media"
)

// Audio parameters of the test tone: AAC-LC, 48 kHz stereo, 128 kbit/s.
const (
	audioSampleRate = 48000
	audioChannels   = 2
	audioBitrate    = 128000
	aacFrameSize    = 1024 // samples per AAC-LC access unit
)

// Source produces the test pattern (and tone) as encoded access units,
// released in real time: video frame i is produced at start + i/FPS and
// audio frame j at start + j·1024/48000, where start is the first call to
// Next. A Source is used by one goroutine.
type Source struct {
	cfg  Config
	log  *slog.Logger
	desc media.Description

	video *lavfiEncoder
	audio *lavfiEncoder // nil without audio

	videoTrack, audioTrack int

	start   time.Time
	nextV   int64 // index of the next video frame to produce
	nextA   int64 // sample count of the next audio frame to produce
	capture map[int64]time.Time
	queue   []*media.Unit
}

// NewSource opens FFmpeg's lavfi test sources and the encoders; cfg.URL is
// not used. Zero fields of cfg take their defaults (DefaultConfig); a nil
// log is slog.Default(). Close frees them.
func NewSource(cfg Config, log *slog.Logger) (*Source, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("testsrc: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Source{cfg: cfg, log: log.With("component", "testsrc"), capture: map[int64]time.Time{}, audioTrack: -1}
	var err error
	if s.video, err = openVideo(cfg, s.log); err != nil {
		return nil, err
	}
	sps, pps := media.ParameterSets(s.video.cc.ExtraData())
	if sps == nil || pps == nil {
		s.Close()
		return nil, errors.New("testsrc: libx264 gave no SPS/PPS in its extradata")
	}
	s.desc.Tracks = append(s.desc.Tracks, &media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps})
	if cfg.Audio {
		if s.audio, err = openAudio(); err != nil {
			s.Close()
			return nil, err
		}
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(s.audio.cc.ExtraData()); err != nil {
			s.Close()
			return nil, fmt.Errorf("testsrc: AAC encoder config: %w", err)
		}
		s.audioTrack = len(s.desc.Tracks)
		s.desc.Tracks = append(s.desc.Tracks, &media.Track{
			Codec: media.CodecAAC, AAC: &asc, Channels: audioChannels, SampleRate: audioSampleRate,
		})
	}
	if err := s.desc.Validate(); err != nil {
		s.Close()
		return nil, fmt.Errorf("testsrc: %w", err)
	}
	return s, nil
}

// Description returns the tracks the source produces: H.264 first, then
// AAC when audio is enabled.
func (s *Source) Description() media.Description { return s.desc }

// Next returns the next access unit, waiting until it is due. Video units
// carry a capture-time SEI (media.CaptureSEI) with the wall-clock time the
// frame was produced. Next returns ctx.Err() when ctx ends first.
func (s *Source) Next(ctx context.Context) (*media.Unit, error) {
	if s.start.IsZero() {
		s.start = time.Now()
	}
	for len(s.queue) == 0 {
		vDue := s.start.Add(media.TicksToDuration(s.nextV, int64(s.cfg.FPS)))
		due, isAudio := vDue, false
		if s.audio != nil {
			aDue := s.start.Add(media.TicksToDuration(s.nextA, audioSampleRate))
			if aDue.Before(vDue) {
				due, isAudio = aDue, true
			}
		}
		if lag := time.Since(due); lag > maxLag {
			// The process was stalled (suspended, starved of CPU): skip the
			// frames missed, as a camera would, rather than burst them out.
			s.skipTo(time.Now())
			s.log.Warn("test source fell behind; skipped frames", "behind", lag.Round(time.Millisecond))
			continue
		}
		if err := waitUntil(ctx, due); err != nil {
			return nil, err
		}
		var err error
		if isAudio {
			err = s.produceAudio()
		} else {
			err = s.produceVideo()
		}
		if err != nil {
			return nil, err
		}
	}
	u := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return u, nil
}

// maxLag is how far behind its schedule the source may fall before it
// skips frames.
const maxLag = time.Second

// skipTo moves the schedule to the frames due at t.
func (s *Source) skipTo(t time.Time) {
	elapsed := t.Sub(s.start)
	s.nextV = max(s.nextV, media.DurationToTicks(elapsed, int64(s.cfg.FPS)))
	s.nextA = max(s.nextA, media.DurationToTicks(elapsed, audioSampleRate)/aacFrameSize*aacFrameSize)
}

func waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func (s *Source) produceVideo() error {
	pts := s.nextV
	s.nextV++
	now := time.Now()
	s.capture[pts] = now
	return s.video.encodeNext(pts, func(pkt *astiav.Packet) error {
		var au h264.AnnexB
		if err := au.Unmarshal(pkt.Data()); err != nil {
			return fmt.Errorf("testsrc: libx264 output: %w", err)
		}
		ct, ok := s.capture[pkt.Pts()]
		if !ok {
			ct = now
		}
		delete(s.capture, pkt.Pts())
		pts := media.TicksToDuration(pkt.Pts(), int64(s.cfg.FPS))
		s.queue = append(s.queue, &media.Unit{
			Track:    s.videoTrack,
			PTS:      pts,
			DTS:      pts,
			Data:     withCaptureSEI(au, ct),
			Key:      pkt.Flags().Has(astiav.PacketFlagKey),
			Received: ct,
		})
		return nil
	})
}

func (s *Source) produceAudio() error {
	pts := s.nextA
	s.nextA += aacFrameSize
	now := time.Now()
	return s.audio.encodeNext(pts, func(pkt *astiav.Packet) error {
		if pkt.Pts() < 0 {
			return nil // the encoder's priming frame precedes the stream start
		}
		pts := media.TicksToDuration(pkt.Pts(), audioSampleRate)
		s.queue = append(s.queue, &media.Unit{
			Track:    s.audioTrack,
			PTS:      pts,
			DTS:      pts,
			Data:     [][]byte{append([]byte(nil), pkt.Data()...)},
			Key:      true,
			Received: now,
		})
		return nil
	})
}

// withCaptureSEI inserts the capture-time SEI at the start of the access
// unit, after its delimiter if it has one (H.264 7.4.1.2.3 puts the AUD
// first).
func withCaptureSEI(au [][]byte, t time.Time) [][]byte {
	out := make([][]byte, 0, len(au)+1)
	i := 0
	if len(au) > 0 && len(au[0]) > 0 && h264.NALUType(au[0][0]&0x1f) == h264.NALUTypeAccessUnitDelimiter {
		out = append(out, au[0])
		i = 1
	}
	out = append(out, media.CaptureSEI(t))
	return append(out, au[i:]...)
}

// Close frees the FFmpeg objects.
func (s *Source) Close() {
	if s.video != nil {
		s.video.close()
		s.video = nil
	}
	if s.audio != nil {
		s.audio.close()
		s.audio = nil
	}
}

// lavfiEncoder is a lavfi source filter graph feeding an encoder.
type lavfiEncoder struct {
	graph *astiav.FilterGraph
	sink  *astiav.FilterContext
	frame *astiav.Frame
	cc    *astiav.CodecContext
	pkt   *astiav.Packet
}

// openGraph builds "spec -> buffersink" (sinkName is buffersink or abuffersink).
func (e *lavfiEncoder) openGraph(spec, sinkName string) error {
	e.graph = astiav.AllocFilterGraph()
	if e.graph == nil {
		return errors.New("alloc filter graph")
	}
	// The sources are cheap; one thread keeps a 2-core machine for the encoder.
	e.graph.SetThreadCount(1)
	sink := astiav.FindFilterByName(sinkName)
	if sink == nil {
		return fmt.Errorf("no %s filter in this FFmpeg", sinkName)
	}
	var err error
	if e.sink, err = e.graph.NewFilterContext(sink, "out", nil); err != nil {
		return fmt.Errorf("create %s: %w", sinkName, err)
	}
	inputs := astiav.AllocFilterInOut()
	defer inputs.Free()
	inputs.SetName("out")
	inputs.SetFilterContext(e.sink)
	inputs.SetPadIdx(0)
	inputs.SetNext(nil)
	if err := e.graph.Parse(spec, inputs, nil); err != nil {
		return fmt.Errorf("parse filter graph %q: %w", spec, err)
	}
	if err := e.graph.Configure(); err != nil {
		return fmt.Errorf("configure filter graph %q: %w", spec, err)
	}
	e.frame = astiav.AllocFrame()
	e.pkt = astiav.AllocPacket()
	return nil
}

// encodeNext pulls one frame from the graph, encodes it with pts and hands
// every packet the encoder completes to emit.
func (e *lavfiEncoder) encodeNext(pts int64, emit func(*astiav.Packet) error) error {
	e.frame.Unref()
	if err := e.sink.BuffersinkGetFrame(e.frame, astiav.NewBuffersinkFlags()); err != nil {
		return fmt.Errorf("testsrc: lavfi source: %w", err)
	}
	e.frame.SetPts(pts)
	e.frame.SetPictureType(astiav.PictureTypeNone)
	if err := e.cc.SendFrame(e.frame); err != nil {
		return fmt.Errorf("testsrc: encode: %w", err)
	}
	for {
		err := e.cc.ReceivePacket(e.pkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("testsrc: encode: %w", err)
		}
		err = emit(e.pkt)
		e.pkt.Unref()
		if err != nil {
			return err
		}
	}
}

func (e *lavfiEncoder) close() {
	if e.cc != nil {
		e.cc.Free()
	}
	if e.pkt != nil {
		e.pkt.Free()
	}
	if e.frame != nil {
		e.frame.Free()
	}
	if e.graph != nil {
		e.graph.Free()
	}
}

// clockText draws the wall clock on the pattern so that a viewer sees the
// glass-to-glass delay against a real clock.
const clockText = ",drawtext=text='%{localtime\\:%T}':x=(w-tw)/2:y=h-th-h/20:fontsize=h/10:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=4"

func openVideo(cfg Config, log *slog.Logger) (*lavfiEncoder, error) {
	e := &lavfiEncoder{}
	base := fmt.Sprintf("testsrc2=size=%dx%d:rate=%d", cfg.Width, cfg.Height, cfg.FPS)
	err := e.openGraph(base+clockText+",format=yuv420p", "buffersink")
	if err != nil {
		// drawtext needs libfreetype and a font; the pattern alone will do.
		log.Debug("no wall clock on the test pattern", "error", err)
		e.close()
		e = &lavfiEncoder{}
		err = e.openGraph(base+",format=yuv420p", "buffersink")
	}
	if err != nil {
		e.close()
		return nil, fmt.Errorf("testsrc: %w", err)
	}
	codec := astiav.FindEncoderByName("libx264")
	if codec == nil {
		e.close()
		return nil, errors.New("testsrc: this FFmpeg has no libx264 encoder")
	}
	e.cc = astiav.AllocCodecContext(codec)
	e.cc.SetWidth(cfg.Width)
	e.cc.SetHeight(cfg.Height)
	e.cc.SetPixelFormat(astiav.PixelFormatYuv420P)
	e.cc.SetTimeBase(astiav.NewRational(1, cfg.FPS))
	e.cc.SetFramerate(astiav.NewRational(cfg.FPS, 1))
	e.cc.SetSampleAspectRatio(astiav.NewRational(1, 1))
	e.cc.SetThreadCount(0) // auto; zerolatency makes them sliced threads, adding no delay
	// The global header gives the SPS/PPS for the SDP before the first frame;
	// repeat-headers keeps them in band before every IDR as well.
	e.cc.SetFlags(e.cc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	bitrate := strconv.Itoa(cfg.Bitrate)
	gop := strconv.Itoa(cfg.FPS)
	opts := astiav.NewDictionary()
	defer opts.Free()
	for _, kv := range [][2]string{
		{"preset", cfg.Preset},
		{"tune", "zerolatency"},
		{"profile", "high"},
		{"b", bitrate},
		{"maxrate", bitrate},
		{"bufsize", bitrate},
		{"bf", "0"},
		{"g", gop},
		{"keyint_min", gop},
		{"sc_threshold", "0"},
		{"x264-params", "keyint=" + gop + ":min-keyint=" + gop + ":scenecut=0:open-gop=0:repeat-headers=1:aud=0:log=0"},
	} {
		if err := opts.Set(kv[0], kv[1], 0); err != nil {
			e.close()
			return nil, fmt.Errorf("testsrc: libx264 option %s: %w", kv[0], err)
		}
	}
	if err := e.cc.Open(codec, opts); err != nil {
		e.close()
		return nil, fmt.Errorf("testsrc: open libx264 (preset %s): %w", cfg.Preset, err)
	}
	return e, nil
}

func openAudio() (*lavfiEncoder, error) {
	e := &lavfiEncoder{}
	spec := fmt.Sprintf("sine=frequency=440:sample_rate=%d:samples_per_frame=%d,"+
		"aformat=sample_fmts=fltp:channel_layouts=stereo,asetnsamples=n=%d:p=0",
		audioSampleRate, aacFrameSize, aacFrameSize)
	if err := e.openGraph(spec, "abuffersink"); err != nil {
		e.close()
		return nil, fmt.Errorf("testsrc: %w", err)
	}
	codec := astiav.FindEncoderByName("aac") // FFmpeg's native encoder
	if codec == nil {
		e.close()
		return nil, errors.New("testsrc: this FFmpeg has no aac encoder")
	}
	e.cc = astiav.AllocCodecContext(codec)
	e.cc.SetSampleFormat(astiav.SampleFormatFltp)
	e.cc.SetSampleRate(audioSampleRate)
	e.cc.SetChannelLayout(astiav.ChannelLayoutStereo)
	e.cc.SetBitRate(audioBitrate)
	e.cc.SetTimeBase(astiav.NewRational(1, audioSampleRate))
	e.cc.SetFlags(e.cc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	if err := e.cc.Open(codec, nil); err != nil {
		e.close()
		return nil, fmt.Errorf("testsrc: open AAC encoder: %w", err)
	}
	if fs := e.cc.FrameSize(); fs != aacFrameSize {
		e.close()
		return nil, fmt.Errorf("testsrc: AAC encoder frame size %d, want %d", fs, aacFrameSize)
	}
	return e, nil
}
