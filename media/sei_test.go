package media

import (
	"testing"
	"time"
)

func TestCaptureSEIRoundTrip(t *testing.T) {
	for _, ts := range []time.Time{
		time.Unix(1_700_000_000, 123456789),
		time.Unix(0, 0x0000000300000000), // zero bytes that need emulation prevention
		time.Unix(0, 1),
	} {
		n := CaptureSEI(ts)
		for i := 0; i+2 < len(n); i++ {
			if n[i] == 0 && n[i+1] == 0 && n[i+2] <= 3 && n[i+2] != 3 {
				t.Fatalf("SEI for %v contains start-code-like bytes at %d: % x", ts, i, n)
			}
		}
		got, ok := CaptureTime([][]byte{{0x09, 0xf0}, n})
		if !ok || !got.Equal(ts) {
			t.Fatalf("CaptureTime = %v %v, want %v", got, ok, ts)
		}
	}
	if _, ok := ParseCaptureSEI([]byte{0x06, 5, 3, 1, 2, 3, 0x80}); ok {
		t.Fatal("foreign SEI parsed as capture time")
	}
	if _, ok := ParseCaptureSEI([]byte{0x65, 1, 2}); ok {
		t.Fatal("IDR slice parsed as capture time")
	}
}

func FuzzParseCaptureSEI(f *testing.F) {
	f.Add(CaptureSEI(time.Unix(5, 6)))
	f.Add([]byte{0x06, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) { ParseCaptureSEI(b) })
}
