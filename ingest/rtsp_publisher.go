package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	for _, t := range p.depay.Tracks() {
		codecs = append(codecs, rtpdepay.CodecName(t.Format))
		if !setup[t.Media] {
			p.log.Info("rtsp publish: media announced but not set up", "codec", rtpdepay.CodecName(t.Format))
			continue
		}
		t := t
		ss.OnPacketRTP(t.Media, t.Format, func(pkt *rtp.Packet) {
			p.onPacket(ss, t, pkt)
		})
	}
	p.log.Info("rtsp publisher recording", "transport", rtspTransport(ss.SetuppedTransport()), "codecs", codecs)
	return nil
}

// lost is told of lost packets: video waits for the next IDR.
func (p *rtspPublisher) lost(n uint64) { p.depay.Lost(n) }

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
	p.log.Info("rtsp publisher gone", "reason", fmt.Sprint(reason))
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
	for _, u := range p.depay.Decode(t, pkt, pts, ok, time.Now()) {
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
