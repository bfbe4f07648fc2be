package overlay

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/internal/rtpdepay"
	"github.com/gradient-cdn/gradient/media"
)

// RelaySourcePrefix starts the hub source of every stream a relay
// publishes ("relay from 10.0.0.2:8554"), so that the node does not take a
// relayed stream for one published into it.
const RelaySourcePrefix = "relay from "

// RelayUser starts the RTSP user of relay requests: "gradient.<node>",
// the node that pulls. Its password is derived from the cluster secret for
// that node and path (RelayPassword), and proved with RTSP Digest, so
// neither the secret nor a password crosses the network.
const RelayUser = "gradient"

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Path is the hub path relayed ("live/cam1@360p"), the same upstream
	// and here. Required.
	Path string `yaml:"path"`
	// Sources are the RTSP addresses (host:port, or rtsps://host:port for
	// a source that speaks RTSPS) to pull from, best first:
	// the plan's parent, then fallbacks (its ancestors up to the root).
	// Default none (SetSources gives them later).
	Sources []string `yaml:"sources"`
	// Secret is the cluster secret, from which the relay's RTSP password is
	// derived (RelayPassword). Default empty: no credentials sent.
	Secret string `yaml:"-"`
	// Node is the name of the node that pulls: its RTSP user is
	// "gradient.<Node>".
	Node string `yaml:"-"`
	// Grace is how long the local stream stays published without any
	// upstream (a parent died and no replacement runs yet), so that local
	// viewers only see a pause. Default 15 s.
	Grace time.Duration `yaml:"grace"`
	// DialTimeout bounds connecting to a source. Default 2 s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout closes an upstream silent for this long. Default 3 s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// Takeover, when set, lets the relay take the local stream over from
	// a publisher it accepts (a local serverlet making the rendition the
	// plan now brings from upstream): the stream's readers stay and read
	// on from the relay (media.Hub.Takeover). Nil: the relay waits until
	// the path is free.
	Takeover func(media.StreamInfo) bool `yaml:"-"`
	// TLS verifies the certificate of an rtsps:// source (its RootCAs:
	// overlay.peer_ca). Nil: the system pool. A source whose certificate
	// does not verify is refused (logged as a warning).
	TLS *tls.Config `yaml:"-"`
}

// DefaultRelayConfig returns the relay's defaults (no path, no sources).
func DefaultRelayConfig() RelayConfig {
	return RelayConfig{Grace: 15 * time.Second, DialTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second}
}

// Validate checks the config and names the bad field by its YAML key.
func (c RelayConfig) Validate() error {
	if _, _, err := media.ParsePath(c.Path); err != nil {
		return fmt.Errorf("path: %w", err)
	}
	return nil
}

// Relay pulls one rendition from a parent node over RTSP (TCP interleaved)
// and publishes it into the local hub under the same path. The local
// stream outlives its upstream sessions: when the source changes (a new
// plan, or the parent died and a fallback takes over), the new session is
// started first and replaces the old one at its first keyframe
// (make-before-break), with timestamps kept continuous, so local viewers
// stay connected.
type Relay struct {
	cfg RelayConfig
	hub *media.Hub
	log *slog.Logger

	mu       sync.Mutex
	sources  []string
	active   *upstream
	pending  *upstream
	failedAt map[string]time.Time
	tlsWarn  map[string]time.Time // when a source's refused certificate was last logged
	next     int                  // index of the next source to try when nothing runs
	pub      *media.Publisher
	desc     media.Description
	lastPTS  time.Duration
	lastAt   time.Time
	lostAt   time.Time // when the last active upstream ended
	switches int
	started  bool
	closed   bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	wg   sync.WaitGroup // upstream sessions and their closing
}

// NewRelay checks cfg and builds a relay into hub; Start starts it. The
// zero fields of cfg take DefaultRelayConfig's values.
func NewRelay(cfg RelayConfig, hub *media.Hub, log *slog.Logger) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	defaults.Fill(&cfg, DefaultRelayConfig())
	if log == nil {
		log = slog.Default()
	}
	return &Relay{cfg: cfg, hub: hub, log: log.With("component", "relay", "stream", cfg.Path),
		sources: append([]string(nil), cfg.Sources...), failedAt: map[string]time.Time{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Start starts relaying: the supervisor that keeps an upstream running.
func (r *Relay) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return errors.New("relay: started twice or after Close")
	}
	r.started = true
	go r.supervise()
	return nil
}

// Path is the relayed path.
func (r *Relay) Path() string { return r.cfg.Path }

// SetSources replaces the source list (best first). A running upstream
// that is not the new best is replaced once the best delivers.
func (r *Relay) SetSources(sources []string) {
	r.mu.Lock()
	same := len(sources) == len(r.sources)
	for i := 0; same && i < len(sources); i++ {
		same = sources[i] == r.sources[i]
	}
	if !same {
		r.sources = append([]string(nil), sources...)
		r.next = 0
		// A fresh plan deserves a fresh try of every source.
		r.failedAt = map[string]time.Time{}
	}
	r.mu.Unlock()
	if !same {
		r.poke()
	}
}

// SetTakeover lets the relay take the local stream over from a publisher
// that f accepts (see RelayConfig.Takeover).
func (r *Relay) SetTakeover(f func(media.StreamInfo) bool) {
	r.mu.Lock()
	r.cfg.Takeover = f
	r.mu.Unlock()
}

// Source is the address of the upstream currently feeding the stream, ""
// when none is.
func (r *Relay) Source() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active == nil {
		return ""
	}
	return r.active.addr
}

// Running reports whether an upstream from the best source feeds the stream.
func (r *Relay) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active != nil && r.pub != nil && len(r.sources) > 0 && r.active.addr == r.sources[0]
}

// Live reports whether the local stream is published and fed.
func (r *Relay) Live() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active != nil && r.pub != nil
}

// Switches counts how often the feeding upstream changed.
func (r *Relay) Switches() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.switches
}

// Close stops relaying and ends the local stream. Safe without Start and
// more than once.
func (r *Relay) Close() error {
	r.mu.Lock()
	started := r.started
	if r.closed {
		r.mu.Unlock()
		if started {
			<-r.done
		}
		return nil
	}
	r.closed = true
	close(r.stop)
	r.mu.Unlock()
	if started {
		<-r.done
	}
	r.wg.Wait()
	return nil
}

func (r *Relay) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// supervise keeps an upstream running from the best reachable source.
func (r *Relay) supervise() {
	defer close(r.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			r.mu.Lock()
			ups := []*upstream{r.active, r.pending}
			r.active, r.pending = nil, nil
			pub := r.pub
			r.pub = nil
			r.mu.Unlock()
			for _, u := range ups {
				if u != nil {
					u.close()
				}
			}
			if pub != nil {
				pub.Close()
			}
			return
		case <-r.kick:
		case <-t.C:
		}
		r.step()
	}
}

const (
	relayRetry        = 500 * time.Millisecond // wait before retrying a source that failed
	relayStartTimeout = 5 * time.Second        // a pending upstream must deliver a keyframe by then
)

func (r *Relay) step() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if p := r.pending; p != nil {
		select {
		case <-p.done:
			r.failedAt[p.addr] = now
			r.pending = nil
			if r.active == nil && len(r.sources) > 0 {
				r.next = (indexOf(r.sources, p.addr) + 1) % len(r.sources)
			}
		default:
			if now.Sub(p.started) < relayStartTimeout {
				return
			}
			r.log.Info("relay upstream gave no keyframe in time", "source", p.addr)
			r.failedAt[p.addr] = now
			r.pending = nil
			r.closeAsync(p)
			if r.active == nil && len(r.sources) > 0 {
				r.next = (indexOf(r.sources, p.addr) + 1) % len(r.sources)
			}
		}
	}
	if r.active == nil && r.pub != nil && !r.lostAt.IsZero() && now.Sub(r.lostAt) > r.cfg.Grace {
		r.log.Info("relay has no upstream for too long, ending the local stream", "grace", r.cfg.Grace)
		r.pub.Close()
		r.pub = nil
	}
	if r.pending != nil || len(r.sources) == 0 {
		return
	}
	var addr string
	switch {
	case r.active == nil:
		// Nothing feeds the stream: try the sources in turn.
		for i := 0; i < len(r.sources); i++ {
			a := r.sources[(r.next+i)%len(r.sources)]
			if now.Sub(r.failedAt[a]) >= relayRetry {
				addr = a
				break
			}
		}
	case r.active.addr != r.sources[0]:
		// Fed from a fallback or an old parent: try the best source.
		if now.Sub(r.failedAt[r.sources[0]]) >= 2*relayRetry {
			addr = r.sources[0]
		}
	}
	if addr == "" {
		return
	}
	r.pending = r.dial(addr)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// upstream is one RTSP play session from one source.
type upstream struct {
	r       *Relay
	addr    string
	started time.Time
	client  *gortsplib.Client
	done    chan struct{}
	once    sync.Once
	err     error

	// set up before play, then used by gortsplib's reading goroutine only
	depay    *rtpdepay.Stream
	desc     media.Description // with the parameter sets, from the first keyframe on
	videoIdx int

	promoted bool
	offset   time.Duration
}

// dial starts an upstream session in the background. Called with r.mu held.
func (r *Relay) dial(addr string) *upstream {
	u := &upstream{r: r, addr: addr, started: time.Now(), done: make(chan struct{}), videoIdx: -1}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		u.run()
	}()
	return u
}

// closeAsync closes an upstream without blocking the caller (which may be
// its own reading goroutine, or hold r.mu).
func (r *Relay) closeAsync(u *upstream) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		u.close()
	}()
}

func (u *upstream) run() {
	err := u.play()
	u.once.Do(func() { u.err = err; close(u.done) })
	r := u.r
	r.mu.Lock()
	if r.active == u {
		r.active = nil
		r.lostAt = time.Now()
		r.failedAt[u.addr] = time.Now()
		if len(r.sources) > 0 {
			r.next = (indexOf(r.sources, u.addr) + 1) % len(r.sources)
		}
		r.log.Info("relay upstream lost", "source", u.addr, "err", fmt.Sprint(err))
	} else if r.pending == u {
		if tlsRefused(err) && time.Since(r.tlsWarn[u.addr]) >= time.Minute {
			if r.tlsWarn == nil {
				r.tlsWarn = map[string]time.Time{}
			}
			r.tlsWarn[u.addr] = time.Now()
			r.log.Warn("relay refused the source's TLS certificate (not signed by overlay.peer_ca?); logged once a minute", "source", u.addr, "err", err.Error())
		} else {
			r.log.Debug("relay upstream failed", "source", u.addr, "err", fmt.Sprint(err))
		}
	}
	r.mu.Unlock()
	r.poke()
}

// tlsRefused reports whether err is a refused TLS peer: a certificate
// that does not verify, or a failed handshake.
func tlsRefused(err error) bool {
	if err == nil {
		return false
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var header tls.RecordHeaderError
	return errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &host) ||
		errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &header)
}

func (u *upstream) relayURL() string {
	x := url.URL{Scheme: "rtsp", Host: u.addr, Path: "/" + u.r.cfg.Path}
	if h, ok := strings.CutPrefix(u.addr, "rtsps://"); ok {
		x.Scheme, x.Host = "rtsps", h
	}
	if u.r.cfg.Secret != "" {
		user := relayUser(u.r.cfg.Node)
		x.User = url.UserPassword(user, RelayPassword(u.r.cfg.Secret, user, u.r.cfg.Path))
	}
	return x.String()
}

// play runs the session until it fails or is closed.
func (u *upstream) play() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("relay session panic: %v", p)
		}
	}()
	uu, err := base.ParseURL(u.relayURL())
	if err != nil {
		return err
	}
	tcp := gortsplib.TransportTCP
	dialTimeout := u.r.cfg.DialTimeout
	c := &gortsplib.Client{
		Scheme:       uu.Scheme,
		Host:         uu.Host,
		Transport:    &tcp,
		ReadTimeout:  u.r.cfg.ReadTimeout,
		WriteTimeout: u.r.cfg.ReadTimeout,
		UserAgent:    "gradient-relay",
		DialContext:  (&net.Dialer{Timeout: dialTimeout}).DialContext,
	}
	if uu.Scheme == "rtsps" {
		// gortsplib sets ServerName on the config it is given: one copy
		// per session.
		if u.r.cfg.TLS != nil {
			c.TLSConfig = u.r.cfg.TLS.Clone()
		} else {
			c.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	if err := c.Start2(); err != nil {
		return err
	}
	u.r.mu.Lock()
	closing := u.r.closed || (u.r.pending != u && u.r.active != u)
	u.client = c
	u.r.mu.Unlock()
	if closing {
		c.Close()
		return errors.New("relay session no longer wanted")
	}
	defer c.Close()
	sd, _, err := c.Describe(uu)
	if err != nil {
		return fmt.Errorf("describe %s: %w", u.addr, err)
	}
	medias, err := u.setup(sd)
	if err != nil {
		return err
	}
	for _, m := range medias {
		if _, err := c.Setup(sd.BaseURL, m, 0, 0); err != nil {
			return fmt.Errorf("setup %s: %w", u.addr, err)
		}
	}
	c.OnPacketRTPAny(func(m *description.Media, f format.Format, pkt *rtp.Packet) {
		u.onPacket(c, m, f, pkt)
	})
	if _, err := c.Play(nil); err != nil {
		return fmt.Errorf("play %s: %w", u.addr, err)
	}
	return c.Wait()
}

// setup prepares the mapping of the upstream SDP and returns the medias
// to set up.
func (u *upstream) setup(sd *description.Session) ([]*description.Media, error) {
	d, err := rtpdepay.New(sd, u.r.log.With("source", u.addr))
	if err != nil {
		return nil, fmt.Errorf("relay %s from %s: %w", u.r.cfg.Path, u.addr, err)
	}
	u.depay, u.videoIdx = d, d.Video().Index
	var medias []*description.Media
	for _, t := range d.Tracks() {
		medias = append(medias, t.Media)
	}
	return medias, nil
}

// onPacket depacketizes on gortsplib's reading goroutine.
func (u *upstream) onPacket(c *gortsplib.Client, m *description.Media, f format.Format, pkt *rtp.Packet) {
	var t *rtpdepay.Track
	for _, x := range u.depay.Tracks() {
		if x.Media == m && x.Format == f {
			t = x
		}
	}
	if t == nil {
		return
	}
	pts, ok := c.PacketPTS2(m, pkt)
	for _, unit := range u.depay.Decode(t, pkt, pts, ok, time.Now()) {
		if unit.Track == u.videoIdx && u.desc.Tracks == nil {
			// The first video unit: the parameter sets are known.
			u.desc, _ = u.depay.Description()
		}
		if u.desc.Tracks == nil {
			continue // nothing is relayed before the first keyframe
		}
		u.r.deliver(u, unit)
	}
}

func (u *upstream) close() {
	u.r.mu.Lock()
	c := u.client
	u.r.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// deliver writes a unit of u to the local stream. The pending upstream
// takes over at its first keyframe.
func (r *Relay) deliver(u *upstream, unit *media.Unit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.active != u {
		if r.pending != u || unit.Track != u.videoIdx || !unit.Key {
			return
		}
		if err := r.promoteLocked(u, unit); err != nil {
			r.log.Warn("relay cannot publish", "source", u.addr, "err", err)
			r.pending = nil
			r.failedAt[u.addr] = time.Now()
			r.closeAsync(u)
			return
		}
	}
	unit.PTS += u.offset
	unit.DTS += u.offset
	if unit.PTS > r.lastPTS {
		r.lastPTS = unit.PTS
	}
	r.lastAt = unit.Received
	r.pub.Write(unit)
}

// promoteLocked makes u the feeding upstream, publishing or republishing
// the local stream as needed, and closes the upstream it replaces.
func (r *Relay) promoteLocked(u *upstream, first *media.Unit) error {
	if r.pub != nil && !media.SameTracks(r.desc, u.desc) {
		r.log.Info("relay upstream has other tracks, republishing", "source", u.addr)
		r.pub.Close()
		r.pub = nil
	}
	if r.pub == nil {
		// The hub keeps the description; the session goes on updating its own.
		var desc media.Description
		for _, t := range u.desc.Tracks {
			c := *t
			desc.Tracks = append(desc.Tracks, &c)
		}
		var pub *media.Publisher
		var err error
		if r.cfg.Takeover != nil {
			pub, err = r.hub.Takeover(r.cfg.Path, desc, RelaySourcePrefix+u.addr, r.cfg.Takeover)
		} else {
			pub, err = r.hub.Publish(r.cfg.Path, desc, RelaySourcePrefix+u.addr)
		}
		if err != nil {
			return err
		}
		r.pub, r.desc = pub, desc
		r.lastPTS, r.lastAt = 0, time.Time{}
		u.offset = -first.DTS
		if last, at := pub.Stream().Last(); !at.IsZero() {
			// Taken over: continue the stream's timeline. The first frame
			// carries this encoder's parameter sets, as every keyframe of
			// the rtpdepay mapping does.
			r.lastPTS, r.lastAt = last, at
			u.offset = last + max(time.Since(at), time.Millisecond) - first.DTS
		}
	} else {
		// Continue the local timeline: the new session's first unit comes
		// as long after the last written one as the wall clock says.
		gap := time.Since(r.lastAt)
		if gap < time.Millisecond {
			gap = time.Millisecond
		}
		u.offset = r.lastPTS + gap - first.DTS
	}
	old := r.active
	r.active, r.pending = u, nil
	r.lostAt = time.Time{}
	r.switches++
	if old != nil {
		r.closeAsync(old)
	}
	r.log.Info("relay upstream feeding", "source", u.addr, "replaced", old != nil, "after", time.Since(u.started).Round(time.Millisecond))
	return nil
}

// isRelaySource reports whether a hub source string is a relay's.
func isRelaySource(s string) bool { return strings.HasPrefix(s, RelaySourcePrefix) }

// relayUser is the RTSP user of node's relay requests.
func relayUser(node string) string { return RelayUser + "." + node }

// RelayPassword is the RTSP password of user's relay of path: HMAC-SHA256,
// keyed by a key derived from the cluster secret (never the secret, nor
// the gossip key, itself), of the user and the path. A password learnt
// from one relay opens no other path and speaks for no other node.
func RelayPassword(secret, user, path string) string {
	k := hmac.New(sha256.New, []byte(secret))
	k.Write([]byte("gradient/relay/v1"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(user + "\n" + path))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// RelayCredentials returns the hook for ingest.RTSPConfig.Credentials that
// guards relays: reading over RTSP requires a relay user ("gradient.<node>")
// proving RelayPassword with RTSP Digest (RTSP is how nodes relay to each
// other; viewers use WHEP or HLS). Publishing is left open unless
// protectPublish is set, in which case it needs the same credentials. An
// empty secret returns nil: no authentication.
func RelayCredentials(secret string, protectPublish bool) func(user, path string, publish bool) (string, bool) {
	if secret == "" {
		return nil
	}
	return func(user, path string, publish bool) (string, bool) {
		if publish && !protectPublish {
			return "", true
		}
		if !strings.HasPrefix(user, RelayUser+".") {
			return "", false
		}
		return RelayPassword(secret, user, path), false
	}
}
