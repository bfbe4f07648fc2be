package serverlet

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/media"
)

// opusRate is Opus's only sample rate in WebRTC.
const opusRate = 48000

// audioPath transcodes AAC to Opus: decode → aresample to 48 kHz in 20 ms
// frames → libopus.
type audioPath struct {
	run      *run
	srcTrack *media.Track
	track    *media.Track // the Opus track published
	layout   astiav.ChannelLayout

	dec    *astiav.CodecContext
	enc    *astiav.CodecContext
	pkt    *astiav.Packet
	encPkt *astiav.Packet
	frm    *astiav.Frame
	filt   *astiav.Frame
	graph  *astiav.FilterGraph
	bsrc   *astiav.FilterContext
	bsink  *astiav.FilterContext
	sinkTB astiav.Rational
}

func openAudioPath(r *run, src *media.Track, bitrate int) (a *audioPath, err error) {
	a = &audioPath{run: r, srcTrack: src, layout: astiav.ChannelLayoutStereo}
	if bitrate <= 0 {
		bitrate = 64000
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	channels := 2
	if src.Channels == 1 || (src.AAC != nil && src.AAC.ChannelCount == 1) {
		channels, a.layout = 1, astiav.ChannelLayoutMono
	}
	a.track = &media.Track{Codec: media.CodecOpus, Channels: channels, SampleRate: opusRate}
	dc := astiav.FindDecoder(astiav.CodecIDAac)
	if dc == nil {
		return nil, errors.New("no AAC decoder in this FFmpeg")
	}
	a.dec = astiav.AllocCodecContext(dc)
	if src.AAC != nil {
		asc, err := src.AAC.Marshal()
		if err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		if err := a.dec.SetExtraData(asc); err != nil {
			return nil, err
		}
	}
	if err := a.dec.Open(dc, nil); err != nil {
		return nil, fmt.Errorf("open AAC decoder: %w", err)
	}
	ec := astiav.FindEncoderByName("libopus")
	if ec == nil {
		return nil, errors.New("this FFmpeg has no libopus encoder")
	}
	a.enc = astiav.AllocCodecContext(ec)
	a.enc.SetSampleFormat(astiav.SampleFormatFlt)
	a.enc.SetSampleRate(opusRate)
	a.enc.SetChannelLayout(a.layout)
	a.enc.SetBitRate(int64(bitrate))
	a.enc.SetTimeBase(astiav.NewRational(1, opusRate))
	if err := a.enc.Open(ec, nil); err != nil {
		return nil, fmt.Errorf("open libopus: %w", err)
	}
	a.pkt, a.encPkt, a.frm, a.filt = astiav.AllocPacket(), astiav.AllocPacket(), astiav.AllocFrame(), astiav.AllocFrame()
	return a, nil
}

func (a *audioPath) unit(u *media.Unit) error {
	rate := int64(a.srcTrack.SampleRate)
	if a.srcTrack.AAC != nil && a.srcTrack.AAC.SampleRate > 0 {
		rate = int64(a.srcTrack.AAC.SampleRate)
	}
	if rate <= 0 {
		rate = opusRate
	}
	pts := media.DurationToTicks(u.PTS, rate)
	for _, au := range u.Data {
		if err := a.pkt.FromData(au); err != nil {
			return err
		}
		a.pkt.SetPts(pts)
		a.pkt.SetDts(pts)
		pts += 1024 // samples per AAC-LC access unit
		err := a.dec.SendPacket(a.pkt)
		a.pkt.Unref()
		if err != nil {
			return fmt.Errorf("decode AAC: %w", err)
		}
		for {
			err := a.dec.ReceiveFrame(a.frm)
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				break
			}
			if err != nil {
				return fmt.Errorf("decode AAC: %w", err)
			}
			err = a.filter(a.frm, rate)
			a.frm.Unref()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *audioPath) filter(f *astiav.Frame, rate int64) error {
	if a.graph == nil {
		if err := a.openGraph(f, rate); err != nil {
			return err
		}
	}
	if err := a.bsrc.BuffersrcAddFrame(f, astiav.NewBuffersrcFlags(astiav.BuffersrcFlagKeepRef)); err != nil {
		return fmt.Errorf("audio filter input: %w", err)
	}
	for {
		err := a.bsink.BuffersinkGetFrame(a.filt, astiav.NewBuffersinkFlags())
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audio filter: %w", err)
		}
		a.filt.SetPts(rescale(a.filt.Pts(), a.sinkTB, opusRate))
		err = a.encode(a.filt)
		a.filt.Unref()
		if err != nil {
			return err
		}
	}
}

func (a *audioPath) openGraph(f *astiav.Frame, rate int64) error {
	a.graph = astiav.AllocFilterGraph()
	a.graph.SetThreadCount(1)
	layout := f.ChannelLayout().String()
	switch f.ChannelLayout().NbChannels() {
	case 1:
		layout = "mono"
	case 2:
		layout = "stereo"
	}
	var err error
	if a.bsrc, err = a.graph.NewFilterContext(astiav.FindFilterByName("abuffer"), "in", astiav.FilterArgs{
		"time_base":      "1/" + strconv.FormatInt(rate, 10),
		"sample_rate":    strconv.Itoa(f.SampleRate()),
		"sample_fmt":     f.SampleFormat().Name(),
		"channel_layout": layout,
	}); err != nil {
		return fmt.Errorf("audio filter source: %w", err)
	}
	if a.bsink, err = a.graph.NewFilterContext(astiav.FindFilterByName("abuffersink"), "out", nil); err != nil {
		return fmt.Errorf("audio filter sink: %w", err)
	}
	outLayout := "stereo"
	if a.track.Channels == 1 {
		outLayout = "mono"
	}
	spec := fmt.Sprintf("aresample=%d,aformat=sample_fmts=flt:sample_rates=%d:channel_layouts=%s,asetnsamples=n=960:p=0",
		opusRate, opusRate, outLayout)
	if err := linkGraph(a.graph, a.bsrc, a.bsink, spec); err != nil {
		return fmt.Errorf("audio filter %q: %w", spec, err)
	}
	a.sinkTB = astiav.NewRational(1, opusRate)
	if in := a.bsink.Inputs(); len(in) > 0 {
		a.sinkTB = in[0].TimeBase()
	}
	return nil
}

func (a *audioPath) encode(f *astiav.Frame) error {
	if err := a.enc.SendFrame(f); err != nil {
		return fmt.Errorf("encode Opus: %w", err)
	}
	for {
		err := a.enc.ReceivePacket(a.encPkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("encode Opus: %w", err)
		}
		if pts := a.encPkt.Pts(); pts >= 0 { // the encoder's priming precedes the stream
			t := media.TicksToDuration(pts, opusRate)
			a.run.write(&media.Unit{
				Track: a.run.outIdx[a.run.srcDesc.AudioTrack()], PTS: t, DTS: t,
				Data: [][]byte{append([]byte(nil), a.encPkt.Data()...)}, Key: true, Received: time.Now(),
			})
		}
		a.encPkt.Unref()
	}
}

func (a *audioPath) close() {
	if a.enc != nil {
		a.enc.Free()
	}
	if a.dec != nil {
		a.dec.Free()
	}
	if a.graph != nil {
		a.graph.Free()
	}
	for _, f := range []*astiav.Frame{a.frm, a.filt} {
		if f != nil {
			f.Free()
		}
	}
	for _, p := range []*astiav.Packet{a.pkt, a.encPkt} {
		if p != nil {
			p.Free()
		}
	}
}
