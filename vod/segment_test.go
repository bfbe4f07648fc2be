package vod

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"io"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
)

// The segment writer lays out the same bytes as mediacommon's Part.Marshal,
// with and without B-frames, non-sync samples and a second track.
func TestSegmentWriterMatchesMediacommon(t *testing.T) {
	pl := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	cases := [][]segTrack{
		{{id: 1, baseTime: 0, samples: []sample{{dts: 0, pts: 0, dur: 3000, key: true, payload: pl(70000, 1)}}}},
		{
			{id: 1, baseTime: 1 << 33, samples: []sample{
				{dts: 0, pts: 3000, dur: 3000, key: true, payload: pl(100, 1)},
				{dts: 3000, pts: 9000, dur: 3000, payload: pl(200, 2)},
				{dts: 6000, pts: 6000, dur: 3000, payload: pl(300000, 3)},
			}},
			{id: 2, baseTime: 48000, samples: []sample{
				{dts: 0, pts: 0, dur: 1024, key: true, payload: pl(300, 4)},
				{dts: 1024, pts: 1024, dur: 1024, key: true, payload: pl(310, 5)},
			}},
		},
	}
	var w segmentWriter
	for i, tracks := range cases {
		part := fmp4.Part{SequenceNumber: uint32(i + 7)}
		for _, tr := range tracks {
			pt := &fmp4.PartTrack{ID: int(tr.id), BaseTime: tr.baseTime}
			for _, s := range tr.samples {
				pt.Samples = append(pt.Samples, &fmp4.Sample{Duration: s.dur, PTSOffset: int32(s.pts - s.dts),
					IsNonSyncSample: !s.key, Payload: s.payload})
			}
			part.Tracks = append(part.Tracks, pt)
		}
		var want seekablebuffer.Buffer
		if err := part.Marshal(&want); err != nil {
			t.Fatal(err)
		}
		rd, size, err := w.reader(uint32(i+7), tracks)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rd)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != size || !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("case %d: %d bytes (said %d), mediacommon %d; equal %v", i, len(got), size, want.Len(), bytes.Equal(got, want.Bytes()))
		}
		// Through the chunk store's path as well.
		rd, _, _ = w.reader(uint32(i+7), tracks)
		var file bytes.Buffer
		h := sha256New()
		if _, err := copyHashing(&file, h, rd); err != nil || !bytes.Equal(file.Bytes(), want.Bytes()) {
			t.Fatalf("case %d: copyHashing: %v, equal %v", i, err, bytes.Equal(file.Bytes(), want.Bytes()))
		}
	}
}

func sha256New() hash.Hash { return sha256.New() }
