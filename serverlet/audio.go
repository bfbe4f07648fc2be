package serverlet

import (
	"fmt"
	"strconv"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gradient-cdn/gradient/media"
)

// opusRate is Opus's only sample rate in WebRTC.
const opusRate = 48000

// audioPath transcodes AAC to Opus (decode → aresample to 48 kHz in 20 ms
// frames → libopus) or Opus to AAC (openAACPath: decode → 1024-sample
// frames → FFmpeg's AAC-LC encoder).
type audioPath struct {
	run      *run
	srcTrack *media.Track
	track    *media.Track // the track published
	layout   astiav.ChannelLayout
	rate     int64 // the source's sample rate: the decoder's packet time base
	tc       *transcoder

	inSamples  int64  // samples per source packet: 1024 (AAC) or 960 (20 ms Opus)
	outFormat  string // sample format the encoder takes
	outSamples int    // samples per encoded frame
}

// openAudioPath opens the whole transcoder up front, so that a missing codec
// fails the rendition before it is published.
func openAudioPath(r *run, src *media.Track, bitrate int) (a *audioPath, err error) {
	a = &audioPath{run: r, srcTrack: src, layout: astiav.ChannelLayoutStereo, rate: int64(src.SampleRate),
		inSamples: 1024, outFormat: "flt", outSamples: 960}
	if src.AAC != nil && src.AAC.SampleRate > 0 {
		a.rate = int64(src.AAC.SampleRate)
	}
	if a.rate <= 0 {
		a.rate = opusRate
	}
	if bitrate <= 0 {
		bitrate = 64000
	}
	channels := 2
	if src.Channels == 1 || (src.AAC != nil && src.AAC.ChannelCount == 1) {
		channels, a.layout = 1, astiav.ChannelLayoutMono
	}
	a.track = &media.Track{Codec: media.CodecOpus, Channels: channels, SampleRate: opusRate}
	d := decoderOptions{id: astiav.CodecIDAac}
	if src.AAC != nil {
		if d.extraData, err = src.AAC.Marshal(); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
	}
	if a.tc, err = newTranscoder(transcoderSpec{decodes: "AAC", encodes: "Opus", clock: opusRate,
		graph: a.graph, onPacket: a.emit}, d); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if err = a.openEncoder(astiav.FindEncoderByName("libopus"), "libopus", astiav.SampleFormatFlt, bitrate); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *audioPath) unit(u *media.Unit) error {
	pts := media.DurationToTicks(u.PTS, a.rate)
	for _, au := range u.Data {
		if err := a.tc.decode(au, pts, pts, false); err != nil {
			return err
		}
		pts += a.inSamples
	}
	return nil
}

// graph resamples to Opus's rate and layout in 20 ms frames.
func (a *audioPath) graph(f *astiav.Frame) (string, astiav.FilterArgs, string, string) {
	layout := f.ChannelLayout().String()
	switch f.ChannelLayout().NbChannels() {
	case 1:
		layout = "mono"
	case 2:
		layout = "stereo"
	}
	outLayout := "stereo"
	if a.track.Channels == 1 {
		outLayout = "mono"
	}
	return "abuffer", astiav.FilterArgs{
			"time_base":      "1/" + strconv.FormatInt(a.rate, 10),
			"sample_rate":    strconv.Itoa(f.SampleRate()),
			"sample_fmt":     f.SampleFormat().Name(),
			"channel_layout": layout,
		}, "abuffersink",
		fmt.Sprintf("aresample=%d,aformat=sample_fmts=%s:sample_rates=%d:channel_layouts=%s,asetnsamples=n=%d:p=0",
			opusRate, a.outFormat, opusRate, outLayout, a.outSamples)
}

// emit writes one encoded packet to the rendition.
func (a *audioPath) emit(pkt *astiav.Packet) error {
	if pts := pkt.Pts(); pts >= 0 { // the encoder's priming precedes the stream
		t := media.TicksToDuration(pts, opusRate)
		a.run.write(&media.Unit{
			Track: a.run.outIdx[a.run.srcDesc.AudioTrack()], PTS: t, DTS: t,
			Data: [][]byte{append([]byte(nil), pkt.Data()...)}, Key: true, Received: time.Now(),
		})
	}
	return nil
}

func (a *audioPath) close() {
	if a.tc != nil {
		a.tc.close()
	}
}

// openAACPath opens an Opus → AAC-LC transcoder (48 kHz, the source's
// channels, bitrate bit/s), for players that take AAC only (MPEG-TS HLS,
// RTSP readers).
func openAACPath(r *run, src *media.Track, bitrate int) (a *audioPath, err error) {
	a = &audioPath{run: r, srcTrack: src, layout: astiav.ChannelLayoutStereo, rate: opusRate,
		inSamples: 960, outFormat: "fltp", outSamples: mpeg4audio.SamplesPerAccessUnit}
	if bitrate <= 0 {
		bitrate = 128000
	}
	channels := 2
	if src.Channels == 1 {
		channels, a.layout = 1, astiav.ChannelLayoutMono
	}
	a.track = &media.Track{Codec: media.CodecAAC, Channels: channels, SampleRate: opusRate,
		AAC: &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: opusRate, ChannelConfig: uint8(channels)}}
	// OpusHead (RFC 7845): version 1, channels, no pre-skip, 48 kHz, no
	// gain, channel mapping family 0.
	head := []byte{'O', 'p', 'u', 's', 'H', 'e', 'a', 'd', 1, byte(channels), 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0}
	if a.tc, err = newTranscoder(transcoderSpec{decodes: "Opus", encodes: "AAC", clock: opusRate,
		graph: a.graph, onPacket: a.emit}, decoderOptions{id: astiav.CodecIDOpus, extraData: head}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if err = a.openEncoder(astiav.FindEncoder(astiav.CodecIDAac), "AAC", astiav.SampleFormatFltp, bitrate); err != nil {
		return nil, err
	}
	return a, nil
}

// openEncoder opens the path's encoder c (named name in errors) at 48 kHz
// in the path's channel layout; the transcoder frees it.
func (a *audioPath) openEncoder(c *astiav.Codec, name string, sf astiav.SampleFormat, bitrate int) error {
	if c == nil {
		return fmt.Errorf("this FFmpeg has no %s encoder", name)
	}
	a.tc.enc = astiav.AllocCodecContext(c)
	a.tc.enc.SetSampleFormat(sf)
	a.tc.enc.SetSampleRate(opusRate)
	a.tc.enc.SetChannelLayout(a.layout)
	a.tc.enc.SetBitRate(int64(bitrate))
	a.tc.enc.SetTimeBase(astiav.NewRational(1, opusRate))
	if err := a.tc.enc.Open(c, nil); err != nil {
		return fmt.Errorf("open %s encoder: %w", name, err)
	}
	return nil
}
