package egress

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

// RTSPReaderConfig configures an RTSPReader. DefaultRTSPReaderConfig
// gives the defaults; NewRTSPReader fills the zero fields of a hand-built
// config from it.
type RTSPReaderConfig struct {
	// MaxPayloadSize bounds the RTP payloads of re-packetized units, so
	// that packets fit a UDP datagram. Default 1450 bytes (gortsplib's).
	MaxPayloadSize int `yaml:"max_payload_size"`
}

// DefaultRTSPReaderConfig returns the RTSP reader defaults.
func DefaultRTSPReaderConfig() RTSPReaderConfig {
	return RTSPReaderConfig{MaxPayloadSize: 1450}
}

// Validate checks every field and names the bad one by its YAML key.
func (c RTSPReaderConfig) Validate() error {
	if c.MaxPayloadSize < 100 || c.MaxPayloadSize > 1460 {
		return fmt.Errorf("max_payload_size: %d is not 100 to 1460 bytes", c.MaxPayloadSize)
	}
	return nil
}

// RTSPReader serves RTSP readers out of the hub. It implements
// ingest.RTSPReadSource: for each stream path being read, one hub reader
// feeds one gortsplib.ServerStream (re-packetized with RFC 6184, RFC 3640
// and RFC 7587 packetizers), shared by every RTSP reader of that path. The
// shared stream is created on first use and torn down when the last reader
// releases it; when the hub stream ends the readers' sessions are closed.
// One reader per path on the hub is what lets a node serve a thousand RTSP
// readers (or relays) of a stream.
type RTSPReader struct {
	cfg RTSPReaderConfig
	hub *media.Hub
	log *slog.Logger

	mu      sync.Mutex
	streams map[string]*rtspShared
	opening map[string]*rtspOpening // streams being opened, without r.mu
	closed  bool
	wg      sync.WaitGroup
}

// NewRTSPReader returns a reader source over hub, or the config's error.
// It does no I/O; log may be nil (slog.Default()).
func NewRTSPReader(cfg RTSPReaderConfig, hub *media.Hub, log *slog.Logger) (*RTSPReader, error) {
	if hub == nil {
		return nil, errors.New("rtsp reader: nil hub")
	}
	defaults.Fill(&cfg, DefaultRTSPReaderConfig())
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rtsp reader: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &RTSPReader{cfg: cfg, hub: hub, log: log.With("component", "rtsp-read"), streams: map[string]*rtspShared{},
		opening: map[string]*rtspOpening{}}, nil
}

// rtspShared is one path's shared ServerStream and the hub reader feeding it.
type rtspShared struct {
	path   string
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	reader *media.Reader
	refs   int
	out    []*rtspOutTrack // by hub track index; nil for tracks not carried

	// playing is closed when the first reader plays: feed holds the hub
	// reader's first units (the GOP cache, from an IDR on) until then,
	// because what is written before reaches nobody, and a reader that
	// starts mid-GOP logs decode errors until the next IDR.
	playing  chan struct{}
	playOnce sync.Once
	stop     chan struct{} // closed when the last user released the stream or the reader closes
	stopOnce sync.Once

	// A reader that plays once the stream runs joins at the next IDR
	// (Join): feed lets it in just before writing the IDR and waits until
	// it plays (Playing sends on activated).
	jmu       sync.Mutex
	started   bool            // the first reader plays
	joiners   []chan struct{} // closed to let a waiting reader in
	activated chan struct{}
}

// rtspJoinActivation bounds how long feed holds an IDR for the readers it
// let in to start playing.
const rtspJoinActivation = 500 * time.Millisecond

// rtspOutTrack re-packetizes one hub track.
type rtspOutTrack struct {
	media     *description.Media
	clockRate int64
	tsOffset  uint32
	h264      *rtph264.Encoder
	aac       *rtpmpeg4audio.Encoder
	opus      *rtpsimpleaudio.Encoder
	sps, pps  []byte
}

// Stream implements ingest.RTSPReadSource. r.mu is never held while a
// stream opens: subscribing to a rendition nobody makes yet waits for a
// serverlet or a relay (seconds), and that must not stall every other
// DESCRIBE. Concurrent requests for one path share its opening.
func (r *RTSPReader) Stream(srv *gortsplib.Server, path string) (*gortsplib.ServerStream, func(), error) {
	if _, _, err := media.ParsePath(path); err != nil {
		return nil, nil, err
	}
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, nil, fmt.Errorf("rtsp read %s: reader closed: %w", path, media.ErrNotFound)
		}
		if sh := r.streams[path]; sh != nil {
			defer r.mu.Unlock()
			if sh.srv != srv {
				return nil, nil, fmt.Errorf("rtsp read %s: stream belongs to another RTSP server", path)
			}
			return r.use(sh)
		}
		if op := r.opening[path]; op != nil {
			r.mu.Unlock()
			<-op.done
			if op.err != nil {
				return nil, nil, op.err
			}
			continue // it is in r.streams now (or already released: open again)
		}
		op := &rtspOpening{done: make(chan struct{})}
		r.opening[path] = op
		r.mu.Unlock()

		sh, err := r.open(srv, path)
		r.mu.Lock()
		delete(r.opening, path)
		if err == nil && r.closed {
			sh.reader.Close()
			sh.stream.Close()
			err = fmt.Errorf("rtsp read %s: reader closed: %w", path, media.ErrNotFound)
		}
		op.err = err
		close(op.done)
		if err != nil {
			r.mu.Unlock()
			return nil, nil, err
		}
		r.streams[path] = sh
		r.wg.Add(1)
		go r.feed(sh)
		defer r.mu.Unlock()
		return r.use(sh)
	}
}

// use counts one more user of sh and returns what Stream does; r.mu held.
func (r *RTSPReader) use(sh *rtspShared) (*gortsplib.ServerStream, func(), error) {
	sh.refs++
	var once sync.Once
	return sh.stream, func() { once.Do(func() { r.release(sh) }) }, nil
}

// rtspOpening is a stream being opened; done is closed when it is in
// r.streams or failed with err.
type rtspOpening struct {
	done chan struct{}
	err  error
}

// open subscribes to the hub stream and builds its ServerStream, without
// r.mu.
func (r *RTSPReader) open(srv *gortsplib.Server, path string) (*rtspShared, error) {
	rd, err := r.hub.Subscribe(path, "rtsp")
	if err != nil {
		return nil, err // names the path already
	}
	sh := &rtspShared{path: path, srv: srv, reader: rd, playing: make(chan struct{}), stop: make(chan struct{}),
		activated: make(chan struct{}, 64)}
	desc := &description.Session{}
	for _, tr := range rd.Description().Tracks {
		ot, err := r.newOutTrack(tr, len(desc.Medias))
		if err != nil {
			rd.Close()
			return nil, fmt.Errorf("rtsp read %s: %w", path, err)
		}
		sh.out = append(sh.out, ot)
		if ot != nil {
			desc.Medias = append(desc.Medias, ot.media)
		}
	}
	sh.stream = &gortsplib.ServerStream{Server: srv, Desc: desc}
	if err := sh.stream.Initialize(); err != nil {
		rd.Close()
		return nil, fmt.Errorf("rtsp read %s: %w", path, err)
	}
	r.log.Info("rtsp read stream opened", "stream", path, "tracks", len(desc.Medias))
	return sh, nil
}

func rtspRandUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// newOutTrack describes and packetizes one hub track; n is its media index.
func (r *RTSPReader) newOutTrack(tr *media.Track, n int) (*rtspOutTrack, error) {
	pt := uint8(96 + n)
	ot := &rtspOutTrack{tsOffset: rtspRandUint32()}
	switch tr.Codec {
	case media.CodecH264:
		f := &format.H264{PayloadTyp: pt, SPS: tr.SPS, PPS: tr.PPS, PacketizationMode: 1}
		ot.media = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
		ot.h264 = &rtph264.Encoder{PayloadType: pt, PacketizationMode: 1, PayloadMaxSize: r.cfg.MaxPayloadSize}
		if err := ot.h264.Init(); err != nil {
			return nil, err
		}
		ot.sps, ot.pps = tr.SPS, tr.PPS
	case media.CodecAAC:
		f := &format.MPEG4Audio{PayloadTyp: pt, Config: tr.AAC, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		ot.media = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
		ot.aac = &rtpmpeg4audio.Encoder{PayloadType: pt, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3,
			PayloadMaxSize: r.cfg.MaxPayloadSize}
		if err := ot.aac.Init(); err != nil {
			return nil, err
		}
	case media.CodecOpus:
		ch := tr.Channels
		if ch <= 0 {
			ch = 2
		}
		f := &format.Opus{PayloadTyp: pt, ChannelCount: ch}
		ot.media = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
		ot.opus = &rtpsimpleaudio.Encoder{PayloadType: pt, PayloadMaxSize: r.cfg.MaxPayloadSize}
		if err := ot.opus.Init(); err != nil {
			return nil, err
		}
	default:
		r.log.Info("rtsp read: track not carried", "codec", string(tr.Codec))
		return nil, nil
	}
	ot.clockRate = int64(ot.media.Formats[0].ClockRate())
	return ot, nil
}

// release drops one user of sh; the last one tears it down.
func (r *RTSPReader) release(sh *rtspShared) {
	r.mu.Lock()
	sh.refs--
	last := sh.refs <= 0 && r.streams[sh.path] == sh
	if last {
		delete(r.streams, sh.path)
	}
	r.mu.Unlock()
	if last {
		// feed sees the closed queue and closes the ServerStream.
		sh.stopOnce.Do(func() { close(sh.stop) })
		sh.reader.Close()
	}
}

// shared returns the shared stream serving stream, nil when gone.
func (r *RTSPReader) shared(stream *gortsplib.ServerStream) *rtspShared {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.streams {
		if x.stream == stream {
			return x
		}
	}
	return nil
}

// Playing implements ingest.RTSPPlayingSource: the shared stream starts
// being fed when its first reader plays; a joining reader that plays lets
// feed write the IDR it was let in at.
func (r *RTSPReader) Playing(stream *gortsplib.ServerStream) {
	sh := r.shared(stream)
	if sh == nil {
		return
	}
	sh.jmu.Lock()
	sh.started = true
	sh.jmu.Unlock()
	sh.playOnce.Do(func() { close(sh.playing) })
	select {
	case sh.activated <- struct{}{}:
	default:
	}
}

// Join implements ingest.RTSPJoinSource: a reader of a stream that already
// runs waits until feed is about to write the next video IDR, at most
// wait, so that it starts decoding there instead of mid-GOP. The first
// reader does not wait: feed starts from the GOP cache when it plays.
func (r *RTSPReader) Join(stream *gortsplib.ServerStream, wait time.Duration) {
	sh := r.shared(stream)
	if sh == nil {
		return
	}
	sh.jmu.Lock()
	if !sh.started {
		sh.jmu.Unlock()
		return
	}
	in := make(chan struct{})
	sh.joiners = append(sh.joiners, in)
	sh.jmu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-in:
	case <-sh.stop:
	case <-t.C:
		sh.jmu.Lock()
		sh.joiners = slices.DeleteFunc(sh.joiners, func(c chan struct{}) bool { return c == in })
		sh.jmu.Unlock()
	}
}

// letJoinersIn lets the waiting readers in before an IDR is written and
// waits (briefly) until they play.
func (sh *rtspShared) letJoinersIn() {
	sh.jmu.Lock()
	js := sh.joiners
	sh.joiners = nil
	sh.jmu.Unlock()
	if len(js) == 0 {
		return
	}
	for drained := false; !drained; {
		select {
		case <-sh.activated:
		default:
			drained = true
		}
	}
	for _, c := range js {
		close(c)
	}
	t := time.NewTimer(rtspJoinActivation)
	defer t.Stop()
	for range js {
		select {
		case <-sh.activated:
		case <-t.C:
			return
		case <-sh.stop:
			return
		}
	}
}

// feed re-packetizes the hub units of sh into its ServerStream until the
// hub stream ends or the last reader leaves.
func (r *RTSPReader) feed(sh *rtspShared) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		if r.streams[sh.path] == sh {
			delete(r.streams, sh.path)
		}
		r.mu.Unlock()
		sh.reader.Close()
		// Closes the sessions still reading: their clients see the end.
		sh.stream.Close()
		r.log.Info("rtsp read stream closed", "stream", sh.path)
	}()
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("rtsp read: packetizer panic, stream closed", "stream", sh.path, "panic", fmt.Sprint(p))
		}
	}()
	select {
	case <-sh.playing:
	case <-sh.stop:
		return
	}
	var ntpBase time.Time
	var writeErrs uint64
	for u := range sh.reader.C() {
		if u.Track < 0 || u.Track >= len(sh.out) || sh.out[u.Track] == nil {
			continue
		}
		if ntpBase.IsZero() {
			ntpBase = u.Received.Add(-u.PTS)
			if u.Received.IsZero() {
				ntpBase = time.Now().Add(-u.PTS)
			}
		}
		if u.Key && sh.out[u.Track].h264 != nil {
			sh.letJoinersIn()
		}
		pkts, err := sh.out[u.Track].packetize(u)
		if err != nil {
			writeErrs++
			if writeErrs == 1 {
				r.log.Debug("rtsp read: unit not packetized", "stream", sh.path, "err", err)
			}
			continue
		}
		ntp := ntpBase.Add(u.PTS)
		for _, pkt := range pkts {
			if err := sh.stream.WritePacketRTPWithNTP(sh.out[u.Track].media, pkt, ntp); err != nil {
				return // stream closed
			}
		}
	}
}

// packetize turns one unit into RTP packets with its timestamp.
func (ot *rtspOutTrack) packetize(u *media.Unit) ([]*rtp.Packet, error) {
	ts := ot.tsOffset + uint32(rtspTicks(u.PTS, ot.clockRate))
	var pkts []*rtp.Packet
	switch {
	case ot.h264 != nil:
		au := u.Data
		if u.Key {
			au = media.WithParameterSets(au, ot.sps, ot.pps)
		}
		var err error
		if pkts, err = ot.h264.Encode(au); err != nil {
			return nil, err
		}
		for _, p := range pkts {
			p.Timestamp = ts
		}
	case ot.aac != nil:
		var err error
		if pkts, err = ot.aac.Encode(u.Data); err != nil {
			return nil, err
		}
		for _, p := range pkts {
			p.Timestamp = ts
		}
	case ot.opus != nil:
		off := int64(0)
		for _, d := range u.Data {
			p, err := ot.opus.Encode(d)
			if err != nil {
				return nil, err
			}
			p.Timestamp = ts + uint32(off)
			off += opus.PacketDuration2(d)
			pkts = append(pkts, p)
		}
	}
	return pkts, nil
}

// rtspTicks converts a duration to ticks of a clock without overflow.
func rtspTicks(d time.Duration, clockRate int64) int64 {
	sec, rem := int64(d/time.Second), int64(d%time.Second)
	return sec*clockRate + rem*clockRate/int64(time.Second)
}

// Close tears every shared stream down (their readers' sessions are
// closed) and waits for the feeding goroutines. It is idempotent.
func (r *RTSPReader) Close() error {
	r.mu.Lock()
	r.closed = true
	ss := make([]*rtspShared, 0, len(r.streams))
	for _, sh := range r.streams {
		ss = append(ss, sh)
	}
	clear(r.streams)
	r.mu.Unlock()
	for _, sh := range ss {
		sh.stopOnce.Do(func() { close(sh.stop) })
		sh.reader.Close()
	}
	r.wg.Wait()
	return nil
}
