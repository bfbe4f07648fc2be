package vod

import (
	"encoding/binary"
	"math/bits"
)

// freqSketch is TinyLFU's frequency sketch: a count-min sketch of 4-bit
// counters (4 rows), aged by halving every counter once the additions
// reach ten times its width, so that the popularity it reports follows
// the recent requests. A chunk's digest is SHA-256, so its four 64-bit
// words are four independent hashes: no hashing is needed.
//
// Not safe for concurrent use: the DiskCache holds its policy lock.
type freqSketch struct {
	counters  []uint8 // 4 rows of width counters
	width     uint64  // a power of two, 16 counters per entry
	entries   int     // what it is sized for
	additions int
}

func newFreqSketch(entries int) *freqSketch {
	s := &freqSketch{}
	s.resize(entries)
	return s
}

// resize sizes the sketch for about entries distinct chunks, forgetting
// what it counted (as Caffeine's does when the cache grows).
func (s *freqSketch) resize(entries int) {
	entries = max(entries, 64)
	s.entries = entries
	s.width = 1 << bits.Len64(uint64(16*entries-1))
	s.counters = make([]uint8, 4*s.width)
	s.additions = 0
}

// ensure grows the sketch when the cache holds more distinct chunks than
// it was sized for.
func (s *freqSketch) ensure(entries int) {
	if entries > s.entries {
		s.resize(entries)
	}
}

func (s *freqSketch) slot(d Digest, row int) int {
	h := binary.LittleEndian.Uint64(d[8*row:])
	return row*int(s.width) + int(h&(s.width-1))
}

// increment counts one request for d.
func (s *freqSketch) increment(d Digest) {
	added := false
	for row := range 4 {
		i := s.slot(d, row)
		if s.counters[i] < 15 {
			s.counters[i]++
			added = true
		}
	}
	if added {
		s.additions++
		if s.additions >= 10*s.entries {
			s.age()
		}
	}
}

// frequency is d's estimated count of recent requests (0 to 15).
func (s *freqSketch) frequency(d Digest) int {
	f := uint8(15)
	for row := range 4 {
		f = min(f, s.counters[s.slot(d, row)])
	}
	return int(f)
}

// age halves every counter: old popularity fades.
func (s *freqSketch) age() {
	for i, c := range s.counters {
		s.counters[i] = c >> 1
	}
	s.additions /= 2
}
