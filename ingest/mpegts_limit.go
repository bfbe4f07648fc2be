package ingest

import (
	"fmt"
	"io"
)

// The MPEG-TS demuxer (mediacommon over go-astits) keeps every packet of a
// PID from one payload-unit start to the next before it hands the PES on,
// and it keeps them as parsed packets (about twice the bytes on the wire).
// A publisher that sends one valid IDR and then continuation packets that
// never start a new PES would therefore grow the node's memory without end.
// tsLimiter sits between the connection and the demuxer, reads the TS
// packet headers as they pass (the bytes are not changed), and fails the
// read once a PES, or all open PES of the connection together, exceed
// their caps: the publisher is dropped with an error that says why.

const (
	tsPacketSize = 188
	tsSyncByte   = 0x47
	tsNullPID    = 0x1fff // stuffing: the demuxer drops it without buffering
)

// tsLimitError is the read error of a publisher dropped for a cap.
type tsLimitError struct{ msg string }

func (e *tsLimitError) Error() string { return e.msg }

// tsLimiter counts, per PID, the payload bytes since the PID's last
// payload-unit start.
type tsLimiter struct {
	r              io.Reader
	maxPES, maxAll int64

	pkt  [tsPacketSize]byte
	n    int // bytes of pkt filled
	open map[uint16]int64
	all  int64
}

func newTSLimiter(r io.Reader, maxPES, maxAll int64) *tsLimiter {
	return &tsLimiter{r: r, maxPES: maxPES, maxAll: maxAll, open: map[uint16]int64{}}
}

func (l *tsLimiter) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		if lerr := l.scan(p[:n]); lerr != nil {
			return 0, lerr
		}
	}
	return n, err
}

// scan walks b packet by packet, carrying a partial packet over to the
// next read. Bytes outside a packet (before a sync byte) are skipped as
// the demuxer skips them.
func (l *tsLimiter) scan(b []byte) error {
	for len(b) > 0 {
		if l.n == 0 {
			i := 0
			for i < len(b) && b[i] != tsSyncByte {
				i++
			}
			b = b[i:]
			if len(b) == 0 {
				return nil
			}
		}
		c := copy(l.pkt[l.n:], b)
		l.n += c
		b = b[c:]
		if l.n < tsPacketSize {
			return nil
		}
		l.n = 0
		if err := l.packet(&l.pkt); err != nil {
			return err
		}
	}
	return nil
}

func (l *tsLimiter) packet(p *[tsPacketSize]byte) error {
	pid := uint16(p[1]&0x1f)<<8 | uint16(p[2])
	if pid == tsNullPID {
		return nil
	}
	start := p[1]&0x40 != 0
	payload := int64(0)
	switch p[3] >> 4 & 0x3 { // adaptation_field_control
	case 1:
		payload = tsPacketSize - 4
	case 3:
		payload = max(0, tsPacketSize-5-int64(p[4]))
	}
	if start {
		l.all -= l.open[pid]
		l.open[pid] = 0
	}
	l.open[pid] += payload
	l.all += payload
	if l.open[pid] > l.maxPES {
		return &tsLimitError{fmt.Sprintf("MPEG-TS PID %d: more than %d bytes without a new PES start (srt.max_pes_bytes)", pid, l.maxPES)}
	}
	if l.all > l.maxAll {
		return &tsLimitError{fmt.Sprintf("MPEG-TS: more than %d bytes of unfinished PES over %d PIDs (srt.max_buffered_bytes)", l.maxAll, len(l.open))}
	}
	return nil
}
