package vod

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/asticode/go-astiav"
)

// LadderRung is one rendition encoded besides the source: H.264 scaled to
// Height (width even, aspect kept) at about Kbps.
type LadderRung struct {
	// Name names the rendition's playlist (<name>.m3u8).
	Name   string `yaml:"name" json:"name"`
	Height int    `yaml:"height" json:"height"`
	Kbps   int    `yaml:"kbps" json:"kbps"`
}

// DefaultLadder is 720p and 360p, the live ladder's rungs.
func DefaultLadder() []LadderRung {
	return []LadderRung{{Name: "720p", Height: 720, Kbps: 2500}, {Name: "360p", Height: 360, Kbps: 800}}
}

var rungName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// validateLadder names a bad rung.
func validateLadder(l []LadderRung) error {
	seen := map[string]bool{"source": true, "index": true}
	for i, r := range l {
		switch {
		case !rungName.MatchString(r.Name):
			return fmt.Errorf("ladder[%d]: name %q: want 1 to 32 of a-z 0-9 _ -", i, r.Name)
		case seen[r.Name]:
			return fmt.Errorf("ladder[%d]: name %q is taken", i, r.Name)
		case r.Height < 16 || r.Height > 4320:
			return fmt.Errorf("ladder[%d] (%s): height %d is outside 16 … 4320", i, r.Name, r.Height)
		case r.Kbps < 50 || r.Kbps > 100000:
			return fmt.Errorf("ladder[%d] (%s): kbps %d is outside 50 … 100000", i, r.Name, r.Kbps)
		}
		seen[r.Name] = true
	}
	return nil
}

// rungsFor are the rungs of l lower than a source of height h, tallest
// first.
func rungsFor(l []LadderRung, h int) []LadderRung {
	var out []LadderRung
	for _, r := range l {
		if r.Height&^1 < h {
			out = append(out, r)
		}
	}
	for i := 1; i < len(out); i++ { // few rungs: insertion sort, stable
		for j := i; j > 0 && out[j].Height > out[j-1].Height; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// rungWidth keeps the source's display aspect at height h, even.
func rungWidth(w, h, srcH int) int {
	return max(2, int(math.Round(float64(w)*float64(h)/float64(srcH)/2))*2)
}

// keyer says which decoded frames become the rungs' IDR frames: exactly
// those that start a segment of the source rendition.
type keyer interface {
	// frame reports whether the frame at pts (source stream time base)
	// belongs in the rungs at all, and whether it starts a segment.
	frame(pts int64) (keep, key bool)
}

// cutKeyer follows a copied source: its remuxer records the PTS of every
// keyframe it cuts at before the ladder decodes that packet.
type cutKeyer struct{ src *remuxer }

func (k cutKeyer) frame(pts int64) (bool, bool) {
	if !k.src.started || pts < k.src.originPTS {
		return false, false // before the source's first keyframe
	}
	return true, pts == k.src.originPTS || k.src.cutTS[pts]
}

// gridKeyer forces a keyframe on every frame at or after each multiple of
// step from the first frame: the rule a transcoded source's encoder
// follows, so rungs fed the same frames key on the same ones.
type gridKeyer struct {
	step        int64
	first, next int64
}

func newGridKeyer(d time.Duration, tb astiav.Rational) *gridKeyer {
	return &gridKeyer{step: max(1, astiav.RescaleQ(int64(d/time.Microsecond), astiav.NewRational(1, 1000000), tb)),
		first: astiav.NoPtsValue}
}

func (g *gridKeyer) frame(pts int64) (bool, bool) {
	if g.first == astiav.NoPtsValue {
		g.first, g.next = pts, pts
	}
	if pts >= g.next {
		for g.next <= pts {
			g.next += g.step
		}
		return true, true
	}
	return true, false
}

// ladder decodes the source video once and encodes every rung from it:
// one filter graph (split into a scale per rung), one libx264 encoder per
// rung, each feeding its rung's remuxer.
type ladder struct {
	dec    *astiav.CodecContext
	tb     astiav.Rational
	names  []string // of the outputs: the rungs, then "source" when fed here
	sizes  [][2]int
	encs   []*astiav.CodecContext
	out    []*remuxer
	keys   keyer
	graph  *astiav.FilterGraph
	bsrc   *astiav.FilterContext
	sinks  []*astiav.FilterContext
	frm    *astiav.Frame
	filt   *astiav.Frame
	encPkt *astiav.Packet
	ended  []bool
	// keyPTS are the frames forced to IDR, looked up again as each leaves
	// the graph.
	keyPTS map[int64]bool
}

func (l *ladder) close() {
	for _, c := range l.encs {
		if c != nil {
			c.Free()
		}
	}
	if l.dec != nil {
		l.dec.Free()
	}
	if l.graph != nil {
		l.graph.Free()
	}
	for _, f := range []*astiav.Frame{l.frm, l.filt} {
		if f != nil {
			f.Free()
		}
	}
	if l.encPkt != nil {
		l.encPkt.Free()
	}
}

// newLadder opens the decoder and one encoder per rung; the source video
// is srcW×srcH.
func newLadder(in *input, rungs []LadderRung, srcW, srcH int, keys keyer) (l *ladder, err error) {
	s := in.video
	cp := s.CodecParameters()
	l = &ladder{tb: s.TimeBase(), keys: keys, keyPTS: map[int64]bool{}}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	name := cp.CodecID().Name()
	dc := astiav.FindDecoder(cp.CodecID())
	if dc == nil {
		return nil, fmt.Errorf("%w: this FFmpeg has no %s decoder", ErrNeedsTranscode, name)
	}
	if l.dec = astiav.AllocCodecContext(dc); l.dec == nil {
		return nil, errors.New("FFmpeg could not allocate a decoder")
	}
	if err := l.dec.FromCodecParameters(cp); err != nil {
		return nil, fmt.Errorf("%s decoder parameters: %w", name, err)
	}
	l.dec.SetTimeBase(s.TimeBase())
	// As many decoding threads as cores, as the ffmpeg command has: one
	// decode feeds every rung, so it must keep up with all of them.
	l.dec.SetThreadCount(0)
	if err := l.dec.Open(dc, nil); err != nil {
		return nil, fmt.Errorf("open %s decoder: %w", name, err)
	}
	codec := astiav.FindEncoderByName("libx264")
	if codec == nil {
		return nil, fmt.Errorf("%w: this FFmpeg has no libx264 encoder", ErrNeedsTranscode)
	}
	fps := in.fc.GuessFrameRate(s, nil)
	if fps.Num() <= 0 || fps.Den() <= 0 {
		fps = astiav.NewRational(25, 1)
	}
	for _, r := range rungs {
		l.names = append(l.names, r.Name)
		h := r.Height &^ 1
		w := rungWidth(srcW, h, srcH)
		l.sizes = append(l.sizes, [2]int{w, h})
		enc := astiav.AllocCodecContext(codec)
		if enc == nil {
			return nil, errors.New("FFmpeg could not allocate an encoder")
		}
		l.encs = append(l.encs, enc)
		enc.SetWidth(w)
		enc.SetHeight(h)
		enc.SetPixelFormat(astiav.PixelFormatYuv420P)
		enc.SetTimeBase(s.TimeBase())
		enc.SetFramerate(fps)
		if sar := cp.SampleAspectRatio(); sar.Num() > 0 && sar.Den() > 0 {
			enc.SetSampleAspectRatio(sar)
		}
		enc.SetFlags(enc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
		enc.SetBitRate(int64(r.Kbps) * 1000)
		opts := astiav.NewDictionary()
		// IDR frames only where the source starts a segment (forced
		// below; keyint=infinite and no scene cuts add none), and no
		// B-frames, so that a rung's decode times never precede its
		// presentation times and it shares the source's time origin.
		for _, kv := range [][2]string{
			{"preset", transcodePreset},
			{"profile", "high"},
			{"maxrate", strconv.Itoa(r.Kbps*3/2) + "k"},
			{"bufsize", strconv.Itoa(r.Kbps*2) + "k"},
			{"bf", "0"},
			{"sc_threshold", "0"},
			{"forced-idr", "1"},
			{"x264-params", "keyint=infinite:scenecut=0:open-gop=0:log=-1"},
		} {
			if err := opts.Set(kv[0], kv[1], 0); err != nil {
				opts.Free()
				return nil, fmt.Errorf("libx264 option %s: %w", kv[0], err)
			}
		}
		err := enc.Open(codec, opts)
		opts.Free()
		if err != nil {
			return nil, fmt.Errorf("open libx264 for %s (preset %s): %w", r.Name, transcodePreset, err)
		}
	}
	l.frm, l.filt, l.encPkt = astiav.AllocFrame(), astiav.AllocFrame(), astiav.AllocPacket()
	l.ended = make([]bool, len(l.encs))
	return l, nil
}

// feedSource makes the transcoded source rendition one more output of the
// ladder's graph, so a source that must be transcoded is decoded once for
// all renditions: enc (the source's encoder, which the ladder now owns)
// at w×h, its packets to r.
func (l *ladder) feedSource(enc *astiav.CodecContext, w, h int, r *remuxer) {
	l.names = append(l.names, "source")
	l.encs = append(l.encs, enc)
	l.sizes = append(l.sizes, [2]int{w, h})
	l.out = append(l.out, r)
	l.ended = append(l.ended, false)
}

// openGraph builds buffer → split=N → scale per rung → buffersink per rung
// for the first decoded frame's format.
func (l *ladder) openGraph(f *astiav.Frame) error {
	l.graph = astiav.AllocFilterGraph()
	if l.graph == nil {
		return errors.New("FFmpeg could not allocate a filter graph")
	}
	var err error
	if l.bsrc, err = l.graph.NewFilterContext(astiav.FindFilterByName("buffer"), "in", videoBufferArgs(f, l.tb)); err != nil {
		return fmt.Errorf("filter graph buffer: %w", err)
	}
	outputs := astiav.AllocFilterInOut()
	outputs.SetName("in")
	outputs.SetFilterContext(l.bsrc)
	outputs.SetPadIdx(0)
	outputs.SetNext(nil)
	defer outputs.Free()
	var inputs *astiav.FilterInOut
	var spec strings.Builder
	fmt.Fprintf(&spec, "[in]split=%d", len(l.encs))
	for i := range l.encs {
		fmt.Fprintf(&spec, "[s%d]", i)
	}
	for i := len(l.encs) - 1; i >= 0; i-- {
		sink, err := l.graph.NewFilterContext(astiav.FindFilterByName("buffersink"), fmt.Sprintf("out%d", i), nil)
		if err != nil {
			if inputs != nil {
				inputs.Free()
			}
			return fmt.Errorf("filter graph buffersink: %w", err)
		}
		l.sinks = append([]*astiav.FilterContext{sink}, l.sinks...)
		io := astiav.AllocFilterInOut()
		io.SetName(fmt.Sprintf("out%d", i))
		io.SetFilterContext(sink)
		io.SetPadIdx(0)
		io.SetNext(inputs)
		inputs = io
	}
	defer inputs.Free() // the head frees what is left of the list
	for i, sz := range l.sizes {
		fmt.Fprintf(&spec, ";[s%d]scale=%d:%d,format=yuv420p[out%d]", i, sz[0], sz[1], i)
	}
	if err := l.graph.Parse(spec.String(), inputs, outputs); err != nil {
		return fmt.Errorf("filter graph %q: %w", spec.String(), err)
	}
	if err := l.graph.Configure(); err != nil {
		return fmt.Errorf("filter graph %q: %w", spec.String(), err)
	}
	return nil
}

// decode feeds one source video packet (nil: the end) through the ladder.
func (l *ladder) decode(pkt *astiav.Packet) error {
	if err := l.dec.SendPacket(pkt); err != nil && !errors.Is(err, astiav.ErrEof) {
		if errors.Is(err, astiav.ErrInvaliddata) {
			return nil
		}
		return fmt.Errorf("ladder: decode: %w", err)
	}
	for {
		err := l.dec.ReceiveFrame(l.frm)
		if errors.Is(err, astiav.ErrEagain) {
			return nil
		}
		if errors.Is(err, astiav.ErrEof) {
			if l.graph == nil {
				return l.encodeAll(nil)
			}
			return l.filter(nil)
		}
		if err != nil {
			if errors.Is(err, astiav.ErrInvaliddata) {
				continue
			}
			return fmt.Errorf("ladder: decode: %w", err)
		}
		if l.frm.Pts() == astiav.NoPtsValue {
			l.frm.Unref()
			continue
		}
		keep, key := l.keys.frame(l.frm.Pts())
		if !keep {
			l.frm.Unref()
			continue
		}
		if key {
			l.keyPTS[l.frm.Pts()] = true
		}
		err = l.filter(l.frm)
		l.frm.Unref()
		if err != nil {
			return err
		}
	}
}

func (l *ladder) filter(f *astiav.Frame) error {
	if l.graph == nil {
		if err := l.openGraph(f); err != nil {
			return err
		}
	}
	if err := l.bsrc.BuffersrcAddFrame(f, astiav.NewBuffersrcFlags(astiav.BuffersrcFlagKeepRef)); err != nil {
		return fmt.Errorf("ladder: filter graph input: %w", err)
	}
	for i, sink := range l.sinks {
		if l.ended[i] {
			continue
		}
		sinkTB := l.tb
		if in := sink.Inputs(); len(in) > 0 {
			sinkTB = in[0].TimeBase()
		}
		for {
			err := sink.BuffersinkGetFrame(l.filt, astiav.NewBuffersinkFlags())
			if errors.Is(err, astiav.ErrEagain) {
				break
			}
			if errors.Is(err, astiav.ErrEof) {
				l.ended[i] = true
				if err := l.encode(i, nil); err != nil {
					return err
				}
				break
			}
			if err != nil {
				return fmt.Errorf("ladder: filter graph: %w", err)
			}
			if l.keyPTS[astiav.RescaleQ(l.filt.Pts(), sinkTB, l.tb)] {
				l.filt.SetPictureType(astiav.PictureTypeI)
			} else {
				l.filt.SetPictureType(astiav.PictureTypeNone)
			}
			l.filt.SetPts(astiav.RescaleQ(l.filt.Pts(), sinkTB, l.encs[i].TimeBase()))
			err = l.encode(i, l.filt)
			l.filt.Unref()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *ladder) encodeAll(f *astiav.Frame) error {
	for i := range l.encs {
		if err := l.encode(i, f); err != nil {
			return err
		}
	}
	return nil
}

func (l *ladder) encode(i int, f *astiav.Frame) error {
	enc := l.encs[i]
	if err := enc.SendFrame(f); err != nil && !errors.Is(err, astiav.ErrEof) {
		return fmt.Errorf("ladder: encode %s: %w", l.names[i], err)
	}
	for {
		err := enc.ReceivePacket(l.encPkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("ladder: encode %s: %w", l.names[i], err)
		}
		err = l.out[i].videoPacket(l.encPkt)
		l.encPkt.Unref()
		if err != nil {
			return err
		}
	}
}
