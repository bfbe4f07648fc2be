package media

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// CaptureUUID identifies Gradient's capture-time SEI message: an H.264
// user_data_unregistered SEI (payload type 5) whose payload is this UUID
// followed by the capture wall-clock time as 8 bytes, big-endian Unix
// nanoseconds. Any receiver can measure glass-to-glass latency with it.
var CaptureUUID = [16]byte{
	0x67, 0x72, 0x61, 0x64, 0x69, 0x65, 0x6e, 0x74, // "gradient"
	0x2d, 0x63, 0x61, 0x70, 0x74, 0x75, 0x72, 0x65, // "-capture"
}

// CaptureSEI returns an SEI NAL unit (without start code) carrying t.
func CaptureSEI(t time.Time) []byte {
	var payload [24]byte
	copy(payload[:16], CaptureUUID[:])
	binary.BigEndian.PutUint64(payload[16:], uint64(t.UnixNano()))
	rbsp := make([]byte, 0, 28)
	rbsp = append(rbsp, 5, byte(len(payload))) // payloadType, payloadSize
	rbsp = append(rbsp, payload[:]...)
	rbsp = append(rbsp, 0x80) // rbsp_trailing_bits
	return append([]byte{byte(h264.NALUTypeSEI)}, addEmulationPrevention(rbsp)...)
}

// ParseCaptureSEI finds Gradient's capture time in an SEI NAL unit.
func ParseCaptureSEI(nalu []byte) (time.Time, bool) {
	if len(nalu) < 2 || h264.NALUType(nalu[0]&0x1f) != h264.NALUTypeSEI {
		return time.Time{}, false
	}
	b := h264.EmulationPreventionRemove(nalu[1:])
	for len(b) > 2 && b[0] != 0x80 {
		typ, i := 0, 0
		for i < len(b) && b[i] == 0xff {
			typ += 255
			i++
		}
		if i >= len(b) {
			break
		}
		typ += int(b[i])
		i++
		size := 0
		for i < len(b) && b[i] == 0xff {
			size += 255
			i++
		}
		if i >= len(b) {
			break
		}
		size += int(b[i])
		i++
		if i+size > len(b) {
			break
		}
		p := b[i : i+size]
		if typ == 5 && size == 24 && bytes.Equal(p[:16], CaptureUUID[:]) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(p[16:]))), true
		}
		b = b[i+size:]
	}
	return time.Time{}, false
}

// CaptureTime returns the capture time carried by an access unit's SEI, if any.
func CaptureTime(au [][]byte) (time.Time, bool) {
	for _, n := range au {
		if t, ok := ParseCaptureSEI(n); ok {
			return t, true
		}
	}
	return time.Time{}, false
}

// addEmulationPrevention inserts 0x03 after every two zero bytes that are
// followed by a byte <= 3, as H.264 7.4.1 requires.
func addEmulationPrevention(b []byte) []byte {
	out := make([]byte, 0, len(b)+4)
	zeros := 0
	for _, c := range b {
		if zeros >= 2 && c <= 3 {
			out = append(out, 3)
			zeros = 0
		}
		out = append(out, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}
