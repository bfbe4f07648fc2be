package vod

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
)

// segTrack is one track of a media segment: its samples in decode order.
type segTrack struct {
	id       uint32
	baseTime uint64
	samples  []sample
}

// segmentWriter lays out moof+mdat segments the way mediacommon's
// fmp4.Part.Marshal does (tfhd default-base-is-moof, tfdt v1, trun v1 with
// data offset, durations, sizes, and flags / composition offsets when any
// sample needs them), without copying the samples: the moof is built in a
// buffer kept across segments and the payloads are read straight from the
// samples by the ChunkPutter.
type segmentWriter struct {
	moof []byte
	bufs [][]byte
	rd   segmentReader
}

// reader returns the segment's bytes as a reader valid until the next call.
func (w *segmentWriter) reader(seq uint32, tracks []segTrack) (io.Reader, int64, error) {
	b := w.moof[:0]
	box := func(typ string) int { // returns the box's start; size written by end
		b = append(b, 0, 0, 0, 0)
		b = append(b, typ...)
		return len(b) - 8
	}
	end := func(start int) { binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start)) }
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }

	moof := box("moof")
	mfhd := box("mfhd")
	u32(0)
	u32(seq)
	end(mfhd)
	dataOffsets := make([]int, len(tracks)) // trun data-offset field positions
	var dataSize int64
	for i, t := range tracks {
		traf := box("traf")
		tfhd := box("tfhd")
		u32(0x020000) // default-base-is-moof
		u32(t.id)
		end(tfhd)
		tfdt := box("tfdt")
		u32(1 << 24) // version 1
		b = binary.BigEndian.AppendUint64(b, t.baseTime)
		end(tfdt)
		flags := uint32(0x001 | 0x100 | 0x200)
		for _, s := range t.samples {
			if !s.key {
				flags |= 0x400
			}
			if s.pts != s.dts {
				flags |= 0x800
			}
		}
		trun := box("trun")
		u32(1<<24 | flags)
		u32(uint32(len(t.samples)))
		dataOffsets[i] = len(b)
		u32(0)
		for _, s := range t.samples {
			u32(s.dur)
			u32(uint32(len(s.payload)))
			if flags&0x400 != 0 {
				if s.key {
					u32(0)
				} else {
					u32(1 << 16)
				}
			}
			if flags&0x800 != 0 {
				u32(uint32(int32(s.pts - s.dts)))
			}
			dataSize += int64(len(s.payload))
		}
		end(trun)
		end(traf)
	}
	end(moof)
	if int64(len(b))+8+dataSize > math.MaxUint32 {
		return nil, 0, errors.New("segment larger than 4 GiB")
	}
	var off int64
	for i, t := range tracks {
		binary.BigEndian.PutUint32(b[dataOffsets[i]:], uint32(int64(len(b))+8+off))
		for _, s := range t.samples {
			off += int64(len(s.payload))
		}
	}
	u32(uint32(8 + dataSize))
	b = append(b, "mdat"...)
	w.moof = b
	w.bufs = append(w.bufs[:0], b)
	for _, t := range tracks {
		for _, s := range t.samples {
			if len(s.payload) > 0 {
				w.bufs = append(w.bufs, s.payload)
			}
		}
	}
	w.rd = segmentReader{bufs: w.bufs}
	return &w.rd, int64(len(b)) + dataSize, nil
}

// segmentReader reads a list of byte slices one after the other.
type segmentReader struct {
	bufs [][]byte
}

func (r *segmentReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(r.bufs) > 0 {
		c := copy(p[n:], r.bufs[0])
		n += c
		if c == len(r.bufs[0]) {
			r.bufs[0] = nil
			r.bufs = r.bufs[1:]
		} else {
			r.bufs[0] = r.bufs[0][c:]
		}
	}
	if n == 0 && len(r.bufs) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// WriteTo writes the slices without an intermediate buffer.
func (r *segmentReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for len(r.bufs) > 0 {
		m, err := w.Write(r.bufs[0])
		n += int64(m)
		if err != nil {
			return n, err
		}
		r.bufs[0] = nil
		r.bufs = r.bufs[1:]
	}
	return n, nil
}
