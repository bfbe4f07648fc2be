package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/internal/rtpdepay"
	"github.com/gradient-cdn/gradient/media"
)

// rtspPublisher turns one RECORD session's RTP packets into hub units
// (through the rtpdepay mapping) and publishes them.
type rtspPublisher struct {
	s      *RTSPServer
	log    *slog.Logger
	path   string
	source string

	session *gortsplib.ServerSession
	depay   *rtpdepay.Stream

	// seq follows each set-up track's sequence numbers (loss detection);
	// a track's entry is only touched by that track's packet callback.
	seq map[*rtpdepay.Track]*rtspSeq
	// lostTotal counts the packets gortsplib found missing (every track).
	lostTotal atomic.Uint64

	mu      sync.Mutex
	pub     *media.Publisher // nil until the H.264 parameter sets are known
	closed  bool
	hasBase bool
	base    time.Duration // DTS of the first unit written; units are relative to it
}

// newRTSPPublisher checks an ANNOUNCEd SDP and prepares the tracks it
// carries. It refuses an SDP without H.264 video with an
// *rtpdepay.CodecError that names the codec found.
func newRTSPPublisher(s *RTSPServer, ss *gortsplib.ServerSession, path, source string, sd *description.Session) (*rtspPublisher, error) {
	log := s.log.With("stream", path, "source", source)
	d, err := rtpdepay.New(sd, log)
	if err != nil {
		return nil, err
	}
	return &rtspPublisher{s: s, log: log, path: path, source: source, session: ss, depay: d}, nil
}

// publishIfReady publishes into the hub once the H.264 parameter sets are
// known. Called with p.mu not held.
func (p *rtspPublisher) publishIfReady() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.publishLocked()
}

func (p *rtspPublisher) publishLocked() error {
	if p.pub != nil || p.closed {
		return nil
	}
	desc, ok := p.depay.Description()
	if !ok {
		return nil
	}
	pub, err := p.s.hub.Publish(p.path, desc, p.source)
	if err != nil {
		return fmt.Errorf("rtsp publish %s: %w", p.path, err)
	}
	p.pub = pub
	return nil
}

// record hooks the session's packets; called on RECORD.
func (p *rtspPublisher) record(ss *gortsplib.ServerSession) error {
	setup := map[*description.Media]bool{}
	for _, m := range ss.SetuppedMedias() {
		setup[m] = true
	}
	if !setup[p.depay.Video().Media] {
		return errors.New("the H264 media was not set up")
	}
	var codecs []string
	p.seq = map[*rtpdepay.Track]*rtspSeq{}
	for _, t := range p.depay.Tracks() {
		codecs = append(codecs, rtpdepay.CodecName(t.Format))
		if !setup[t.Media] {
			p.log.Info("rtsp publish: media announced but not set up", "codec", rtpdepay.CodecName(t.Format))
			continue
		}
		t := t
		p.seq[t] = &rtspSeq{}
		ss.OnPacketRTP(t.Media, t.Format, func(pkt *rtp.Packet) {
			p.onPacket(ss, t, pkt)
		})
	}
	p.log.Info("rtsp publisher recording", "transport", rtspTransport(ss.SetuppedTransport()), "codecs", codecs)
	return nil
}

// rtspSeq is the loss state of one track: the next sequence number
// expected and, after a video loss, the time up to which units may miss
// data.
type rtspSeq struct {
	started     bool
	next        uint16
	dropping    bool
	dropThrough time.Duration
}

// lost is told by gortsplib of lost packets (of any track, UDP only). It
// only counts them: gortsplib does not say which track lost them, so the
// video track finds its own losses from its sequence numbers (onPacket).
func (p *rtspPublisher) lost(n uint64) {
	if p.lostTotal.Add(n) == n {
		p.log.Info("rtsp publisher lost packets (video waits for the next IDR after a video loss)", "lost", n)
	}
}

// close ends the stream; readers are told and the path can be published again.
func (p *rtspPublisher) close(reason error) {
	p.mu.Lock()
	p.closed = true
	pub := p.pub
	p.pub = nil
	p.mu.Unlock()
	if pub != nil {
		pub.Close()
	}
	p.log.Info("rtsp publisher gone", "reason", fmt.Sprint(reason), "lost_packets", p.lostTotal.Load())
}

// onPacket depacketizes one RTP packet; it runs on gortsplib's reading
// goroutine and never panics out of it.
func (p *rtspPublisher) onPacket(ss *gortsplib.ServerSession, t *rtpdepay.Track, pkt *rtp.Packet) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("rtsp packet handling panic, closing the publisher", "panic", fmt.Sprint(r))
			ss.Close()
		}
	}()
	// Every packet goes through the time decoder, which follows the
	// timestamps' wrap-around.
	pts, ok := ss.PacketPTS2(t.Media, pkt)
	sq := p.seq[t]
	isVideo := t == p.depay.Video()
	if sq != nil && isVideo {
		// gortsplib hands packets over in order (UDP goes through its
		// reorderer), so a gap in the sequence numbers is a loss. The
		// access units the loss touched end at this packet's at the
		// latest: telling the depacketizer alone is not enough, since an
		// IDR whose middle fragment was lost completes after the loss and
		// would restart video broken. So every unit up to this packet's
		// time is dropped, and video restarts at the IDR after that.
		if sq.started && pkt.SequenceNumber != sq.next {
			if gap := int16(pkt.SequenceNumber - sq.next); gap > 0 {
				p.depay.Lost(uint64(gap))
				if ok {
					sq.dropping, sq.dropThrough = true, media.TicksToDuration(pts, int64(t.Format.ClockRate()))
				}
			}
		}
		sq.started, sq.next = true, pkt.SequenceNumber+1
	}
	for _, u := range p.depay.Decode(t, pkt, pts, ok, time.Now()) {
		if sq != nil && sq.dropping && u.Track == t.Index {
			if u.PTS <= sq.dropThrough {
				p.depay.Lost(0) // an IDR spanning the loss must not restart video
				continue
			}
			sq.dropping = false
		}
		p.write(u)
	}
}

// write publishes the stream at the first video unit (an IDR with its
// parameter sets) and writes units relative to that unit's DTS. Audio
// starts with the first video IDR.
func (p *rtspPublisher) write(u *media.Unit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if u.Track == p.depay.Video().Index && p.pub == nil {
		if err := p.publishLocked(); err != nil {
			p.log.Info("rtsp publish failed, closing the publisher", "err", err)
			p.closed = true
			p.session.Close()
			return
		}
	}
	if p.pub == nil {
		return
	}
	if !p.hasBase {
		if u.Track != p.depay.Video().Index {
			return
		}
		p.base, p.hasBase = u.DTS, true
	}
	u.PTS -= p.base
	u.DTS -= p.base
	if u.PTS < 0 && u.Track != p.depay.Video().Index {
		return
	}
	p.pub.Write(u)
}
