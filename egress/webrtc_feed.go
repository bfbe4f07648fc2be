package egress

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/media"
)

// feed is the single reader of one stream for all its WebRTC sessions: it
// packetizes each access unit once and writes the packets to every
// session.
type feed struct {
	w      *WebRTC
	path   string
	reader *media.Reader
	video  int // track index of H.264
	audio  int // track index of Opus, or -1 (AAC is not sent)

	sessions atomic.Pointer[[]*whepSession] // copy-on-write, under w.mu
	stopped  atomic.Bool

	enc          rtph264.Encoder
	sps, pps     []byte
	videoTS      uint32 // random RTP timestamp bases
	audioTS      uint32
	audioSeq     uint16
	hdr          rtp.Header // scratch header of the send goroutine
	firstReadyAt time.Time

	ringMu sync.Mutex
	ring   []*rtp.Packet // recent video packets by sequence number
}

func newFeed(w *WebRTC, path string, r *media.Reader) *feed {
	desc := r.Description()
	f := &feed{w: w, path: path, reader: r, video: desc.VideoTrack(), audio: -1,
		ring: make([]*rtp.Packet, w.cfg.RetransmitPackets)}
	if a := desc.AudioTrack(); a >= 0 && desc.Tracks[a].Codec == media.CodecOpus {
		f.audio = a
	}
	if f.video >= 0 {
		f.sps, f.pps = desc.Tracks[f.video].SPS, desc.Tracks[f.video].PPS
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	f.videoTS = binary.BigEndian.Uint32(rnd[:4])
	f.audioTS = binary.BigEndian.Uint32(rnd[4:])
	f.audioSeq = uint16(rnd[0])<<8 | uint16(rnd[5])
	f.enc = rtph264.Encoder{PayloadType: 96, PayloadMaxSize: w.cfg.PayloadMaxSize, PacketizationMode: 1}
	_ = f.enc.Init() // cannot fail with packetization mode 1
	empty := []*whepSession{}
	f.sessions.Store(&empty)
	return f
}

// add and remove run under w.mu.
func (f *feed) add(s *whepSession) {
	s.waitKey = true
	old := *f.sessions.Load()
	n := make([]*whepSession, len(old), len(old)+1)
	copy(n, old)
	n = append(n, s)
	f.sessions.Store(&n)
}

func (f *feed) remove(s *whepSession) int {
	old := *f.sessions.Load()
	n := make([]*whepSession, 0, len(old))
	for _, x := range old {
		if x != s {
			n = append(n, x)
		}
	}
	f.sessions.Store(&n)
	return len(n)
}

func (f *feed) list() []*whepSession { return *f.sessions.Load() }

// stop ends the feed's goroutine (its last session left or the egress
// closes); its sessions are not closed by it.
func (f *feed) stop() {
	if f.stopped.CompareAndSwap(false, true) {
		f.reader.Close()
	}
}

func (f *feed) run() {
	defer f.w.wg.Done()
	for u := range f.reader.C() {
		switch u.Track {
		case f.video:
			f.writeVideo(u)
		case f.audio:
			f.writeAudio(u)
		}
	}
	if !f.stopped.Load() {
		f.w.log.Info("stream ended: closing its webrtc sessions", "stream", f.path, "sessions", len(f.list()))
		f.w.feedEnded(f)
	}
}

// withParameterSets returns the AU with SPS and PPS in front when it is an
// IDR that lacks them, and remembers in-band parameter sets.
func (f *feed) withParameterSets(u *media.Unit) [][]byte {
	hasSPS, hasPPS := false, false
	for _, n := range u.Data {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			hasSPS, f.sps = true, n
		case h264.NALUTypePPS:
			hasPPS, f.pps = true, n
		}
	}
	if !u.Key || (hasSPS && hasPPS) {
		return u.Data
	}
	au := make([][]byte, 0, len(u.Data)+2)
	if !hasSPS {
		au = append(au, f.sps)
	}
	if !hasPPS {
		au = append(au, f.pps)
	}
	return append(au, u.Data...)
}

func (f *feed) writeVideo(u *media.Unit) {
	au := f.withParameterSets(u)
	pkts, err := f.enc.Encode(au)
	if err != nil || len(pkts) == 0 {
		return
	}
	ts := f.videoTS + uint32(int64(u.PTS)*90000/int64(time.Second))
	f.ringMu.Lock()
	for _, p := range pkts {
		p.Timestamp = ts
		f.ring[int(p.SequenceNumber)%len(f.ring)] = p
	}
	f.ringMu.Unlock()
	sent := false
	f.w.conn.begin()
	for _, s := range f.list() {
		b := s.video.Load()
		if b == nil || !s.ready.Load() {
			continue
		}
		if s.waitKey {
			if !u.Key {
				continue
			}
			s.waitKey = false
		}
		for _, p := range pkts {
			// f.hdr, not a local: a local would escape to the heap
			// through the interface call, once per packet and session.
			f.hdr = p.Header
			f.hdr.PayloadType, f.hdr.SSRC = b.pt, b.ssrc
			_, _ = b.ws.WriteRTP(&f.hdr, p.Payload)
		}
		sent = true
	}
	f.w.conn.end()
	if sent {
		f.w.recordLatency(u.Received, time.Now())
	}
}

func (f *feed) writeAudio(u *media.Unit) {
	ts := f.audioTS + uint32(int64(u.PTS)*48000/int64(time.Second))
	f.w.conn.begin()
	defer f.w.conn.end()
	for _, pkt := range u.Data {
		h := rtp.Header{Version: 2, SequenceNumber: f.audioSeq, Timestamp: ts}
		f.audioSeq++
		for _, s := range f.list() {
			b := s.audio.Load()
			if b == nil || !s.ready.Load() || s.waitKey {
				continue
			}
			f.hdr = h
			f.hdr.PayloadType, f.hdr.SSRC = b.pt, b.ssrc
			_, _ = b.ws.WriteRTP(&f.hdr, pkt)
		}
		ts += uint32(opus.PacketDuration2(pkt))
	}
}

// retransmit resends the requested video packets that are still in the
// ring to one session.
func (f *feed) retransmit(b *binding, seqs []uint16) {
	for _, seq := range seqs {
		f.ringMu.Lock()
		p := f.ring[int(seq)%len(f.ring)]
		f.ringMu.Unlock()
		if p == nil || p.SequenceNumber != seq {
			continue
		}
		h := p.Header
		h.PayloadType, h.SSRC = b.pt, b.ssrc
		_, _ = b.ws.WriteRTP(&h, p.Payload)
	}
}
