package rtpdepay_test

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/internal/rtpdepay"
	"github.com/gradient-cdn/gradient/media"
)

// A real 320x240 baseline SPS/PPS (x264).
var (
	sps = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80}
	pps = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
	aud = []byte{0x09, 0x10}
	idr = []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	ps  = []byte{0x41, 0x9a, 0x24, 0x6c, 0x41}
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// videoPackets packetizes one access unit at 90 kHz timestamp ts.
func videoPackets(t *testing.T, enc *rtph264.Encoder, au [][]byte, ts uint32) []*rtp.Packet {
	t.Helper()
	pkts, err := enc.Encode(au)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		p.Timestamp = ts
	}
	return pkts
}

func decodeAll(s *rtpdepay.Stream, tr *rtpdepay.Track, pkts []*rtp.Packet, pts int64) []*media.Unit {
	var out []*media.Unit
	for _, p := range pkts {
		out = append(out, s.Decode(tr, p, pts, true, time.Now())...)
	}
	return out
}

func TestVideoStartsAtAnIDRWithItsParameterSetsAfterTheDelimiter(t *testing.T) {
	f := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: sps, PPS: pps}
	s, err := rtpdepay.New(&description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{f}}}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := s.Description(); !ok || string(d.Tracks[0].SPS) != string(sps) {
		t.Fatalf("description %v (%v): want the SDP's parameter sets", d.Tracks, ok)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	v := s.Video()
	if u := decodeAll(s, v, videoPackets(t, enc, [][]byte{aud, ps}, 0), 0); len(u) != 0 {
		t.Fatalf("a P-frame before any IDR gave units %v", u)
	}
	u := decodeAll(s, v, videoPackets(t, enc, [][]byte{aud, idr}, 3000), 3000)
	if len(u) != 1 || !u[0].Key {
		t.Fatalf("the IDR gave %v, want one key unit", u)
	}
	if got, want := fmt.Sprint(u[0].Data), fmt.Sprint([][]byte{aud, sps, pps, idr}); got != want {
		t.Fatalf("IDR unit %s, want %s (AUD first, then the parameter sets)", got, want)
	}
	if u[0].PTS != time.Second/30 {
		t.Fatalf("PTS %v, want 33.3ms (3000 ticks of 90 kHz)", u[0].PTS)
	}
	if u := decodeAll(s, v, videoPackets(t, enc, [][]byte{aud, ps}, 6000), 6000); len(u) != 1 || u[0].Key {
		t.Fatalf("the P-frame after the IDR gave %v, want one unit", u)
	}
}

func TestDecodeErrorMakesVideoWaitForTheNextIDR(t *testing.T) {
	f := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: sps, PPS: pps}
	s, err := rtpdepay.New(&description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{f}}}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	v := s.Video()
	decodeAll(s, v, videoPackets(t, enc, [][]byte{idr}, 0), 0)
	// An unsupported aggregation packet (STAP-B) is a decode error.
	bad := &rtp.Packet{Header: rtp.Header{PayloadType: 96, Marker: true, Timestamp: 3000}, Payload: []byte{0x19, 0, 0}}
	if u := s.Decode(v, bad, 3000, true, time.Now()); len(u) != 0 || s.Errors() != 1 {
		t.Fatalf("bad packet: units %v, errors %d; want none and 1", u, s.Errors())
	}
	if u := decodeAll(s, v, videoPackets(t, enc, [][]byte{ps}, 6000), 6000); len(u) != 0 {
		t.Fatalf("a P-frame after a decode error gave %v, want nothing until the next IDR", u)
	}
	if u := decodeAll(s, v, videoPackets(t, enc, [][]byte{idr}, 9000), 9000); len(u) != 1 || !u[0].Key {
		t.Fatalf("the next IDR gave %v, want one key unit", u)
	}
}

func TestLATMAudioBecomesAACUnits(t *testing.T) {
	asc := &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: 2, ChannelCount: 2}
	smc := &mpeg4audio.StreamMuxConfig{Programs: []*mpeg4audio.StreamMuxConfigProgram{{
		Layers: []*mpeg4audio.StreamMuxConfigLayer{{AudioSpecificConfig: asc, LatmBufferFullness: 255}}}}}
	latm := &format.MPEG4AudioLATM{PayloadTyp: 97, ProfileLevelID: 30, StreamMuxConfig: smc}
	h := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: sps, PPS: pps}
	s, err := rtpdepay.New(&description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{h}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{latm}},
	}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.Description()
	if len(d.Tracks) != 2 || d.Tracks[1].Codec != media.CodecAAC || d.Tracks[1].SampleRate != 48000 || d.Tracks[1].Channels != 2 {
		t.Fatalf("tracks %v, want H264 and AAC 48 kHz stereo", d.Tracks)
	}
	payload := []byte{0x21, 0x10, 0x05, 0x00, 0xa0, 0x19, 0x33, 0x87}
	el, err := mpeg4audio.AudioMuxElement{StreamMuxConfig: smc, Payloads: [][][][]byte{{{payload}}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := latm.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := enc.Encode(el)
	if err != nil {
		t.Fatal(err)
	}
	a := s.Tracks()[1]
	var units []*media.Unit
	for _, p := range pkts {
		units = append(units, s.Decode(a, p, 48000, true, time.Now())...)
	}
	if len(units) != 1 || units[0].Track != 1 || string(units[0].Data[0]) != string(payload) || units[0].PTS != time.Second {
		t.Fatalf("LATM packet gave %v, want one AAC unit of track 1 at 1s with the payload", units)
	}
}

func TestNoH264IsRefusedNamingTheCodec(t *testing.T) {
	_, err := rtpdepay.New(&description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H265{PayloadTyp: 96}}}}}, quiet())
	var ce *rtpdepay.CodecError
	if !errors.As(err, &ce) || ce.Msg != "codec H265 not supported" {
		t.Fatalf("New(H265) = %v, want a CodecError naming H265", err)
	}
}
