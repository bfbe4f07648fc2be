package serverlet

import (
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"
)

// transcoder is the one decode → filter graph → encode pipeline of a
// track: packets go into the decoder, each decoded frame through the
// filter graph and each filtered frame, its PTS in 1/clock, into the
// encoder, whose packets go to onPacket. Video (H.264 → libx264) and audio
// (AAC → Opus) differ only in the transcoderSpec they give it. A
// transcoder is used by one run's goroutine only.
type transcoder struct {
	spec transcoderSpec

	dec, enc    *astiav.CodecContext
	graph       *astiav.FilterGraph
	bsrc, bsink *astiav.FilterContext
	sinkTB      astiav.Rational
	// The graph's input picture size and format (video): a frame that
	// differs gets a new graph.
	inW, inH    int
	inFmt       astiav.PixelFormat
	pkt, encPkt *astiav.Packet
	frm, filt   *astiav.Frame
}

// transcoderSpec is what a track kind sets in a transcoder.
type transcoderSpec struct {
	// decodes and encodes name the codecs in errors ("H.264", "Opus").
	decodes, encodes string
	// clock is the rate of the encoder's time base: filtered frames get
	// their PTS rescaled to 1/clock.
	clock int64
	// graph gives, for the first decoded frame, the buffer source filter
	// ("buffer", "abuffer") and its arguments, the sink filter
	// ("buffersink", "abuffersink") and the graph between them.
	graph func(f *astiav.Frame) (source string, args astiav.FilterArgs, sink, spec string)
	// openEncoder opens the encoder for the first filtered frame; nil when
	// the encoder was opened up front (transcoder.enc set). An encoder it
	// returns with an error is still freed by close.
	openEncoder func(f *astiav.Frame) (*astiav.CodecContext, error)
	// decoded, when set, is called for every decoded frame.
	decoded func()
	// frame, when set, prepares every filtered frame before it is encoded.
	frame func(f *astiav.Frame) error
	// onPacket receives every encoded packet; it must copy what it keeps.
	onPacket func(pkt *astiav.Packet) error
}

// decoderOptions opens a transcoder's decoder.
type decoderOptions struct {
	id        astiav.CodecID
	threads   int    // 0: FFmpeg's choice
	lowDelay  bool   // output frames without reordering delay
	extraData []byte // codec configuration (AAC's AudioSpecificConfig)
}

// newTranscoder opens the decoder and allocates the buffers; the filter graph
// and (unless the caller sets enc) the encoder open on the first frame,
// when its format is known.
func newTranscoder(spec transcoderSpec, d decoderOptions) (c *transcoder, err error) {
	c = &transcoder{spec: spec}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	codec := astiav.FindDecoder(d.id)
	if codec == nil {
		return nil, fmt.Errorf("no %s decoder in this FFmpeg", spec.decodes)
	}
	c.dec = astiav.AllocCodecContext(codec)
	if d.threads > 0 {
		c.dec.SetThreadCount(d.threads)
	}
	if d.lowDelay {
		c.dec.SetFlags(c.dec.Flags().Add(astiav.CodecContextFlagLowDelay))
	}
	if d.extraData != nil {
		if err := c.dec.SetExtraData(d.extraData); err != nil {
			return nil, fmt.Errorf("%s decoder configuration: %w", spec.decodes, err)
		}
	}
	if err := c.dec.Open(codec, nil); err != nil {
		return nil, fmt.Errorf("open %s decoder: %w", spec.decodes, err)
	}
	c.pkt, c.encPkt, c.frm, c.filt = astiav.AllocPacket(), astiav.AllocPacket(), astiav.AllocFrame(), astiav.AllocFrame()
	return c, nil
}

// newFilterEncoder is a transcoder without a decoder: its frames come from
// a shared decoder through filter.
func newFilterEncoder(spec transcoderSpec) *transcoder {
	return &transcoder{spec: spec, encPkt: astiav.AllocPacket(), filt: astiav.AllocFrame()}
}

// decode feeds one compressed access unit through the whole transcoder.
func (c *transcoder) decode(data []byte, pts, dts int64, key bool) error {
	if err := c.pkt.FromData(data); err != nil {
		return err
	}
	c.pkt.SetPts(pts)
	c.pkt.SetDts(dts)
	if key {
		c.pkt.SetFlags(c.pkt.Flags().Add(astiav.PacketFlagKey))
	}
	err := c.dec.SendPacket(c.pkt)
	c.pkt.Unref()
	if err != nil {
		return fmt.Errorf("decode %s: %w", c.spec.decodes, err)
	}
	for {
		err := c.dec.ReceiveFrame(c.frm)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decode %s: %w", c.spec.decodes, err)
		}
		if c.spec.decoded != nil {
			c.spec.decoded()
		}
		err = c.filter(c.frm, nil)
		c.frm.Unref()
		if err != nil {
			return err
		}
	}
}

// filter takes one decoded frame through the filter graph and the
// encoder. tap, when set, sees every filtered frame before it is encoded
// (and must reference, not keep, it).
func (c *transcoder) filter(f *astiav.Frame, tap func(*astiav.Frame)) error {
	if c.graph != nil && f.Width() > 0 && (f.Width() != c.inW || f.Height() != c.inH || f.PixelFormat() != c.inFmt) {
		// The pictures changed size (the source's, or a cascade's larger
		// rung came or went): a graph for the new size, the same encoder.
		c.graph.Free()
		c.graph = nil
	}
	if c.graph == nil {
		if err := c.openGraph(f); err != nil {
			return err
		}
	}
	if err := c.bsrc.BuffersrcAddFrame(f, astiav.NewBuffersrcFlags(astiav.BuffersrcFlagKeepRef)); err != nil {
		return fmt.Errorf("filter graph input: %w", err)
	}
	for {
		err := c.bsink.BuffersinkGetFrame(c.filt, astiav.NewBuffersinkFlags())
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("filter graph: %w", err)
		}
		c.filt.SetPts(rescale(c.filt.Pts(), c.sinkTB, c.spec.clock))
		if tap != nil {
			tap(c.filt)
		}
		err = c.encode(c.filt)
		c.filt.Unref()
		if err != nil {
			return err
		}
	}
}

func (c *transcoder) openGraph(f *astiav.Frame) error {
	source, args, sink, spec := c.spec.graph(f)
	c.inW, c.inH, c.inFmt = f.Width(), f.Height(), f.PixelFormat()
	c.graph = astiav.AllocFilterGraph()
	c.graph.SetThreadCount(1)
	var err error
	if c.bsrc, err = c.graph.NewFilterContext(astiav.FindFilterByName(source), "in", args); err != nil {
		return fmt.Errorf("filter graph %s: %w", source, err)
	}
	if c.bsink, err = c.graph.NewFilterContext(astiav.FindFilterByName(sink), "out", nil); err != nil {
		return fmt.Errorf("filter graph %s: %w", sink, err)
	}
	if err := linkGraph(c.graph, c.bsrc, c.bsink, spec); err != nil {
		return fmt.Errorf("filter graph %q: %w", spec, err)
	}
	c.sinkTB = astiav.NewRational(1, int(c.spec.clock))
	if in := c.bsink.Inputs(); len(in) > 0 {
		c.sinkTB = in[0].TimeBase()
	}
	return nil
}

func (c *transcoder) encode(f *astiav.Frame) error {
	if c.spec.frame != nil {
		if err := c.spec.frame(f); err != nil {
			return err
		}
	}
	if c.enc == nil {
		enc, err := c.spec.openEncoder(f)
		c.enc = enc
		if err != nil {
			return err
		}
	} else if f.Width() > 0 && (f.Width() != c.enc.Width() || f.Height() != c.enc.Height()) {
		// libx264 reads the picture at the size it was opened with: a
		// smaller one must never reach it. A pipeline that does not fix
		// its output size ends when the source changes its size.
		return fmt.Errorf("encode %s: the picture changed size mid-stream, %dx%d to %dx%d", c.spec.encodes,
			c.enc.Width(), c.enc.Height(), f.Width(), f.Height())
	}
	if err := c.enc.SendFrame(f); err != nil {
		return fmt.Errorf("encode %s: %w", c.spec.encodes, err)
	}
	for {
		err := c.enc.ReceivePacket(c.encPkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("encode %s: %w", c.spec.encodes, err)
		}
		err = c.spec.onPacket(c.encPkt)
		c.encPkt.Unref()
		if err != nil {
			return err
		}
	}
}

// close frees everything the transcoder holds.
func (c *transcoder) close() {
	if c.enc != nil {
		c.enc.Free()
	}
	if c.dec != nil {
		c.dec.Free()
	}
	if c.graph != nil {
		c.graph.Free()
	}
	for _, f := range []*astiav.Frame{c.frm, c.filt} {
		if f != nil {
			f.Free()
		}
	}
	for _, p := range []*astiav.Packet{c.pkt, c.encPkt} {
		if p != nil {
			p.Free()
		}
	}
}

// linkGraph parses spec between the graph's source ("in") and sink
// ("out") and configures the graph.
func linkGraph(g *astiav.FilterGraph, src, sink *astiav.FilterContext, spec string) error {
	outputs, inputs := astiav.AllocFilterInOut(), astiav.AllocFilterInOut()
	defer outputs.Free()
	defer inputs.Free()
	outputs.SetName("in")
	outputs.SetFilterContext(src)
	outputs.SetPadIdx(0)
	outputs.SetNext(nil)
	inputs.SetName("out")
	inputs.SetFilterContext(sink)
	inputs.SetPadIdx(0)
	inputs.SetNext(nil)
	if err := g.Parse(spec, inputs, outputs); err != nil {
		return err
	}
	return g.Configure()
}

// rescale converts ts in time base tb to 1/rate.
func rescale(ts int64, tb astiav.Rational, rate int64) int64 {
	if tb.Num() == 1 && int64(tb.Den()) == rate {
		return ts
	}
	return ts * int64(tb.Num()) * rate / int64(tb.Den())
}
