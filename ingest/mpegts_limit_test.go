package ingest

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// tsWithOneIDR is a valid program (PAT, PMT), one H.264 IDR with SPS and
// PPS and the start of a second frame, as a publisher sends before
// anything else; it returns the TS bytes, the video PID and the next
// continuity counter of that PID.
func tsWithOneIDR(t *testing.T) ([]byte, uint16, byte) {
	t.Helper()
	video := &mpegts.Track{Codec: &codecs.H264{}}
	var buf bytes.Buffer
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{video}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	if err := w.WriteH264(video, 90000, 90000, [][]byte{srtTestSPS, pps, {0x65, 0x88, 0x01}}); err != nil {
		t.Fatal(err)
	}
	// A second frame starts a new PES, which hands the IDR on (the demuxer
	// holds a PES of unbounded length until the next one starts).
	if err := w.WriteH264(video, 93000, 93000, [][]byte{{0x41, 0x9a, 0x02}}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	var pid uint16
	found := false
	var cc byte
	for i := 0; i+tsPacketSize <= len(b); i += tsPacketSize {
		p := b[i:]
		off := 4
		if p[3]>>4&3 == 3 {
			off += 1 + int(p[4])
		}
		this := uint16(p[1]&0x1f)<<8 | uint16(p[2])
		if !found && p[1]&0x40 != 0 && p[3]>>4&1 == 1 && bytes.HasPrefix(p[off:], []byte{0, 0, 1, 0xe0}) {
			pid, found = this, true
		}
		if found && this == pid {
			cc = p[3]&0x0f + 1
		}
	}
	if !found {
		t.Fatal("no video PES start in the writer's output")
	}
	return b, pid, cc & 0x0f
}

// tsContinuation is n TS packets of pid that continue a PES and never
// start a new one (continuity counter running on from cc).
func tsContinuation(pid uint16, cc *byte, n int) []byte {
	out := make([]byte, 0, n*tsPacketSize)
	for range n {
		p := make([]byte, tsPacketSize)
		p[0] = tsSyncByte
		p[1] = byte(pid >> 8 & 0x1f)
		p[2] = byte(pid)
		p[3] = 0x10 | *cc&0x0f // payload only
		*cc++
		for i := 4; i < tsPacketSize; i++ {
			p[i] = 0xab
		}
		out = append(out, p...)
	}
	return out
}

func TestTSLimiterPassesARealStreamUnchanged(t *testing.T) {
	b, _, _ := tsWithOneIDR(t)
	// Many PES starts in a row, read in odd-sized pieces.
	stream := bytes.Repeat(b, 200)
	l := newTSLimiter(iotestHalf{bytes.NewReader(stream)}, 64<<10, 64<<10)
	got, err := io.ReadAll(l)
	if err != nil {
		t.Fatalf("a valid stream was refused: %v", err)
	}
	if !bytes.Equal(got, stream) {
		t.Fatal("the limiter changed the bytes")
	}
}

func TestTSLimiterRefusesAPESThatNeverEnds(t *testing.T) {
	b, pid, cc := tsWithOneIDR(t)
	stream := append(append([]byte{}, b...), tsContinuation(pid, &cc, 2000)...) // 368 KB
	_, err := io.ReadAll(newTSLimiter(iotestHalf{bytes.NewReader(stream)}, 128<<10, 1<<20))
	var le *tsLimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "srt.max_pes_bytes") {
		t.Fatalf("err = %v, want a max_pes_bytes refusal", err)
	}

	// Many PIDs, each under the per-PES cap, together over the connection's.
	var many []byte
	for pid := uint16(0x100); pid < 0x140; pid++ {
		cc := byte(0)
		many = append(many, tsContinuation(pid, &cc, 100)...) // 18 KB each
	}
	_, err = io.ReadAll(newTSLimiter(bytes.NewReader(many), 128<<10, 512<<10))
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "srt.max_buffered_bytes") {
		t.Fatalf("err = %v, want a max_buffered_bytes refusal", err)
	}
}

// iotestHalf returns at most 1000 bytes per Read, so packets straddle reads.
type iotestHalf struct{ r io.Reader }

func (h iotestHalf) Read(p []byte) (int, error) { return h.r.Read(p[:min(len(p), 1000)]) }

// TestSRTFloodOfContinuationPacketsDropsThePublisher replays the attack:
// one valid IDR, then continuation packets that never start a new PES.
// The publisher is dropped once it passes the cap, and the node's heap
// does not grow with what it sent.
func TestSRTFloodOfContinuationPacketsDropsThePublisher(t *testing.T) {
	env := newSRTTestEnv(t, SRTConfig{MaxPESBytes: 256 << 10, MaxBufferedBytes: 512 << 10})
	conn, err := srtDial(env.addr(), "publish:live/flood", "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head, pid, cc := tsWithOneIDR(t)
	for len(head) > 0 {
		n := min(len(head), 7*tsPacketSize)
		if _, err := conn.Write(head[:n]); err != nil {
			t.Fatal(err)
		}
		head = head[n:]
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	testutil.Eventually(t, 10*time.Second, "live/flood published", func() bool {
		_, ok := env.hub.Lookup("live/flood")
		return ok
	})
	sent := 0
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(env.logs.String(), "max_pes_bytes") {
		if _, err := conn.Write(tsContinuation(pid, &cc, 7)); err != nil {
			break // the server closed the connection
		}
		sent += 7 * tsPacketSize
		if sent%(256<<10) < 7*tsPacketSize {
			time.Sleep(5 * time.Millisecond) // let SRT's buffers drain
		}
	}
	testutil.Eventually(t, 10*time.Second, "the publisher dropped for max_pes_bytes", func() bool {
		return strings.Contains(env.logs.String(), "max_pes_bytes")
	})
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	// What the client wrote is queued on its side; what the node read
	// before it dropped the publisher is in the drop's log line.
	m := regexp.MustCompile(`over a buffering cap.* bytes_in=(\d+)`).FindStringSubmatch(env.logs.String())
	if m == nil {
		t.Fatal("no drop line with bytes_in")
	}
	if in, _ := strconv.Atoi(m[1]); in > 1<<20 {
		t.Errorf("the node read %d bytes before it dropped the publisher; the cap is 256 KiB", in)
	}
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 64<<20 {
		t.Errorf("heap grew by %d MB during the flood", grew>>20)
	}
	if _, ok := env.hub.Lookup("live/flood"); ok {
		t.Error("the flooding publisher's stream is still in the hub")
	}
}
