package vod

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/asticode/go-astiav"
)

// Transcoding settings for sources whose codecs cannot be copied: H.264
// High with libx264 (the serverlet runtime's encoder, preset veryfast) at
// constant quality, and AAC-LC stereo 48 kHz with FFmpeg's native encoder.
const (
	transcodePreset   = "veryfast"
	transcodeCRF      = "21"
	transcodeAudioBPS = 128000
	transcodeRate     = 48000
	aacFrameSize      = 1024
)

// stage is one track's decode → filter graph → encode pipeline; encoded
// packets go to emit in the encoder's time base.
type stage struct {
	name        string // the source codec, for errors
	dec, enc    *astiav.CodecContext
	graph       *astiav.FilterGraph
	bsrc, bsink *astiav.FilterContext
	frm, filt   *astiav.Frame
	encPkt      *astiav.Packet
	// graphFor gives, for the first decoded frame, the buffer source and
	// its arguments, the sink and the filters between them.
	graphFor func(f *astiav.Frame) (source string, args astiav.FilterArgs, sink, spec string)
	// prep, when set, readies each filtered frame (PTS in the encoder's
	// time base) for the encoder.
	prep func(f *astiav.Frame)
	emit func(pkt *astiav.Packet) error
}

func newStage(s *astiav.Stream) (st *stage, err error) {
	cp := s.CodecParameters()
	st = &stage{name: cp.CodecID().Name()}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	codec := astiav.FindDecoder(cp.CodecID())
	if codec == nil {
		return nil, fmt.Errorf("%w: this FFmpeg has no %s decoder", ErrNeedsTranscode, st.name)
	}
	if st.dec = astiav.AllocCodecContext(codec); st.dec == nil {
		return nil, errors.New("FFmpeg could not allocate a decoder")
	}
	if err := st.dec.FromCodecParameters(cp); err != nil {
		return nil, fmt.Errorf("%s decoder parameters: %w", st.name, err)
	}
	st.dec.SetTimeBase(s.TimeBase())
	if err := st.dec.Open(codec, nil); err != nil {
		return nil, fmt.Errorf("open %s decoder: %w", st.name, err)
	}
	st.frm, st.filt, st.encPkt = astiav.AllocFrame(), astiav.AllocFrame(), astiav.AllocPacket()
	return st, nil
}

func (st *stage) close() {
	for _, c := range []*astiav.CodecContext{st.enc, st.dec} {
		if c != nil {
			c.Free()
		}
	}
	if st.graph != nil {
		st.graph.Free()
	}
	for _, f := range []*astiav.Frame{st.frm, st.filt} {
		if f != nil {
			f.Free()
		}
	}
	if st.encPkt != nil {
		st.encPkt.Free()
	}
}

// decode feeds one packet (nil: the end) through the pipeline.
func (st *stage) decode(pkt *astiav.Packet) error {
	if err := st.dec.SendPacket(pkt); err != nil && !errors.Is(err, astiav.ErrEof) {
		if errors.Is(err, astiav.ErrInvaliddata) {
			return nil // a damaged packet: later ones may decode
		}
		return fmt.Errorf("decode %s: %w", st.name, err)
	}
	for {
		err := st.dec.ReceiveFrame(st.frm)
		if errors.Is(err, astiav.ErrEagain) {
			return nil
		}
		if errors.Is(err, astiav.ErrEof) {
			if st.graph == nil {
				return nil // nothing was ever decoded
			}
			return st.filter(nil)
		}
		if err != nil {
			if errors.Is(err, astiav.ErrInvaliddata) {
				continue
			}
			return fmt.Errorf("decode %s: %w", st.name, err)
		}
		if st.frm.Pts() == astiav.NoPtsValue {
			st.frm.Unref() // a frame with no time cannot be placed
			continue
		}
		err = st.filter(st.frm)
		st.frm.Unref()
		if err != nil {
			return err
		}
	}
}

// filter feeds one decoded frame (nil: the end) through the graph.
func (st *stage) filter(f *astiav.Frame) error {
	if st.graph == nil {
		if err := st.openGraph(f); err != nil {
			return err
		}
	}
	if err := st.bsrc.BuffersrcAddFrame(f, astiav.NewBuffersrcFlags(astiav.BuffersrcFlagKeepRef)); err != nil {
		return fmt.Errorf("filter graph input: %w", err)
	}
	sinkTB := st.enc.TimeBase()
	if in := st.bsink.Inputs(); len(in) > 0 {
		sinkTB = in[0].TimeBase()
	}
	for {
		err := st.bsink.BuffersinkGetFrame(st.filt, astiav.NewBuffersinkFlags())
		if errors.Is(err, astiav.ErrEagain) {
			return nil
		}
		if errors.Is(err, astiav.ErrEof) {
			return st.encode(nil)
		}
		if err != nil {
			return fmt.Errorf("filter graph: %w", err)
		}
		st.filt.SetPts(astiav.RescaleQ(st.filt.Pts(), sinkTB, st.enc.TimeBase()))
		if st.prep != nil {
			st.prep(st.filt)
		}
		err = st.encode(st.filt)
		st.filt.Unref()
		if err != nil {
			return err
		}
	}
}

func (st *stage) openGraph(f *astiav.Frame) error {
	source, args, sink, spec := st.graphFor(f)
	st.graph = astiav.AllocFilterGraph()
	if st.graph == nil {
		return errors.New("FFmpeg could not allocate a filter graph")
	}
	st.graph.SetThreadCount(1)
	var err error
	if st.bsrc, err = st.graph.NewFilterContext(astiav.FindFilterByName(source), "in", args); err != nil {
		return fmt.Errorf("filter graph %s: %w", source, err)
	}
	if st.bsink, err = st.graph.NewFilterContext(astiav.FindFilterByName(sink), "out", nil); err != nil {
		return fmt.Errorf("filter graph %s: %w", sink, err)
	}
	outputs, inputs := astiav.AllocFilterInOut(), astiav.AllocFilterInOut()
	defer outputs.Free()
	defer inputs.Free()
	outputs.SetName("in")
	outputs.SetFilterContext(st.bsrc)
	outputs.SetPadIdx(0)
	outputs.SetNext(nil)
	inputs.SetName("out")
	inputs.SetFilterContext(st.bsink)
	inputs.SetPadIdx(0)
	inputs.SetNext(nil)
	if err := st.graph.Parse(spec, inputs, outputs); err != nil {
		return fmt.Errorf("filter graph %q: %w", spec, err)
	}
	if err := st.graph.Configure(); err != nil {
		return fmt.Errorf("filter graph %q: %w", spec, err)
	}
	return nil
}

// encode feeds one filtered frame (nil: the end) to the encoder.
func (st *stage) encode(f *astiav.Frame) error {
	if err := st.enc.SendFrame(f); err != nil && !errors.Is(err, astiav.ErrEof) {
		return fmt.Errorf("encode %s: %w", st.name, err)
	}
	for {
		err := st.enc.ReceivePacket(st.encPkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("encode from %s: %w", st.name, err)
		}
		err = st.emit(st.encPkt)
		st.encPkt.Unref()
		if err != nil {
			return err
		}
	}
}

// newVideoStage decodes any video FFmpeg reads and encodes H.264 with
// libx264 at the source's size (rounded down to even), forcing an IDR
// frame on every segment boundary so segments are cut on the grid.
func newVideoStage(in *input, cfg PackageConfig) (*stage, error) {
	s := in.video
	st, err := newStage(s)
	if err != nil {
		return nil, err
	}
	cp := s.CodecParameters()
	w, h := max(2, cp.Width()&^1), max(2, cp.Height()&^1)
	fps := in.fc.GuessFrameRate(s, nil)
	if fps.Num() <= 0 || fps.Den() <= 0 {
		fps = astiav.NewRational(25, 1)
	}
	codec := astiav.FindEncoderByName("libx264")
	if codec == nil {
		st.close()
		return nil, fmt.Errorf("%w: this FFmpeg has no libx264 encoder", ErrNeedsTranscode)
	}
	if st.enc = astiav.AllocCodecContext(codec); st.enc == nil {
		st.close()
		return nil, errors.New("FFmpeg could not allocate an encoder")
	}
	st.enc.SetWidth(w)
	st.enc.SetHeight(h)
	st.enc.SetPixelFormat(astiav.PixelFormatYuv420P)
	st.enc.SetTimeBase(s.TimeBase())
	st.enc.SetFramerate(fps)
	if sar := cp.SampleAspectRatio(); sar.Num() > 0 && sar.Den() > 0 {
		st.enc.SetSampleAspectRatio(sar)
	}
	st.enc.SetFlags(st.enc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	gop := int(cfg.SegmentDuration.Seconds()*fps.Float64() + 0.5)
	opts := astiav.NewDictionary()
	defer opts.Free()
	for _, kv := range [][2]string{
		{"preset", transcodePreset},
		{"profile", "high"},
		{"crf", transcodeCRF},
		{"g", strconv.Itoa(max(1, gop))},
		{"sc_threshold", "0"},
		{"forced-idr", "1"},
		{"x264-params", "scenecut=0:open-gop=0:log=-1"},
	} {
		if err := opts.Set(kv[0], kv[1], 0); err != nil {
			st.close()
			return nil, fmt.Errorf("libx264 option %s: %w", kv[0], err)
		}
	}
	if err := st.enc.Open(codec, opts); err != nil {
		st.close()
		return nil, fmt.Errorf("open libx264 (preset %s): %w", transcodePreset, err)
	}
	tb := s.TimeBase()
	st.graphFor = func(f *astiav.Frame) (string, astiav.FilterArgs, string, string) {
		return "buffer", videoBufferArgs(f, tb), "buffersink", fmt.Sprintf("scale=%d:%d,format=yuv420p", w, h)
	}
	step := astiav.RescaleQ(int64(cfg.SegmentDuration/time.Microsecond), astiav.NewRational(1, 1000000), st.enc.TimeBase())
	first, next := astiav.NoPtsValue, int64(0)
	st.prep = func(f *astiav.Frame) {
		if first == astiav.NoPtsValue {
			first, next = f.Pts(), f.Pts()
		}
		if f.Pts() >= next {
			f.SetPictureType(astiav.PictureTypeI)
			for next <= f.Pts() {
				next += max(1, step)
			}
		} else {
			f.SetPictureType(astiav.PictureTypeNone)
		}
	}
	return st, nil
}

// newAudioStage decodes any audio FFmpeg reads and encodes AAC-LC stereo
// at 48 kHz in 1024-sample frames.
func newAudioStage(in *input) (*stage, error) {
	s := in.audio
	st, err := newStage(s)
	if err != nil {
		return nil, err
	}
	codec := astiav.FindEncoderByName("aac")
	if codec == nil {
		st.close()
		return nil, fmt.Errorf("%w: this FFmpeg has no aac encoder", ErrNeedsTranscode)
	}
	if st.enc = astiav.AllocCodecContext(codec); st.enc == nil {
		st.close()
		return nil, errors.New("FFmpeg could not allocate an encoder")
	}
	st.enc.SetSampleFormat(astiav.SampleFormatFltp)
	st.enc.SetSampleRate(transcodeRate)
	st.enc.SetChannelLayout(astiav.ChannelLayoutStereo)
	st.enc.SetBitRate(transcodeAudioBPS)
	st.enc.SetTimeBase(astiav.NewRational(1, transcodeRate))
	st.enc.SetFlags(st.enc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	if err := st.enc.Open(codec, nil); err != nil {
		st.close()
		return nil, fmt.Errorf("open AAC encoder: %w", err)
	}
	if fs := st.enc.FrameSize(); fs != aacFrameSize {
		st.close()
		return nil, fmt.Errorf("AAC encoder frame size %d, want %d", fs, aacFrameSize)
	}
	tb := s.TimeBase()
	st.graphFor = func(f *astiav.Frame) (string, astiav.FilterArgs, string, string) {
		layout := f.ChannelLayout().String()
		switch f.ChannelLayout().NbChannels() {
		case 1:
			layout = "mono"
		case 2:
			layout = "stereo"
		}
		return "abuffer", astiav.FilterArgs{
				"time_base":      fmt.Sprintf("%d/%d", tb.Num(), tb.Den()),
				"sample_rate":    strconv.Itoa(f.SampleRate()),
				"sample_fmt":     f.SampleFormat().Name(),
				"channel_layout": layout,
			}, "abuffersink",
			fmt.Sprintf("aresample=%d,aformat=sample_fmts=fltp:sample_rates=%d:channel_layouts=stereo,asetnsamples=n=%d:p=0",
				transcodeRate, transcodeRate, aacFrameSize)
	}
	return st, nil
}

// videoBufferArgs are the arguments of a "buffer" source filter taking
// frames like f in time base tb (a missing sample aspect ratio is square).
func videoBufferArgs(f *astiav.Frame, tb astiav.Rational) astiav.FilterArgs {
	sar := f.SampleAspectRatio()
	if sar.Num() <= 0 || sar.Den() <= 0 {
		sar = astiav.NewRational(1, 1)
	}
	return astiav.FilterArgs{
		"video_size":   fmt.Sprintf("%dx%d", f.Width(), f.Height()),
		"pix_fmt":      strconv.Itoa(int(f.PixelFormat())),
		"time_base":    fmt.Sprintf("%d/%d", tb.Num(), tb.Den()),
		"pixel_aspect": fmt.Sprintf("%d/%d", sar.Num(), sar.Den()),
	}
}
