package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/gradient-cdn/gradient/internal/rtpdepay"
	"github.com/gradient-cdn/gradient/media"
)

// whipSession is one WHIP publisher: a PeerConnection whose H.264 and
// Opus RTP become units of one hub stream, through the same RTP → unit
// mapping as RTSP publishing (internal/rtpdepay).
type whipSession struct {
	s      *WHIPServer
	id     string
	path   string
	remote string
	log    *slog.Logger
	pc     *webrtc.PeerConnection
	start  time.Time

	depay *rtpdepay.Stream
	video *rtpdepay.Track
	audio *rtpdepay.Track // nil without Opus
	// tx, for a publisher sending VP8 or VP9, makes its video H.264 (set
	// by onTrack before the video reader starts; read by it and by write).
	tx atomic.Pointer[whipTranscode]

	lastRTP   atomic.Int64 // unix nanoseconds of the last RTP packet
	hasVideo  atomic.Bool  // a remote H.264 track feeds the video track
	hasAudio  atomic.Bool
	videoSSRC atomic.Uint32
	lastPLI   atomic.Int64

	mu        sync.Mutex
	pub       *media.Publisher
	hasBase   bool
	base      time.Duration
	closed    bool
	closeOnce sync.Once
	done      chan struct{}
	ready     chan struct{} // closed once prepare set depay, video and audio

	// syncMu guards the RTCP sender reports and the anchor that put audio
	// on video's timeline (see readTrack).
	syncMu    sync.Mutex
	videoSR   *whipSR // latest sender report of the video track
	audioSR   *whipSR
	anchored  bool
	anchorNTP uint64        // an NTP instant of the publisher's clock...
	anchorPTS time.Duration // ...and video's PTS at that instant
}

// whipSR is one RTCP sender report: the publisher's NTP wall-clock time
// and the RTP timestamp of the same instant.
type whipSR struct {
	ntp uint64
	rtp uint32
}

// whipSyncWait is how long audio waits for the sender reports that line
// it up with video (its units are dropped meanwhile); without them by
// then, audio is timed by its first packet's arrival. Browsers and pion
// send the first report within about a second.
const whipSyncWait = 3 * time.Second

// ntpSub is a-b of two 32.32 NTP timestamps.
func ntpSub(a, b uint64) time.Duration {
	return time.Duration(float64(int64(a-b)) * 1e9 / (1 << 32))
}

func newWHIPSession(s *WHIPServer, path, remote string, pc *webrtc.PeerConnection) *whipSession {
	id := newWHIPID()
	return &whipSession{s: s, id: id, path: path, remote: remote, pc: pc, start: time.Now(), done: make(chan struct{}),
		ready: make(chan struct{}), log: s.log.With("stream", path, "session", id)}
}

// prepare builds the depacketizer of the negotiated media: H.264 and, with
// audio, Opus. The payload types do not matter to it: each remote track is
// routed by kind.
func (x *whipSession) prepare(withAudio bool) error {
	sd := &description.Session{Medias: []*description.Media{{
		Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1}},
	}}}
	if withAudio {
		sd.Medias = append(sd.Medias, &description.Media{
			Type: description.MediaTypeAudio, Formats: []format.Format{&format.Opus{PayloadTyp: 111, ChannelCount: 2}},
		})
	}
	d, err := rtpdepay.New(sd, x.log)
	if err != nil {
		return err
	}
	x.depay, x.video = d, d.Video()
	for _, t := range d.Tracks() {
		if t != x.video {
			x.audio = t
		}
	}
	close(x.ready)
	return nil
}

// source names the publisher in the hub's stream list.
func (x *whipSession) source() string { return "whip " + x.remote }

// onState ends the session when ICE/DTLS fail or the publisher leaves.
func (x *whipSession) onState(st webrtc.PeerConnectionState) {
	switch st {
	case webrtc.PeerConnectionStateConnected:
		x.log.Info("whip publisher connected")
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateDisconnected, webrtc.PeerConnectionStateClosed:
		go x.close(fmt.Errorf("connection %s", st))
	}
}

// onTrack reads one remote track until the session ends.
func (x *whipSession) onTrack(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	// The publisher has the answer, so prepare ran; the channel tells the
	// memory model so.
	select {
	case <-x.ready:
	case <-x.done:
		return
	}
	mime := strings.ToLower(tr.Codec().MimeType)
	var t *rtpdepay.Track
	switch {
	// One remote track per kind: a second video section or a simulcast
	// layer (rid) is read and dropped.
	case tr.Kind() == webrtc.RTPCodecTypeVideo && mime == strings.ToLower(webrtc.MimeTypeH264) && x.hasVideo.CompareAndSwap(false, true):
		t = x.video
	case tr.Kind() == webrtc.RTPCodecTypeVideo && (mime == strings.ToLower(webrtc.MimeTypeVP8) || mime == strings.ToLower(webrtc.MimeTypeVP9)) &&
		x.s.transcode != nil && x.hasVideo.CompareAndSwap(false, true):
		codec := strings.ToUpper(strings.TrimPrefix(mime, "video/"))
		tc, err := x.s.transcode(codec)
		var v *whipTranscode
		if err == nil {
			if v, err = newWHIPTranscode(codec, tc, x.video.Index, int64(tr.Codec().ClockRate), x.log); err != nil {
				tc.Close()
			}
		}
		if err != nil {
			x.log.Error("whip video transcoder", "codec", codec, "err", err)
			go x.close(fmt.Errorf("%s transcoder: %w", codec, err))
			return
		}
		x.log.Info("whip video is transcoded to H.264", "codec", codec)
		x.tx.Store(v)
		t = x.video
	case tr.Kind() == webrtc.RTPCodecTypeAudio && mime == strings.ToLower(webrtc.MimeTypeOpus) && x.audio != nil && x.hasAudio.CompareAndSwap(false, true):
		t = x.audio
	default:
		x.log.Info("whip track ignored", "kind", tr.Kind().String(), "codec", tr.Codec().MimeType, "rid", tr.RID())
	}
	if t == x.video {
		x.videoSSRC.Store(uint32(tr.SSRC()))
		x.requestKeyframe()
	}
	if t != nil && recv != nil {
		go x.readRTCP(recv, uint32(tr.SSRC()), t == x.video)
	}
	go x.readTrack(tr, t)
}

// readRTCP keeps the latest sender report of one track (of the media
// source ssrc) until the session ends.
func (x *whipSession) readRTCP(recv *webrtc.RTPReceiver, ssrc uint32, video bool) {
	for {
		pkts, _, err := recv.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			sr, ok := pkt.(*rtcp.SenderReport)
			if !ok || sr.SSRC != ssrc || sr.NTPTime == 0 {
				continue
			}
			r := &whipSR{ntp: sr.NTPTime, rtp: sr.RTPTime}
			x.syncMu.Lock()
			if video {
				x.videoSR = r
			} else {
				x.audioSR = r
			}
			x.syncMu.Unlock()
		}
	}
}

// anchorVideo ties the publisher's NTP clock to video's PTS with video's
// first sender report, once: pts is the current packet's PTS (ticks),
// ts its RTP timestamp. Video's own timeline never moves.
func (x *whipSession) anchorVideo(pts int64, ts uint32, clock int64) bool {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	if x.anchored || x.videoSR == nil {
		return x.anchored
	}
	sr := x.videoSR
	x.anchorNTP = sr.ntp
	x.anchorPTS = media.TicksToDuration(pts+int64(int32(sr.rtp-ts)), clock)
	x.anchored = true
	return true
}

// audioShift is how many ticks audio's PTS must move so that it is on
// video's timeline by the sender reports of both, or false while they
// are not known. pts is the current audio packet's PTS (ticks), ts its
// RTP timestamp.
func (x *whipSession) audioShift(pts int64, ts uint32, clock int64) (int64, bool) {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	if !x.anchored || x.audioSR == nil {
		return 0, false
	}
	sr := x.audioSR
	want := media.DurationToTicks(x.anchorPTS+ntpSub(sr.ntp, x.anchorNTP), clock)
	return want - (pts + int64(int32(sr.rtp-ts))), true
}

// whipPending is a video packet held after a gap in the sequence numbers,
// with its arrival time.
type whipPending struct {
	pkt     rtp.Packet
	arrival time.Time
}

// maxWHIPPending bounds the video packets held while a gap waits for its
// retransmission (about a second of 4 Mbit/s video): beyond, the gap is
// a loss.
const maxWHIPPending = 512

// readTrack turns the packets of tr into units. t nil: the packets are
// read and dropped (so the track does not back up).
//
// Video with nack_wait: a gap in the sequence numbers is asked for again
// by RTCP NACK (the interceptor Start adds sends them every
// whipNACKInterval) and the packets after it wait, in order, at most
// nack_wait from the arrival of the first of them; the missing ones that
// arrive in time fill the gap (counted as recovered) and the rest go on
// as if nothing was lost. A gap still open then is a loss: the access
// units it touched are dropped and a keyframe is asked for.
func (x *whipSession) readTrack(tr *webrtc.TrackRemote, t *rtpdepay.Track) {
	defer func() {
		if r := recover(); r != nil {
			x.log.Error("whip packet handling panic, closing the session", "panic", fmt.Sprint(r))
			go x.close(errors.New("packet handling panic"))
		}
	}()
	var (
		started bool
		ext     int64 // unwrapped timestamp, relative to first
		lastTS  uint32
		offset  int64 // the first packet's arrival after the session start, in clock ticks
		nextSeq uint16
		clock   = int64(tr.Codec().ClockRate)
		buf     = make([]byte, 1500)
		isVideo = t != nil && t == x.video
		isAudio = t != nil && t == x.audio
		// Audio is placed on video's timeline by the sender reports
		// (synced), or after whipSyncWait by its arrival.
		synced     bool
		firstAudio time.Time
		anchored   bool // video: the NTP anchor is set
		// After a loss, video units up to dropThrough (the time of the
		// first packet after the loss) may miss data.
		dropping    bool
		dropThrough time.Duration
		// Video packets after a gap, by sequence number, waiting for it.
		pending  = map[uint16]whipPending{}
		nackWait = x.s.cfg.NACKWait
		tx       *whipTranscode
	)
	if isVideo {
		if tx = x.tx.Load(); tx != nil {
			defer tx.close()
		}
	}
	// videoLost makes video wait for a keyframe.
	videoLost := func(n uint64) {
		if tx != nil {
			tx.lost()
		} else {
			x.depay.Lost(n)
		}
	}
	// decode turns a packet into units.
	decode := func(pkt *rtp.Packet, pts int64, now time.Time) []*media.Unit {
		if tx != nil {
			return tx.decode(pkt, pts, now)
		}
		return x.depay.Decode(t, pkt, pts, true, now)
	}
	if clock <= 0 {
		clock = 90000
	}
	// handle turns one in-order packet into units; lost is how many
	// packets are missing right before it.
	handle := func(pkt *rtp.Packet, now time.Time, lost int) {
		if !started {
			started = true
			lastTS = pkt.Timestamp
			offset = media.DurationToTicks(now.Sub(x.start), clock)
		} else {
			ext += int64(int32(pkt.Timestamp - lastTS))
			lastTS = pkt.Timestamp
		}
		nextSeq = pkt.SequenceNumber + 1
		// Each track's clock starts at its first packet's arrival. The
		// publisher's RTCP sender reports then say when, on its wall
		// clock, each track's samples were taken: video's first report
		// ties that clock to video's timeline, and audio is moved onto
		// it (audio that started late, or was held back before sending,
		// still lines up). Without reports, arrival stays.
		pts := offset + ext
		switch {
		case isVideo && !anchored:
			anchored = x.anchorVideo(pts, pkt.Timestamp, clock)
		case isAudio && !synced:
			if firstAudio.IsZero() {
				firstAudio = now
			}
			if shift, ok := x.audioShift(pts, pkt.Timestamp, clock); ok {
				offset += shift
				pts += shift
				synced = true
				x.log.Info("whip audio lined up with video by RTCP sender reports",
					"shift", media.TicksToDuration(shift, clock).Round(time.Millisecond))
			} else if now.Sub(firstAudio) >= whipSyncWait {
				synced = true
				x.log.Info("whip audio timed by arrival: no RTCP sender reports", "waited", whipSyncWait)
			} else {
				x.s.lost.Add(uint64(lost))
				return // dropped until audio is on video's timeline
			}
		}
		if lost > 0 {
			x.s.lost.Add(uint64(lost))
			if isVideo {
				// The access units the loss touched end at this packet's
				// at the latest: they are dropped, and video waits for a
				// keyframe, which is asked for.
				videoLost(uint64(lost))
				dropping, dropThrough = true, media.TicksToDuration(pts, clock)
				x.requestKeyframe()
			}
		}
		for _, u := range decode(pkt, pts, now) {
			if dropping {
				if u.PTS <= dropThrough {
					videoLost(0) // an IDR spanning the loss must not restart video
					continue
				}
				dropping = false
			}
			x.write(u)
		}
	}
	// flush hands on the held packets that follow nextSeq without a gap.
	flush := func() {
		for {
			p, ok := pending[nextSeq]
			if !ok {
				return
			}
			delete(pending, nextSeq)
			handle(&p.pkt, p.arrival, 0)
		}
	}
	// oldest is the held packet next in sequence after the gap.
	oldest := func() (uint16, whipPending) {
		var best uint16
		var bp whipPending
		first := true
		for seq, p := range pending {
			if first || int16(seq-best) < 0 {
				best, bp, first = seq, p, false
			}
		}
		return best, bp
	}
	// giveUp declares the packets missing before the oldest held one lost.
	giveUp := func() {
		seq, p := oldest()
		delete(pending, seq)
		handle(&p.pkt, p.arrival, int(int16(seq-nextSeq)))
		flush()
	}
	deadline := false // a read deadline is set
	for {
		switch {
		case len(pending) > 0:
			_, p := oldest()
			_ = tr.SetReadDeadline(p.arrival.Add(nackWait))
			deadline = true
		case deadline:
			_ = tr.SetReadDeadline(time.Time{})
			deadline = false
		}
		n, _, err := tr.Read(buf)
		if err != nil {
			var ne net.Error
			if deadline && errors.As(err, &ne) && ne.Timeout() {
				if len(pending) > 0 {
					giveUp()
				}
				continue
			}
			return
		}
		now := time.Now()
		x.lastRTP.Store(now.UnixNano())
		if t == nil {
			continue
		}
		var pkt rtp.Packet
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		// Fresh packet buffers: units and held packets keep slices of the
		// payload.
		buf = make([]byte, 1500)
		if !started {
			handle(&pkt, now, 0)
			continue
		}
		gap := int16(pkt.SequenceNumber - nextSeq)
		switch {
		case gap < 0:
			continue // late or duplicate: its access unit is gone
		case gap == 0:
			if len(pending) > 0 {
				x.s.recovered.Add(1) // it filled (part of) a gap
			}
			handle(&pkt, now, 0)
			flush()
		case !isVideo || nackWait <= 0:
			handle(&pkt, now, int(gap))
		default:
			if _, dup := pending[pkt.SequenceNumber]; !dup {
				pending[pkt.SequenceNumber] = whipPending{pkt: pkt, arrival: now}
			}
			if len(pending) > maxWHIPPending {
				giveUp()
			}
		}
	}
}

// requestKeyframe sends a PLI to the publisher, at most every 200 ms.
func (x *whipSession) requestKeyframe() {
	ssrc := x.videoSSRC.Load()
	if ssrc == 0 {
		return
	}
	now := time.Now().UnixNano()
	if last := x.lastPLI.Load(); now-last < int64(200*time.Millisecond) || !x.lastPLI.CompareAndSwap(last, now) {
		return
	}
	_ = x.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
}

// write publishes the stream at its first decodable IDR and writes units
// relative to that unit's DTS; audio starts with video.
func (x *whipSession) write(u *media.Unit) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return
	}
	if x.pub == nil {
		if u.Track != x.video.Index {
			return
		}
		desc, ok := x.depay.Description()
		if tx := x.tx.Load(); tx != nil {
			// The H.264 the transcoder makes, not what the publisher sent.
			sps, pps := tx.tc.ParameterSets()
			desc.Tracks[x.video.Index] = &media.Track{Codec: media.CodecH264, SPS: sps, PPS: pps}
			ok = sps != nil && pps != nil
		}
		if !ok {
			return
		}
		pub, err := x.s.hub.Publish(x.path, desc, x.source())
		if err != nil {
			x.log.Info("whip publish failed, closing the session", "err", err)
			go x.close(err)
			return
		}
		x.pub = pub
		x.log.Info("whip publisher live", "tracks", len(desc.Tracks), "video", desc.Tracks[x.video.Index].String())
	}
	if !x.hasBase {
		x.base, x.hasBase = u.DTS, true
	}
	u.PTS -= x.base
	u.DTS -= x.base
	if u.PTS < 0 && u.Track != x.video.Index {
		return
	}
	x.pub.Write(u)
}

// watch drops a silent publisher and asks for keyframes periodically
// until the session ends.
func (x *whipSession) watch() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastKey := time.Now()
	for {
		select {
		case <-x.done:
			return
		case now := <-tick.C:
			last := x.start
			if n := x.lastRTP.Load(); n > 0 {
				last = time.Unix(0, n)
			}
			x.mu.Lock()
			live := x.pub != nil
			x.mu.Unlock()
			switch {
			case now.Sub(last) > x.s.cfg.MediaTimeout:
				go x.close(fmt.Errorf("no media for %v", x.s.cfg.MediaTimeout))
			case !live && now.Sub(x.start) > x.s.cfg.MediaTimeout:
				go x.close(fmt.Errorf("no decodable H.264 keyframe within %v", x.s.cfg.MediaTimeout))
			}
			if now.Sub(lastKey) >= x.s.cfg.KeyframeInterval || !live {
				lastKey = now
				x.requestKeyframe()
			}
		}
	}
}

// close ends the session once: the PeerConnection closes and the stream
// is unpublished.
func (x *whipSession) close(reason error) {
	x.closeOnce.Do(func() {
		x.mu.Lock()
		x.closed = true
		pub := x.pub
		x.pub = nil
		x.mu.Unlock()
		close(x.done)
		x.s.remove(x)
		if pub != nil {
			pub.Close()
		}
		_ = x.pc.Close()
		var errs uint64
		select {
		case <-x.ready:
			errs = x.depay.Errors()
		default:
		}
		x.log.Info("whip session ended", "reason", fmt.Sprint(reason), "depacketization_errors", errs)
	})
}
