package ingest

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/gradient-cdn/gradient/media"
)

// fuzzTS is a valid program as mediacommon's writer makes it: H.264 (SPS,
// PPS, IDR, then P frames) and, with audio, AAC or Opus.
func fuzzTS(tb testing.TB, audio string, frames int) []byte {
	tb.Helper()
	video := &mpegts.Track{Codec: &codecs.H264{}}
	tracks := []*mpegts.Track{video}
	var at *mpegts.Track
	switch audio {
	case "aac":
		at = &mpegts.Track{Codec: &codecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{
			Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: 2, ChannelCount: 2}}}
	case "opus":
		at = &mpegts.Track{Codec: &codecs.Opus{ChannelCount: 2}}
	}
	if at != nil {
		tracks = append(tracks, at)
	}
	var buf bytes.Buffer
	w := &mpegts.Writer{W: &buf, Tracks: tracks}
	if err := w.Initialize(); err != nil {
		tb.Fatal(err)
	}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	for i := range int64(frames) {
		ts := 90000 + i*3000
		au := [][]byte{{0x41, 0x9a, byte(i)}}
		if i%4 == 0 {
			au = [][]byte{srtTestSPS, pps, {0x65, 0x88, byte(i)}}
		}
		if err := w.WriteH264(video, ts, ts, au); err != nil {
			tb.Fatal(err)
		}
		switch audio {
		case "aac":
			err := w.WriteMPEG4Audio(at, ts, [][]byte{{0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c}})
			if err != nil {
				tb.Fatal(err)
			}
		case "opus":
			if err := w.WriteOpus(at, ts, [][]byte{{0xfc, 0xff, 0xfe}}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return buf.Bytes()
}

func fuzzTSSeeds(f *testing.F) {
	f.Add(fuzzTS(f, "", 6))
	f.Add(fuzzTS(f, "aac", 6))
	f.Add(fuzzTS(f, "opus", 6))
	b := fuzzTS(f, "aac", 3)
	f.Add(b[:len(b)-100])                                       // cut inside a packet
	f.Add(append(bytes.Repeat([]byte{0x47}, 200), b...))        // junk before the first packet
	f.Add(append(append([]byte{}, b[:3*188]...), b[5*188:]...)) // packets missing
}

// FuzzTSDemuxer runs the SRT publish path (the cap-enforcing reader, then
// the demuxer) over arbitrary bytes. It must not panic (the SRT server
// recovers a demuxer panic, this does not); a refused codec says which
// in a short message; run ends with an error (EOF at the latest); and
// what it publishes obeys the hub's rules: a valid description, the first
// unit a video keyframe at DTS 0 carrying SPS and PPS, every keyframe
// decodable on its own, audio never before the first keyframe, and no
// more units than TS packets.
func FuzzTSDemuxer(f *testing.F) {
	fuzzTSSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		hub, err := media.NewHub(media.HubConfig{ReaderQueue: 4096, GOPCacheUnits: 16}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer hub.Close()
		var r *media.Reader
		var desc media.Description
		publish := func(d media.Description) (*media.Publisher, error) {
			if r != nil {
				t.Fatal("published twice")
			}
			pub, err := hub.Publish("live/fuzz", d, "fuzz")
			if err != nil {
				return nil, err
			}
			desc = d
			r, err = hub.Subscribe("live/fuzz", "fuzz")
			return pub, err
		}
		d, err := newTSDemuxer(newTSLimiter(bytes.NewReader(data), 64<<10, 256<<10), publish)
		if err != nil {
			var ce *tsCodecError
			if errors.As(err, &ce) && len(err.Error()) > 200 {
				t.Fatalf("codec refusal of %d bytes: %.200q", len(err.Error()), err)
			}
			return
		}
		if err := d.run(); err == nil {
			t.Fatal("run ended without an error")
		}
		pub := d.publisher()
		if pub == nil {
			return
		}
		if err := desc.Validate(); err != nil {
			t.Fatalf("published an invalid description: %v", err)
		}
		pub.Close()
		vi, ai := desc.VideoTrack(), desc.AudioTrack()
		n := 0
		for ; ; n++ {
			u, err := r.Read()
			if err != nil {
				break
			}
			if n == 0 && (u.Track != vi || !u.Key || u.DTS != 0) {
				t.Fatalf("first unit: track %d key %v DTS %v; want the video keyframe at 0", u.Track, u.Key, u.DTS)
			}
			switch u.Track {
			case vi:
				if u.Key && !fuzzHasParameterSets(u.Data) {
					t.Fatalf("keyframe %d without SPS and PPS", n)
				}
			case ai:
				if u.PTS < 0 {
					t.Fatalf("audio unit at %v, before the first keyframe", u.PTS)
				}
			default:
				t.Fatalf("unit of track %d, the description has %d", u.Track, len(desc.Tracks))
			}
		}
		if n > len(data)/tsPacketSize+1 {
			t.Fatalf("%d units from %d TS packets", n, len(data)/tsPacketSize)
		}
	})
}

func fuzzHasParameterSets(au [][]byte) bool {
	sps, pps := false, false
	for _, n := range au {
		if len(n) > 0 {
			sps = sps || h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS
			pps = pps || h264.NALUType(n[0]&0x1f) == h264.NALUTypePPS
		}
	}
	return sps && pps
}

// fuzzChunks returns at most chunk bytes per Read, so packets straddle reads.
type fuzzChunks struct {
	r     io.Reader
	chunk int
}

func (c fuzzChunks) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.chunk)]) }

// FuzzTSLimiter: the limiter never changes the bytes; with caps no stream
// of that length can pass it never refuses; with small caps what it lets
// through before refusing is a prefix of the input, and the refusal is a
// short *tsLimitError.
func FuzzTSLimiter(f *testing.F) {
	fuzzTSSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		chunk := 1
		if len(data) > 0 {
			chunk = 1 + int(data[len(data)-1])*7
		}
		got, err := io.ReadAll(newTSLimiter(fuzzChunks{bytes.NewReader(data), chunk}, int64(len(data)), int64(len(data))))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("caps of the input's size: %d of %d bytes, err %v", len(got), len(data), err)
		}
		got, err = io.ReadAll(newTSLimiter(fuzzChunks{bytes.NewReader(data), chunk}, 400, 1000))
		if !bytes.HasPrefix(data, got) {
			t.Fatal("the limiter changed the bytes")
		}
		if err != nil {
			var le *tsLimitError
			if !errors.As(err, &le) || len(err.Error()) > 200 {
				t.Fatalf("refusal %v", err)
			}
		} else if len(got) != len(data) {
			t.Fatalf("%d of %d bytes without an error", len(got), len(data))
		}
	})
}
