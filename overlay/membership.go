package overlay

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// NodeMeta is what a node tells the cluster about itself. It travels in
// memberlist's node metadata, so it must stay under 512 bytes encoded.
type NodeMeta struct {
	// ID is the node's name.
	ID string `json:"id"`
	// HTTP, RTSP and SRT are the advertised service addresses (host:port).
	// A missing or unspecified host ("":8554, "0.0.0.0:8554") means the
	// node's gossip address.
	HTTP string `json:"http,omitempty"`
	RTSP string `json:"rtsp,omitempty"`
	SRT  string `json:"srt,omitempty"`
	// Price is what one Mbps relayed through the node costs (any currency
	// unit, the same on every node). See LinkCost.
	Price float64 `json:"price,omitempty"`
	// TranscodeSlots is how many renditions the node can produce at once
	// (0: it cannot transcode). How many it produces now is gossiped as
	// state (SetTranscodeUse), not in the metadata: memberlist updates
	// metadata in place, racing with readers of its member list.
	TranscodeSlots int `json:"slots,omitempty"`
	// TranscodeCost is paid once per rendition the node produces.
	TranscodeCost float64 `json:"tcost,omitempty"`
	// Leaving is set by a node on its way out (Close), just before it
	// leaves: the others record a graceful leave rather than a death.
	Leaving bool `json:"leaving,omitempty"`
}

// Config configures a node's membership and cluster state.
type Config struct {
	// Name is the node's unique name in the cluster.
	Name string
	// BindAddr is the gossip TCP+UDP listen address ("host:port"; host may
	// be empty for all interfaces).
	BindAddr string
	// Advertise is the address others reach this node at; empty picks one.
	Advertise string
	// Join lists seeds to contact at start. Nodes that do not answer are
	// logged and skipped; the node starts alone if none answers.
	Join []string
	// Key is the cluster encryption key (16, 24 or 32 bytes), nil for none.
	// Gossip from a node with another key (or none) is dropped.
	Key []byte
	// Meta is gossiped with the node.
	Meta NodeMeta
	// Logger receives membership events. Default slog.Default().
	Logger *slog.Logger

	// ProbeInterval is how often a random peer is probed (and its RTT
	// sampled). Default 1 s (memberlist's LAN profile).
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for its ack before indirect
	// probes start. Default 500 ms.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspected node has to refute its
	// suspicion before it is declared dead: SuspicionMult × max(1,
	// log10(n)) × ProbeInterval once enough peers confirm. Default 4.
	SuspicionMult int
	// GossipInterval is how often queued state updates are gossiped.
	// Default 100 ms.
	GossipInterval time.Duration
	// PushPullInterval is how often the whole state is exchanged with a
	// random peer, which repairs anything gossip lost. Default 10 s.
	PushPullInterval time.Duration
	// RTTInterval is how often the node gossips its RTT estimates.
	// Default 2 s.
	RTTInterval time.Duration
	// TombstoneTTL is how long a deleted entry is remembered so that an
	// older copy does not come back, and a dead member listed. Default 2 min.
	TombstoneTTL time.Duration
	// DeadNodeReclaim is how long after a member was declared dead a node
	// of the same name may take its place from another address (a
	// restarted pod with a new IP). Before that, such a node is refused as
	// a name conflict. Default 5 s.
	DeadNodeReclaim time.Duration
	// RTTScale and DefaultRTT parametrise the link-cost model (LinkCost).
	// Defaults 50 ms and 50 ms.
	RTTScale   time.Duration
	DefaultRTT time.Duration

	// wrapTransport, set by tests, wraps memberlist's network transport
	// (to add delays between nodes).
	wrapTransport func(*memberlist.NetTransport) memberlist.Transport
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = time.Second
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 500 * time.Millisecond
	}
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = 4
	}
	if c.GossipInterval <= 0 {
		c.GossipInterval = 100 * time.Millisecond
	}
	if c.PushPullInterval <= 0 {
		c.PushPullInterval = 10 * time.Second
	}
	if c.RTTInterval <= 0 {
		c.RTTInterval = 2 * time.Second
	}
	if c.TombstoneTTL <= 0 {
		c.TombstoneTTL = 2 * time.Minute
	}
	if c.DeadNodeReclaim <= 0 {
		c.DeadNodeReclaim = 5 * time.Second
	}
	if c.RTTScale <= 0 {
		c.RTTScale = 50 * time.Millisecond
	}
	if c.DefaultRTT <= 0 {
		c.DefaultRTT = 50 * time.Millisecond
	}
	if c.Meta.ID == "" {
		c.Meta.ID = c.Name
	}
	return c
}

// Member is one node as this node sees it.
type Member struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	// State is "alive"; "suspect" when memberlist still counts the member
	// alive but this node's direct probes of it have gone unanswered for
	// longer than a probe round should take (see suspectAfter); "leaving"
	// between a node's announcement that it closes and its leave; "dead"
	// when memberlist declared it failed, "left" when it left gracefully.
	// Dead and left members are listed for Config.TombstoneTTL, for
	// operators, and are planned and gossiped to no more.
	State string `json:"state"`
	// Since is when the member entered a dead or left state.
	Since time.Time `json:"since,omitzero"`
	Meta  NodeMeta  `json:"meta"`
	// RTTMillis is this node's smoothed RTT estimate to the member, 0 when
	// there is no sample yet (and for the node itself).
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// TranscodeUsed is how many renditions the member produces now, and
	// TranscodeByStream how many of them for each stream.
	TranscodeUsed     int            `json:"transcode_used"`
	TranscodeByStream map[string]int `json:"transcode_streams,omitempty"`
}

// Membership is the node's view of the cluster: who is alive, their
// metadata and RTTs, and the gossiped cluster state (streams, demand,
// plans). It implements memberlist's Delegate, EventDelegate and
// PingDelegate.
type Membership struct {
	cfg   Config
	ml    *memberlist.Memberlist
	log   *slog.Logger
	queue *memberlist.TransmitLimitedQueue
	state *state

	mu    sync.Mutex
	meta  NodeMeta
	metaB []byte
	rtt   map[string]float64 // RTT estimate in ms (see NotifyPingComplete), by peer name
	// rttSamples holds each peer's last probe RTTs (ms), oldest first.
	rttSamples map[string][]float64
	alive      map[string]bool
	// nodes copies what memberlist tells the event delegate (under its
	// lock): memberlist rewrites its Node structs in place, so the ones
	// its Members() returns must not be read later.
	nodes    map[string]Member
	lastAck  map[string]time.Time // last direct probe ack (or join), by peer
	gone     map[string]Member    // dead or left members, kept for TombstoneTTL
	subs     map[chan struct{}]struct{}
	closed   bool
	stop     chan struct{}
	wg       sync.WaitGroup
	bytesIn  uint64 // gossip user payload bytes received (state messages)
	bytesOut uint64
}

// NewMembership starts gossip on cfg.BindAddr and joins cfg.Join.
func NewMembership(cfg Config) (*Membership, error) {
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("component", "gossip")
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip addr %q: %w", cfg.BindAddr, err)
	}
	port, _ := strconv.Atoi(portStr)
	meta, err := json.Marshal(cfg.Meta)
	if err != nil || len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata too large (%d bytes)", len(meta))
	}
	m := &Membership{cfg: cfg, log: log, meta: cfg.Meta, metaB: meta, rtt: map[string]float64{},
		alive: map[string]bool{cfg.Name: true}, nodes: map[string]Member{},
		lastAck: map[string]time.Time{}, gone: map[string]Member{}, rttSamples: map[string][]float64{}, subs: map[chan struct{}]struct{}{}, stop: make(chan struct{})}
	m.state = newState(cfg.Name, cfg.TombstoneTTL, m.ownerAlive)

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = host
	if host == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise %q: %w", cfg.Advertise, err)
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	} else if mc.BindAddr != "0.0.0.0" {
		mc.AdvertiseAddr = mc.BindAddr
	}
	mc.SecretKey = cfg.Key
	mc.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaim
	if cfg.wrapTransport != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: port, Logger: mc.Logger})
		if err != nil {
			return nil, fmt.Errorf("gossip on %s: %w", cfg.BindAddr, err)
		}
		mc.Transport = cfg.wrapTransport(nt)
	}
	mc.Delegate = m
	mc.Events = m
	mc.Ping = m
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int {
		if m.ml == nil {
			return 1
		}
		return m.ml.NumMembers()
	}, RetransmitMult: 3}

	ml, err := memberlist.Create(mc)
	if err != nil && strings.Contains(err.Error(), "No private IP address found") {
		// A host with only public or loopback addresses: advertise loopback
		// and say so, rather than refusing to start.
		log.Warn("no private IP to advertise for gossip; using 127.0.0.1 (set gossip.advertise)")
		mc.AdvertiseAddr = "127.0.0.1"
		ml, err = memberlist.Create(mc)
	}
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", cfg.BindAddr, err)
	}
	m.mu.Lock()
	m.ml = ml
	m.mu.Unlock()
	if len(cfg.Join) > 0 {
		n, err := ml.Join(cfg.Join)
		if err != nil {
			log.Warn("join seeds", "seeds", cfg.Join, "joined", n, "err", err)
		} else {
			log.Info("joined cluster", "seeds", cfg.Join, "contacted", n)
		}
	}
	m.wg.Add(1)
	go m.housekeeping()
	return m, nil
}

// Name is this node's name.
func (m *Membership) Name() string { return m.cfg.Name }

// Addr is the address gossip is advertised at.
func (m *Membership) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[m.cfg.Name].Addr
}

// Members lists the nodes this node knows, itself included, by name: the
// alive and suspect ones, then those dead or gone in the last
// Config.TombstoneTTL.
func (m *Membership) Members() []Member {
	now := time.Now()
	m.mu.Lock()
	out := make([]Member, 0, len(m.nodes)+len(m.gone))
	after := m.suspectAfter(len(m.nodes))
	for _, x := range m.nodes {
		x.RTTMillis = m.rtt[x.Name]
		switch {
		case x.Meta.Leaving:
			x.State = "leaving"
		case x.Name != m.cfg.Name && now.Sub(m.lastAck[x.Name]) > after:
			x.State = "suspect"
		}
		out = append(out, x)
	}
	for _, x := range m.gone {
		out = append(out, x)
	}
	m.mu.Unlock()
	for i := range out {
		if out[i].State == "alive" || out[i].State == "suspect" {
			out[i].TranscodeByStream = m.transcodeUse(out[i].Name)
			for _, n := range out[i].TranscodeByStream {
				out[i].TranscodeUsed += n
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// suspectAfter is how long a peer may go without answering one of this
// node's direct probes before it shows as suspect. memberlist probes one
// peer per ProbeInterval, in a shuffled round over the n-1 peers, so two
// probes of the same peer are at most about 2(n-1) intervals apart; one
// more interval and the probe timeout give the margin. A peer whose probes
// fail is declared dead by memberlist itself (after its suspicion timeout);
// this state shows the time in between, and a peer reached only through
// indirect probes (a broken direct path).
func (m *Membership) suspectAfter(n int) time.Duration {
	return time.Duration(2*max(n-1, 1)+1)*m.cfg.ProbeInterval + m.cfg.ProbeTimeout
}

// memberOf copies a memberlist node; called from the event delegate.
func memberOf(n *memberlist.Node) Member {
	mem := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: "alive"}
	_ = json.Unmarshal(n.Meta, &mem.Meta)
	mem.Meta = resolveMeta(mem.Meta, n.Addr.String())
	return mem
}

// Alive lists the members that are alive or suspected (not yet dead): the
// ones plans may use. A leaving member is left out, so that plans move off
// it before it goes.
func (m *Membership) Alive() []Member {
	var out []Member
	for _, x := range m.Members() {
		if x.State == "alive" || x.State == "suspect" {
			out = append(out, x)
		}
	}
	return out
}

// Member returns the named member if it is alive.
func (m *Membership) Member(name string) (Member, bool) {
	for _, x := range m.Alive() {
		if x.Name == name {
			return x, true
		}
	}
	return Member{}, false
}

// resolveMeta fills an unspecified host in the advertised addresses with
// the node's gossip host.
func resolveMeta(meta NodeMeta, host string) NodeMeta {
	fix := func(a string) string {
		if a == "" {
			return a
		}
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			return a
		}
		if h == "" || h == "0.0.0.0" || h == "::" {
			return net.JoinHostPort(host, p)
		}
		return a
	}
	meta.HTTP, meta.RTSP, meta.SRT = fix(meta.HTTP), fix(meta.RTSP), fix(meta.SRT)
	return meta
}

// Close leaves the cluster gracefully and stops gossip. Idempotent.
func (m *Membership) Close() error {
	if !m.shutdownLoops() {
		return nil
	}
	m.mu.Lock()
	m.meta.Leaving = true
	if b, err := json.Marshal(m.meta); err == nil {
		m.metaB = b
	}
	m.mu.Unlock()
	if err := m.ml.UpdateNode(500 * time.Millisecond); err != nil {
		m.log.Debug("announce leaving", "err", err)
	}
	err := m.ml.Leave(time.Second)
	if serr := m.ml.Shutdown(); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}

// Shutdown stops gossip without leaving, as a crash would: the others find
// out by failing to probe the node. Tests use it; Close is the normal way.
func (m *Membership) Shutdown() error {
	if !m.shutdownLoops() {
		return nil
	}
	return m.ml.Shutdown()
}

func (m *Membership) shutdownLoops() bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.closed = true
	close(m.stop)
	m.mu.Unlock()
	m.wg.Wait()
	return true
}

// Subscribe returns a channel that receives (coalesced) whenever
// membership, metadata or the cluster state changes, and a function that
// stops the subscription.
func (m *Membership) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		delete(m.subs, ch)
		m.mu.Unlock()
	}
}

func (m *Membership) changed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// ownerAlive tells the state whether entries of owner may be accepted.
func (m *Membership) ownerAlive(owner string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alive[owner]
}

// housekeeping gossips RTT estimates and forgets old tombstones.
func (m *Membership) housekeeping() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.RTTInterval)
	defer t.Stop()
	var last map[string]float64
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		cur := make(map[string]float64, len(m.rtt))
		for k, v := range m.rtt {
			cur[k] = math.Round(v*100) / 100 // 10 µs is plenty, and short
		}
		m.mu.Unlock()
		if rttMoved(last, cur) {
			last = cur
			m.setLocal(kindRTT, m.cfg.Name, cur, false)
		}
		m.state.gc()
		m.mu.Lock()
		for name, x := range m.gone {
			if time.Since(x.Since) > m.cfg.TombstoneTTL {
				delete(m.gone, name)
			}
		}
		m.mu.Unlock()
	}
}

// rttMoved reports a new or gone peer, or an estimate that moved by more
// than 20% and 1 ms: what changes a link's cost (RTTScale is tens of ms),
// not the jitter of a LAN, which would only cost gossip.
func rttMoved(old, cur map[string]float64) bool {
	if len(old) != len(cur) {
		return true
	}
	for k, v := range cur {
		o, ok := old[k]
		if !ok || v > o*1.2+1 || v < o*0.8-1 {
			return true
		}
	}
	return false
}

// --- memberlist.Delegate ---

// NodeMeta implements memberlist.Delegate.
func (m *Membership) NodeMeta(limit int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metaB
}

// NotifyMsg implements memberlist.Delegate: a gossiped or directly sent
// batch of state entries.
func (m *Membership) NotifyMsg(b []byte) {
	m.mu.Lock()
	m.bytesIn += uint64(len(b))
	m.mu.Unlock()
	m.merge(b)
}

// GetBroadcasts implements memberlist.Delegate.
func (m *Membership) GetBroadcasts(overhead, limit int) [][]byte {
	out := m.queue.GetBroadcasts(overhead, limit)
	n := 0
	for _, b := range out {
		n += len(b)
	}
	m.mu.Lock()
	m.bytesOut += uint64(n)
	m.mu.Unlock()
	return out
}

// LocalState implements memberlist.Delegate: the whole state for a
// push/pull exchange, so that a joining node catches up at once.
func (m *Membership) LocalState(join bool) []byte {
	b, _ := json.Marshal(m.state.all())
	m.mu.Lock()
	m.bytesOut += uint64(len(b))
	m.mu.Unlock()
	return b
}

// MergeRemoteState implements memberlist.Delegate.
func (m *Membership) MergeRemoteState(buf []byte, join bool) {
	m.mu.Lock()
	m.bytesIn += uint64(len(buf))
	m.mu.Unlock()
	m.merge(buf)
}

func (m *Membership) merge(b []byte) {
	var es []*entry
	if err := json.Unmarshal(b, &es); err != nil {
		var e entry
		if err2 := json.Unmarshal(b, &e); err2 != nil {
			m.log.Info("dropped malformed gossip message", "bytes", len(b), "err", err)
			return
		}
		es = []*entry{&e}
	}
	changed := false
	for _, e := range es {
		if e == nil || e.Kind == "" {
			continue
		}
		accepted, refute := m.state.merge(e)
		changed = changed || accepted
		if accepted && e.Kind != kindRTT && e.Kind != kindLoad {
			// Epidemic spread: what is news to us is passed on, so that an
			// update reaches every node even if its origin's few gossip
			// rounds missed some. RTT and load reports are not urgent and
			// are the bulk of the state: they travel by their origin's
			// gossip and push/pull only.
			if b, err := json.Marshal(e); err == nil && len(b) <= maxGossipEntry {
				m.queue.QueueBroadcast(&broadcastMsg{id: e.id(), msg: b})
			}
		}
		if refute != nil {
			m.broadcast(refute)
		}
	}
	if changed {
		m.changed()
	}
}

// GossipBytes returns the state-gossip payload bytes this node received and
// sent (user messages and push/pull state; memberlist's own probes and
// membership gossip are not counted).
func (m *Membership) GossipBytes() (in, out uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytesIn, m.bytesOut
}

// --- memberlist.EventDelegate ---

// NotifyJoin implements memberlist.EventDelegate.
func (m *Membership) NotifyJoin(n *memberlist.Node) {
	mem := memberOf(n)
	m.mu.Lock()
	m.alive[n.Name] = true
	m.nodes[n.Name] = mem
	m.lastAck[n.Name] = time.Now()
	delete(m.gone, n.Name)
	m.mu.Unlock()
	m.log.Info("node joined", "node", n.Name, "addr", n.Address())
	m.changed()
}

// NotifyLeave implements memberlist.EventDelegate: a node that left or was
// declared dead; its streams, demand, plans and RTTs are forgotten.
func (m *Membership) NotifyLeave(n *memberlist.Node) {
	m.mu.Lock()
	if n.Name != m.cfg.Name {
		if mem, ok := m.nodes[n.Name]; ok {
			// memberlist does not tell a leave from a death here
			// (Node.State stays alive); the metadata of a node that closed
			// says it was leaving.
			mem.State, mem.Since = "dead", time.Now()
			if mem.Meta.Leaving {
				mem.State = "left"
			}
			m.gone[n.Name] = mem
		}
		delete(m.alive, n.Name)
		delete(m.nodes, n.Name)
		delete(m.lastAck, n.Name)
	}
	delete(m.rtt, n.Name)
	delete(m.rttSamples, n.Name)
	m.mu.Unlock()
	dropped := m.state.forgetOwner(n.Name)
	m.log.Info("node gone", "node", n.Name, "addr", n.Address(), "entries_forgotten", dropped)
	m.changed()
}

// NotifyUpdate implements memberlist.EventDelegate.
func (m *Membership) NotifyUpdate(n *memberlist.Node) {
	mem := memberOf(n)
	m.mu.Lock()
	m.nodes[n.Name] = mem
	m.mu.Unlock()
	m.log.Debug("node updated", "node", n.Name)
	m.changed()
}

// --- memberlist.PingDelegate ---

// AckPayload implements memberlist.PingDelegate.
func (m *Membership) AckPayload() []byte { return nil }

// rttWindow is the number of recent probe RTTs a peer's estimate is the
// minimum of.
const rttWindow = 8

// NotifyPingComplete implements memberlist.PingDelegate: a peer's RTT
// estimate is the minimum of its last rttWindow probe RTTs. The link cost
// wants the path's length, not how busy the two nodes were: a probe
// answered late by a loaded node (or a GC pause) only adds, so the minimum
// is the path and the rest is noise, which would otherwise move plans. A
// path that gets longer for good shows after rttWindow probes of the peer;
// a shorter one at once.
func (m *Membership) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	m.addRTTSample(other.Name, float64(rtt)/float64(time.Millisecond))
}

func (m *Membership) addRTTSample(peer string, ms float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastAck[peer] = time.Now()
	w := append(m.rttSamples[peer], ms)
	if len(w) > rttWindow {
		w = w[len(w)-rttWindow:]
	}
	m.rttSamples[peer] = w
	m.rtt[peer] = slices.Min(w)
}
