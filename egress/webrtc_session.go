package egress

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
)

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// whepSession is one viewer's PeerConnection.
type whepSession struct {
	id     string
	path   string
	remote string
	client string     // remote's address, for MaxSessionsPerClient
	query  url.Values // of the offer's URL
	w      *WebRTC
	pc     *webrtc.PeerConnection
	feed   *feed // set by addSession, before the feed sees the session

	senders []*webrtc.RTPSender // video first, then audio if sent

	video, audio atomic.Pointer[binding]
	ready        atomic.Bool // connected: the feed writes to it
	waitKey      bool        // owned by the feed goroutine
	created      time.Time

	closeOnce sync.Once
	done      chan struct{}
	opened    chan struct{} // closed once the open hook returned
}

// binding is a negotiated outgoing RTP stream of a session.
type binding struct {
	ssrc uint32
	pt   uint8
	ws   webrtc.TrackLocalWriter
}

// close ends the session once; err says why (nil: the client deleted it).
// The close hook runs after the open hook, with no egress lock held.
func (s *whepSession) close(err error) {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ready.Store(false)
		if s.w.removeSession(s) {
			defer s.w.closing.Done()
		}
		_ = s.pc.Close()
		reason := "deleted by client"
		if err != nil {
			reason = err.Error()
		}
		s.w.log.Info("webrtc session closed", "stream", s.path, "session", s.id, "remote", s.remote,
			"reason", reason, "duration", time.Since(s.created).Round(time.Millisecond))
		<-s.opened
		s.w.sessionClosed(s, err)
	})
}

// watch follows the connection state: the session becomes ready when
// connected, and is removed when it fails, closes or does not connect in
// time.
func (s *whepSession) watch() {
	timer := time.AfterFunc(s.w.cfg.SessionTimeout, func() {
		if !s.ready.Load() {
			s.close(ErrSessionNotConnected)
		}
	})
	s.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			timer.Stop()
			select {
			case <-s.done:
			default:
				s.ready.Store(true)
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			timer.Stop()
			err := fmt.Errorf("%w: connection %s", ErrSessionConnectionLost, st)
			if !s.ready.Load() {
				err = fmt.Errorf("%w: connection %s", ErrSessionNotConnected, st)
			}
			go s.close(err)
		}
	})
}

// readRTCP consumes a sender's RTCP (so that interceptors see reports)
// and answers NACKs from the feed's packet ring. It ends when the
// PeerConnection closes.
func (s *whepSession) readRTCP(sender *webrtc.RTPSender, video bool) {
	budget := newNACKBudget(s.w.cfg.RetransmitRate, time.Now())
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		if !video {
			continue
		}
		for _, p := range pkts {
			if n, ok := p.(interface{ PacketList() []uint16 }); ok {
				seqs := n.PacketList()
				if allowed := budget.take(len(seqs), time.Now()); allowed < len(seqs) {
					s.w.mNACKDropped.Add(float64(len(seqs) - allowed))
					seqs = seqs[:allowed]
				}
				if b := s.video.Load(); b != nil && s.feed != nil && len(seqs) > 0 {
					s.feed.retransmit(b, seqs)
				}
			}
		}
	}
}

// nackBudget is a token bucket of retransmitted packets: rate per second,
// at most rate in reserve.
type nackBudget struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newNACKBudget(rate int, now time.Time) *nackBudget {
	return &nackBudget{rate: float64(rate), tokens: float64(rate), last: now}
}

// take returns how many of n packets may be resent now.
func (b *nackBudget) take(n int, now time.Time) int {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(b.rate, b.tokens+dt*b.rate)
		b.last = now
	}
	k := min(n, int(b.tokens))
	b.tokens -= float64(k)
	return k
}
