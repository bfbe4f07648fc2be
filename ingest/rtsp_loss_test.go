package ingest_test

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
)

// rtspMultiSliceH264 is a 3 s 320x240 clip, an IDR every 10 pictures,
// every picture in 4 slices: a lost packet takes one slice and leaves the
// others, which still make a complete-looking access unit.
func rtspMultiSliceH264(t *testing.T) [][][]byte {
	t.Helper()
	raw := t.TempDir() + "/slices.h264"
	out := testutil.Start(t, "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "10", "-pix_fmt", "yuv420p",
		"-x264-params", "aud=1:slices=4", "-f", "h264", raw)
	if err := out.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("make raw clip: %v\n%s", err, out.Output())
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	aus := rtspAnnexBAccessUnits(t, b)
	if len(aus) < 60 || !h264.IsRandomAccess(aus[0]) {
		t.Fatalf("raw clip has %d access units", len(aus))
	}
	return aus
}

// rtspPictureKey is an access unit's pictures and SEI, without the
// parameter sets and delimiters the server may add.
func rtspPictureKey(au [][]byte) string {
	var b bytes.Buffer
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeAccessUnitDelimiter:
			continue
		}
		b.WriteString("\x00\x00\x01")
		b.Write(n)
	}
	return b.String()
}

// TestRTSPPublishOverUDPLossNeverForwardsABrokenKeyframe: a publisher over
// UDP whose network loses a packet in the middle of every other IDR (and
// in some P pictures) gets no access unit to viewers that misses data:
// every video unit the hub hands out is one the publisher sent whole,
// and video goes on at the IDRs that arrived intact.
func TestRTSPPublishOverUDPLossNeverForwardsABrokenKeyframe(t *testing.T) {
	n := startRTSPNode(t, ingest.RTSPConfig{})
	aus := rtspMultiSliceH264(t)
	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	desc := &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}}}
	udp := gortsplib.TransportUDP
	c := &gortsplib.Client{Transport: &udp}
	if err := c.StartRecording(n.url("live/lossy"), desc); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enc, err := forma.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		intact  = map[string]bool{} // pictures sent whole
		damaged = map[string]bool{} // pictures that lost a packet
		dropped int
	)
	const loops = 3
	sent := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(sent)
		tick := time.NewTicker(time.Second / 30) // real-time pacing
		defer tick.Stop()
		for i := 0; i < loops*len(aus); i++ {
			// Whether a picture loses a packet depends on its place in the
			// clip, so that every copy of it sent is alike.
			k := i % len(aus)
			au := aus[k]
			<-tick.C
			pkts, err := enc.Encode(au)
			if err != nil {
				t.Error(err)
				return
			}
			drop := -1
			if h264.IsRandomAccess(au) {
				if (k/10)%2 == 1 && len(pkts) >= 3 {
					drop = len(pkts) / 2 // a middle packet of the IDR
				}
			} else if k%7 == 3 && len(pkts) >= 2 {
				drop = 0
			}
			mu.Lock()
			if drop >= 0 {
				damaged[rtspPictureKey(au)] = true
				dropped++
			} else {
				intact[rtspPictureKey(au)] = true
			}
			mu.Unlock()
			for j, pkt := range pkts {
				pkt.Timestamp = uint32(i * 3000)
				if j == drop {
					continue // the network lost it
				}
				if err := c.WritePacketRTP(desc.Medias[0], pkt); err != nil {
					return
				}
			}
		}
	}()

	n.waitPublished(t, "live/lossy")
	rd, err := n.hub.Subscribe("live/lossy", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var units, keys, bad, badKeys int
	deadline := time.After(loops*3*time.Second + 20*time.Second)
	quiet := time.NewTimer(time.Hour)
	sentCh := sent
read:
	for {
		select {
		case u, ok := <-rd.C():
			if !ok || u == nil {
				break read
			}
			if u.Track != 0 {
				continue
			}
			k := rtspPictureKey(u.Data)
			mu.Lock()
			whole := intact[k] && !damaged[k]
			mu.Unlock()
			units++
			if u.Key {
				keys++
			}
			if !whole {
				bad++
				if u.Key {
					badKeys++
				}
			}
		case <-sentCh:
			sentCh = nil
			quiet.Reset(2 * time.Second) // what the server still holds arrives
		case <-quiet.C:
			break read
		case <-deadline:
			t.Fatal("the publisher did not finish")
		}
	}
	mu.Lock()
	d := dropped
	mu.Unlock()
	t.Logf("sent %d pictures, dropped a packet of %d; the hub handed out %d video units (%d IDRs), %d of them broken (%d IDRs)",
		loops*len(aus), d, units, keys, bad, badKeys)
	if !strings.Contains(n.logs.String(), "rtsp publisher lost packets") {
		t.Error("the server never saw the loss")
	}
	if bad > 0 {
		t.Errorf("%d video units (%d of them IDRs) that missed a packet reached viewers", bad, badKeys)
	}
	if keys < 3 || units < 30 {
		t.Errorf("only %d video units (%d IDRs) reached viewers: video did not resume at the intact IDRs", units, keys)
	}
}
