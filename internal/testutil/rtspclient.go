package testutil

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/internal/rtpdepay"
)

// RTSPPlayOptions tune an RTSP reader made by RTSPPlay.
type RTSPPlayOptions struct {
	// Transport carries the media. The zero value is UDP.
	Transport gortsplib.Transport

	// ReadTimeout is the client's read timeout; zero keeps gortsplib's
	// default.
	ReadTimeout time.Duration
}

// RTSPStats are an RTSP reader's receive counters.
type RTSPStats struct {
	AccessUnits  int // depacketized H.264 access units
	IDRs         int // of which random access points
	AudioPackets int // AAC and Opus RTP packets
	// DecodeErrors counts the packets and timestamps that did not
	// depacketize (rtpdepay.Stream.Errors).
	DecodeErrors uint64
}

// RTSPPlayer is a gortsplib client playing one stream: it depacketizes
// H.264 access units and AAC or Opus audio with the rtpdepay mapping, counts them and queues them
// (1024 at most of each; more are dropped while the test does not read).
type RTSPPlayer struct {
	// Desc is the session the server DESCRIBEd.
	Desc *description.Session

	c     *gortsplib.Client
	depay *rtpdepay.Stream
	video chan [][]byte
	audio chan [][]byte
	done  chan struct{}
	err   error // once done is closed

	mu    sync.Mutex
	stats RTSPStats
}

// RTSPPlay DESCRIBEs, SETUPs and PLAYs url. It returns the client's error
// when one of the requests fails; the player is closed when the test ends.
func RTSPPlay(t testing.TB, url string, o RTSPPlayOptions) (*RTSPPlayer, error) {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	transport := o.Transport
	p := &RTSPPlayer{
		c:     &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &transport, ReadTimeout: o.ReadTimeout},
		video: make(chan [][]byte, 1024),
		audio: make(chan [][]byte, 1024),
		done:  make(chan struct{}),
	}
	if err := p.c.Start2(); err != nil {
		return nil, err
	}
	t.Cleanup(p.c.Close)
	desc, _, err := p.c.Describe(u)
	if err != nil {
		p.c.Close()
		return nil, err
	}
	p.Desc = desc
	if err := p.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		p.c.Close()
		return nil, err
	}
	// The RTP → unit mapping the node's publisher and relay use: video
	// starts at an IDR with its parameter sets, and a decode error makes
	// it wait for the next IDR (counted in RTSPStats.DecodeErrors).
	p.depay, err = rtpdepay.New(desc, slog.New(slog.DiscardHandler))
	if err != nil {
		p.c.Close()
		return nil, err
	}
	for _, tr := range p.depay.Tracks() {
		p.c.OnPacketRTP(tr.Media, tr.Format, func(pkt *rtp.Packet) {
			video := tr == p.depay.Video()
			if !video {
				p.countAudio()
			}
			pts, ok := p.c.PacketPTS2(tr.Media, pkt)
			for _, u := range p.depay.Decode(tr, pkt, pts, ok, time.Now()) {
				if !video {
					queue(p.audio, copyAU(u.Data))
					continue
				}
				p.mu.Lock()
				p.stats.AccessUnits++
				if u.Key {
					p.stats.IDRs++
				}
				p.mu.Unlock()
				queue(p.video, copyAU(u.Data))
			}
		})
	}
	if _, err := p.c.Play(nil); err != nil {
		p.c.Close()
		return nil, err
	}
	go func() {
		p.err = p.c.Wait()
		close(p.done)
	}()
	return p, nil
}

// queue sends v on c unless c is full: the test stopped reading.
func queue(c chan [][]byte, v [][]byte) {
	select {
	case c <- v:
	default:
	}
}

func copyAU(au [][]byte) [][]byte {
	out := make([][]byte, len(au))
	for i, n := range au {
		out[i] = append([]byte(nil), n...)
	}
	return out
}

func (p *RTSPPlayer) countAudio() {
	p.mu.Lock()
	p.stats.AudioPackets++
	p.mu.Unlock()
}

// Stats returns the receive counters.
func (p *RTSPPlayer) Stats() RTSPStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.DecodeErrors = p.depay.Errors()
	return st
}

// Video is the queue of received H.264 access units.
func (p *RTSPPlayer) Video() <-chan [][]byte { return p.video }

// Audio is the queue of received audio: AAC access units, or one Opus
// packet a receive.
func (p *RTSPPlayer) Audio() <-chan [][]byte { return p.audio }

// Close ends the session.
func (p *RTSPPlayer) Close() { p.c.Close() }

// Done is closed when the session has ended, closed by either side.
func (p *RTSPPlayer) Done() <-chan struct{} { return p.done }

// Err is why the session ended, or nil while it goes on.
func (p *RTSPPlayer) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// WaitFrames decodes the queued video with FFmpeg until it has n pictures
// of w×h, starting at the first IDR, and fails the test if a picture has
// another size, an access unit does not decode, or timeout passes first.
func (p *RTSPPlayer) WaitFrames(t testing.TB, n, w, h int, timeout time.Duration) {
	t.Helper()
	dec, err := NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	deadline := time.After(timeout)
	frames, started, pts := 0, false, int64(0)
	for frames < n {
		select {
		case au := <-p.video:
			if !started && !h264.IsRandomAccess(au) {
				continue
			}
			started = true
			pts++
			frames += dec.DecodeSized(t, au, pts, w, h, fmt.Sprintf("access unit %d", pts))
		case <-deadline:
			t.Fatalf("decoded %d of %d frames in %v", frames, n, timeout)
		}
	}
}
