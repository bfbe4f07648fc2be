package overlay

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	// Secret is the cluster secret relays authenticate with. Default none.
	Secret string `yaml:"-"`
	// Interval is how often the loop runs without a change. Default 1 s.
	Interval time.Duration `yaml:"interval"`
	// RelayGrace is RelayConfig.Grace for the relays it starts. Default
	// RelayConfig's (15 s).
	RelayGrace time.Duration `yaml:"relay_grace"`
	// Replaceable, when set, tells which local publishers a relay the plan
	// wants may take a path over from (a local serverlet making the same
	// rendition; media.Hub.Takeover), without cutting their readers.
	// Nil: such a path is left to its publisher and not relayed.
	Replaceable func(media.StreamInfo) bool `yaml:"-"`
	// Viewed, when set, lists the hub paths local viewers are watching.
	// Their relays are kept even when the newest plan moved the viewers'
	// class to another rendition, so that no session is cut.
	Viewed func() []string `yaml:"-"`
	// TLS verifies the certificates of RTSPS sources (RelayConfig.TLS):
	// overlay.peer_ca. Nil: the system pool.
	TLS *tls.Config `yaml:"-"`
}

// DefaultReconcilerConfig returns the reconciler's defaults.
func DefaultReconcilerConfig() ReconcilerConfig {
	return ReconcilerConfig{Interval: time.Second, RelayGrace: DefaultRelayConfig().Grace}
}

// Validate checks the config and names the bad field by its YAML key.
func (c ReconcilerConfig) Validate() error {
	if c.Interval < 0 {
		return errors.New("interval: must not be negative")
	}
	if c.RelayGrace < 0 {
		return errors.New("relay_grace: must not be negative")
	}
	return nil
}

// Reconciler makes the local relays and transcodes match the newest plan
// of every stream: for the plan's arc into this node it relays each level
// the arc carries from the parent (with the parent's ancestors as
// fallbacks); for the plan's transcodes at this node it holds a reader on
// the produced rendition, which makes the hub's RenditionProvider (the
// serverlets) run it. What a plan dropped is stopped only once everything
// the plan wants runs (make-before-break).
type Reconciler struct {
	cfg ReconcilerConfig
	m   *Membership
	hub *media.Hub
	log *slog.Logger
	// relayLog is the logger the relays get (each adds its component).
	relayLog *slog.Logger

	mu      sync.Mutex
	relays  map[string]*Relay
	keepers map[string]context.CancelFunc
	wants   map[string]time.Time // fast-start paths and their expiry
	started bool
	stop    chan struct{}
	done    chan struct{}
	kick    chan struct{}
	wg      sync.WaitGroup
}

// NewReconciler checks cfg and returns a reconciler for m's plans and
// hub; Start runs it. The zero fields of cfg take
// DefaultReconcilerConfig's values.
func NewReconciler(cfg ReconcilerConfig, m *Membership, hub *media.Hub, log *slog.Logger) (*Reconciler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	defaults.Fill(&cfg, DefaultReconcilerConfig())
	if log == nil {
		log = slog.Default()
	}
	return &Reconciler{cfg: cfg, m: m, hub: hub, log: log.With("component", "reconcile"), relayLog: log,
		relays: map[string]*Relay{}, keepers: map[string]context.CancelFunc{}, wants: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}, nil
}

// Start runs the loop.
func (r *Reconciler) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return errors.New("reconciler: started twice")
	}
	select {
	case <-r.stop:
		return errors.New("reconciler: started after Close")
	default:
	}
	r.started = true
	go r.run()
	return nil
}

// Close stops the loop, every relay and every transcode reader. Idempotent.
func (r *Reconciler) Close() error {
	r.mu.Lock()
	started := r.started
	select {
	case <-r.stop:
		r.mu.Unlock()
		if started {
			<-r.done
		}
		return nil
	default:
		close(r.stop)
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
	r.mu.Lock()
	relays := r.relays
	r.relays = map[string]*Relay{}
	for _, c := range r.keepers {
		c()
	}
	r.keepers = map[string]context.CancelFunc{}
	r.mu.Unlock()
	for _, rl := range relays {
		rl.Close()
	}
	r.wg.Wait()
	return nil
}

// Want asks for path to be available here for d even before a plan covers
// it (a viewer is arriving): it is relayed from the closest node that has
// it, or the root.
func (r *Reconciler) Want(path string, d time.Duration) {
	r.mu.Lock()
	if exp := time.Now().Add(d); exp.After(r.wants[path]) {
		r.wants[path] = exp
	}
	r.mu.Unlock()
	r.Kick()
}

// Kick runs the loop now.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Reconciler) run() {
	defer close(r.done)
	ch, cancel := r.m.Subscribe()
	defer cancel()
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-ch:
		case <-r.kick:
		case <-t.C:
		}
		r.Reconcile()
	}
}

// RelayStatus describes one local relay.
type RelayStatus struct {
	Path     string   `json:"path"`
	Sources  []string `json:"sources"`
	Source   string   `json:"source"` // the upstream feeding it now
	Live     bool     `json:"live"`
	Switches int      `json:"switches"`
}

// Relays lists the local relays, by path.
func (r *Reconciler) Relays() []RelayStatus {
	r.mu.Lock()
	rs := make([]*Relay, 0, len(r.relays))
	for _, x := range r.relays {
		rs = append(rs, x)
	}
	r.mu.Unlock()
	out := make([]RelayStatus, 0, len(rs))
	for _, x := range rs {
		x.mu.Lock()
		s := RelayStatus{Path: x.cfg.Path, Sources: append([]string(nil), x.sources...)}
		x.mu.Unlock()
		s.Source, s.Live, s.Switches = x.Source(), x.Live(), x.Switches()
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Relaying tells whether a relay of path runs here, live or starting.
func (r *Reconciler) Relaying(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.relays[path]
	return ok
}

// Transcodes lists the rendition paths this node holds for the plans'
// transcodes.
func (r *Reconciler) Transcodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.keepers))
	for p := range r.keepers {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// rtspOf maps node names to their relay sources (NodeMeta.RTSPSource:
// "rtsps://host:port" for an RTSPS node), skipping nodes that are not
// alive or have none.
func rtspOf(alive map[string]Member, names []string) []string {
	var out []string
	for _, n := range names {
		if mem, ok := alive[n]; ok && mem.Meta.RTSP != "" {
			out = append(out, mem.Meta.RTSPSource())
		}
	}
	return out
}

// Reconcile runs one pass.
func (r *Reconciler) Reconcile() {
	self := r.m.Name()
	alive := map[string]Member{}
	for _, x := range r.m.Alive() {
		alive[x.Name] = x
	}
	desired := map[string][]string{}
	planned := map[string]bool{}
	keep := map[string]bool{}
	plans := map[string]*Plan{}
	for _, p := range r.m.Plans() {
		plans[p.Stream] = p
		if _, levels, ok := p.Parent(self); ok {
			srcs := rtspOf(alive, p.Ancestors(self))
			for _, l := range levels {
				desired[p.Path(l)] = srcs
				planned[p.Path(l)] = true
			}
		}
		for _, t := range p.Transcodes(self) {
			keep[p.Path(t.To)] = true
		}
	}

	// Paths wanted before (or beside) the plan: arriving and current viewers.
	now := time.Now()
	r.mu.Lock()
	var extra []string
	for p, exp := range r.wants {
		if now.After(exp) {
			delete(r.wants, p)
			continue
		}
		extra = append(extra, p)
	}
	r.mu.Unlock()
	if r.cfg.Viewed != nil {
		extra = append(extra, r.cfg.Viewed()...)
	}
	rtts := r.m.RTTs()
	for _, path := range extra {
		if _, ok := desired[path]; ok || keep[path] {
			continue
		}
		stream, rendition, err := media.ParsePath(path)
		if err != nil {
			continue
		}
		info, ok := r.m.Stream(stream)
		if !ok || info.Root == self {
			continue
		}
		var from []string
		if p := plans[stream]; p != nil {
			// Nodes that have the level in the plan, nearest first.
			level := rendition
			if level == "" && len(p.Levels) > 0 {
				level = p.Levels[0].Name
			}
			var have []string
			for _, n := range p.Nodes {
				if n == self || n == info.Root {
					continue
				}
				for _, l := range p.Has(n) {
					if l == level {
						have = append(have, n)
					}
				}
			}
			sort.SliceStable(have, func(i, j int) bool {
				a, _ := rttBetween(rtts, self, have[i])
				b, _ := rttBetween(rtts, self, have[j])
				return a < b
			})
			from = append(from, have...)
		}
		from = append(from, info.Root)
		desired[path] = rtspOf(alive, from)
	}
	// A path published here by something else (the source itself, a
	// serverlet) needs no relay, unless the plan brings it from upstream
	// and the publisher is one a relay may take over: then the relay
	// starts, takes the path over once it has the upstream's first
	// keyframe, and what fed the old publisher runs until then (relays the
	// plan dropped stop only when every wanted one is live).
	takeover := map[string]bool{} // paths whose relay may take them over (Replaceable)
	for path := range desired {
		st, ok := r.hub.Lookup(path)
		if !ok {
			continue
		}
		info := st.Info()
		switch {
		case isRelaySource(info.Source):
		case planned[path] && r.cfg.Replaceable != nil && r.cfg.Replaceable(info):
			takeover[path] = true
		default:
			delete(desired, path)
		}
	}
	for path := range keep {
		if _, ok := desired[path]; ok {
			delete(keep, path)
		}
	}

	r.mu.Lock()
	select {
	case <-r.stop:
		r.mu.Unlock()
		return
	default:
	}
	for path, srcs := range desired {
		if len(srcs) == 0 {
			continue
		}
		if rl := r.relays[path]; rl != nil {
			rl.SetSources(srcs)
			if takeover[path] {
				rl.SetTakeover(r.cfg.Replaceable)
			}
			continue
		}
		var allow func(media.StreamInfo) bool
		if takeover[path] {
			allow = r.cfg.Replaceable
		}
		r.log.Info("relay start", "path", path, "sources", srcs, "takeover", takeover[path])
		rl, err := NewRelay(RelayConfig{Path: path, Sources: srcs, Secret: r.cfg.Secret, Node: r.m.Name(), Grace: r.cfg.RelayGrace,
			Takeover: allow, TLS: r.cfg.TLS}, r.hub, r.relayLog)
		if err == nil {
			err = rl.Start()
		}
		if err != nil {
			r.log.Warn("relay start failed", "path", path, "err", err)
			continue
		}
		r.relays[path] = rl
	}
	ready := true
	for path := range desired {
		if rl := r.relays[path]; rl != nil && !rl.Live() {
			ready = false
		}
	}
	var stopping []*Relay
	for path, rl := range r.relays {
		if _, ok := desired[path]; ok {
			continue
		}
		if ready || !rl.Live() {
			r.log.Info("relay stop", "path", path)
			stopping = append(stopping, rl)
			delete(r.relays, path)
		}
	}
	for path := range keep {
		if r.keepers[path] == nil {
			ctx, cancel := context.WithCancel(context.Background())
			r.keepers[path] = cancel
			r.wg.Add(1)
			go r.hold(ctx, path)
		}
	}
	for path, cancel := range r.keepers {
		if !keep[path] {
			cancel()
			delete(r.keepers, path)
		}
	}
	r.mu.Unlock()
	for _, rl := range stopping {
		rl.Close()
	}
}

// hold keeps a reader on a transcoded rendition until ctx ends, so that
// the rendition runs here (the hub's RenditionProvider starts it).
func (r *Reconciler) hold(ctx context.Context, path string) {
	defer r.wg.Done()
	r.log.Info("transcode start", "path", path)
	defer r.log.Info("transcode stop", "path", path)
	for {
		rd, err := r.hub.SubscribeContext(ctx, path, "plan transcode")
		if err == nil {
			func() {
				defer rd.Close()
				for {
					select {
					case <-ctx.Done():
						return
					case _, ok := <-rd.C():
						if !ok {
							return
						}
					}
				}
			}()
		} else {
			r.log.Debug("transcode not available yet", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
