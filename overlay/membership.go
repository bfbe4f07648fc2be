package overlay

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
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

	"github.com/gradient-cdn/gradient/internal/defaults"
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
	// Region is the node's region (overlay.region), "" for none: the link
	// cost between two members is multiplied by this node's price of
	// their pair of regions (MembershipConfig.RegionPrices, see LinkCost).
	Region string `json:"rg,omitempty"`
	// Key is the node's Ed25519 public key (base64, 44 characters): every
	// state entry the node owns is signed with it, and its peers take an
	// entry only if it verifies (see state.go). Set by NewMembership.
	Key string `json:"pk,omitempty"`
	// HTTPS tells that the HTTP address speaks HTTPS (http_tls_cert), and
	// RTSPS that the RTSP address speaks RTSPS (rtsp.tls_cert). A node
	// that does not send them (an older version) speaks plain HTTP and
	// RTSP.
	HTTPS bool `json:"https,omitempty"`
	RTSPS bool `json:"rtsps,omitempty"`
}

// HTTPBase is the base URL of the node's HTTP service ("https://host:port"
// for an HTTPS node, else "http://host:port"), "" when it advertises none.
func (m NodeMeta) HTTPBase() string {
	switch {
	case m.HTTP == "":
		return ""
	case m.HTTPS:
		return "https://" + m.HTTP
	}
	return "http://" + m.HTTP
}

// RTSPSource is the node's RTSP address as a relay source: "host:port"
// for plain RTSP, "rtsps://host:port" for an RTSPS node; "" when it
// advertises none.
func (m NodeMeta) RTSPSource() string {
	if m.RTSPS && m.RTSP != "" {
		return "rtsps://" + m.RTSP
	}
	return m.RTSP
}

// Sane ranges of the metadata numbers. A member advertising a value
// outside them (or metadata that does not decode, or no valid key) is
// ignored: listed by Members with the reason in Member.Ignored, left out of
// Alive and so of plans and edge choice, with a log line (once a minute).
// The bounds keep every link cost the planner builds under the
// optimizer's MaxNumber (1e9): (1e6 + 1e6) / 2 × (1 + 10 s / RTTScale)
// is 2.01e8 at the default 50 ms RTTScale.
const (
	// MaxPrice bounds NodeMeta.Price (per Mbps) and NodeMeta.TranscodeCost.
	MaxPrice = 1e6
	// MaxTranscodeSlots bounds NodeMeta.TranscodeSlots.
	MaxTranscodeSlots = 4096
	// MaxRTTMillis bounds a gossiped RTT estimate (10 s); a report beyond
	// it (or negative) is dropped, the pair then counts DefaultRTT.
	MaxRTTMillis = 10_000
)

// metaProblem names what is out of range in a member's metadata, "" when
// nothing is.
func metaProblem(meta NodeMeta) string {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 && v <= MaxPrice }
	switch {
	case !finite(meta.Price):
		return fmt.Sprintf("price %v outside 0 … %v", meta.Price, float64(MaxPrice))
	case !finite(meta.TranscodeCost):
		return fmt.Sprintf("transcode cost %v outside 0 … %v", meta.TranscodeCost, float64(MaxPrice))
	case meta.TranscodeSlots < 0 || meta.TranscodeSlots > MaxTranscodeSlots:
		return fmt.Sprintf("transcode slots %d outside 0 … %d", meta.TranscodeSlots, MaxTranscodeSlots)
	case meta.Region != "" && ValidRegion(meta.Region) != nil:
		return fmt.Sprintf("region: %v", ValidRegion(meta.Region))
	}
	return ""
}

// validKey reports whether k is a base64 Ed25519 public key.
func validKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) == ed25519.PublicKeySize
}

// MembershipConfig configures a node's membership and cluster state.
type MembershipConfig struct {
	// Name is the node's unique name in the cluster. Required.
	Name string `yaml:"name"`
	// BindAddr is the gossip TCP+UDP listen address ("host:port"; host may
	// be empty for all interfaces). Required.
	BindAddr string `yaml:"bind_addr"`
	// Advertise is the address others reach this node at. Default: picked
	// by memberlist (the bind address, or the first private IP).
	Advertise string `yaml:"advertise"`
	// Join lists seeds to contact at start. Nodes that do not answer are
	// logged and skipped; the node starts alone if none answers. Default none.
	Join []string `yaml:"join"`
	// Key is the cluster encryption key (16, 24 or 32 bytes), nil for none.
	// Gossip from a node with another key (or none) is dropped. Default none.
	Key []byte `yaml:"-"`
	// Meta is gossiped with the node. Meta.ID defaults to Name.
	Meta NodeMeta `yaml:"-"`

	// ProbeInterval is how often a random peer is probed (and its RTT
	// sampled). Default 1 s (memberlist's LAN profile).
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// ProbeTimeout is how long a probe waits for its ack before indirect
	// probes start. Default 500 ms.
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
	// SuspicionMult scales how long a suspected node has to refute its
	// suspicion before it is declared dead: SuspicionMult × max(1,
	// log10(n)) × ProbeInterval once enough peers confirm. Default 4.
	SuspicionMult int `yaml:"suspicion_mult"`
	// GossipInterval is how often queued state updates are gossiped.
	// Default 100 ms.
	GossipInterval time.Duration `yaml:"gossip_interval"`
	// PushPullInterval is how often the whole state is exchanged with a
	// random peer, which repairs anything gossip lost. Default 10 s.
	PushPullInterval time.Duration `yaml:"push_pull_interval"`
	// RTTInterval is how often the node gossips its RTT estimates.
	// Default 2 s.
	RTTInterval time.Duration `yaml:"rtt_interval"`
	// TombstoneTTL is how long a deleted entry is remembered so that an
	// older copy does not come back, and a dead member listed. Default 2 min.
	TombstoneTTL time.Duration `yaml:"tombstone_ttl"`
	// DeadNodeReclaim is how long after a member was declared dead a node
	// of the same name may take its place from another address (a
	// restarted pod with a new IP). Before that, such a node is refused as
	// a name conflict. Default 5 s.
	DeadNodeReclaim time.Duration `yaml:"dead_node_reclaim"`
	// RTTScale and DefaultRTT parametrise the link-cost model (LinkCost).
	// Defaults 50 ms and 50 ms.
	RTTScale   time.Duration `yaml:"rtt_scale"`
	DefaultRTT time.Duration `yaml:"default_rtt"`
	// RegionPrices multiplies the link cost between members by their pair
	// of regions (NodeMeta.Region); a pair not listed, or a member with no
	// region, costs 1×. This node's own table: nodes do not gossip it.
	// Default none.
	RegionPrices RegionPrices `yaml:"-"`
	// MaxClockSkew is how far ahead of this node's clock a gossiped
	// entry's version (a clock in ns) may be; a later one is refused, for
	// it would win over every update of its key until then. Default 1 min.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// MaxEntriesPerOwner caps the keys one member may hold of each live
	// kind (streams it roots, their plans, its demand per stream); a new
	// key beyond it is refused. Default 10000.
	MaxEntriesPerOwner int `yaml:"max_entries_per_owner"`
	// MaxVoDEntriesPerOwner caps the VoD titles, and separately the
	// removal records, of one member. Default 100000.
	MaxVoDEntriesPerOwner int `yaml:"max_vod_entries_per_owner"`
	// SigningKey signs the node's state entries (Meta.Key is its public
	// half). Default: a new key for each NewMembership; a key kept across
	// restarts lets peers and late joiners check the node's VoD entries
	// of earlier lives.
	SigningKey ed25519.PrivateKey `yaml:"-"`

	// wrapTransport, set by tests, wraps memberlist's network transport
	// (to add delays between nodes).
	wrapTransport func(*memberlist.NetTransport) memberlist.Transport
}

// DefaultMembershipConfig returns the defaults of every timer and of the
// link-cost model; Name and BindAddr have none.
func DefaultMembershipConfig() MembershipConfig {
	return MembershipConfig{
		ProbeInterval:    time.Second,
		ProbeTimeout:     500 * time.Millisecond,
		SuspicionMult:    4,
		GossipInterval:   100 * time.Millisecond,
		PushPullInterval: 10 * time.Second,
		RTTInterval:      2 * time.Second,
		TombstoneTTL:     2 * time.Minute,
		DeadNodeReclaim:  5 * time.Second,
		RTTScale:         50 * time.Millisecond,
		DefaultRTT:       50 * time.Millisecond,
		MaxClockSkew:     defaultMaxClockSkew,

		MaxEntriesPerOwner:    defaultMaxEntriesPerOwner,
		MaxVoDEntriesPerOwner: defaultMaxVoDEntriesPerOwner,
	}
}

// withDefaults fills the zero fields of a hand-built config from
// DefaultMembershipConfig.
func (c MembershipConfig) withDefaults() MembershipConfig {
	defaults.Fill(&c, DefaultMembershipConfig())
	if c.Meta.ID == "" {
		c.Meta.ID = c.Name
	}
	return c
}

// Validate checks the config and names the bad field by its YAML key.
func (c MembershipConfig) Validate() error {
	if c.Name == "" {
		return errors.New("name: must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("bind_addr: %q is not host:port: %w", c.BindAddr, err)
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("advertise: %q is not host:port: %w", c.Advertise, err)
		}
	}
	switch len(c.Key) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("key: %d bytes, must be 16, 24 or 32", len(c.Key))
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return errors.New("probe_timeout: must be below probe_interval")
	}
	if c.MaxClockSkew <= 0 {
		return errors.New("max_clock_skew: must be positive")
	}
	if c.MaxEntriesPerOwner <= 0 || c.MaxVoDEntriesPerOwner <= 0 {
		return errors.New("max_entries_per_owner, max_vod_entries_per_owner: must be positive")
	}
	if c.SigningKey != nil && len(c.SigningKey) != ed25519.PrivateKeySize {
		return fmt.Errorf("signing key: %d bytes, want an Ed25519 private key (%d)", len(c.SigningKey), ed25519.PrivateKeySize)
	}
	if err := c.RegionPrices.Validate(); err != nil {
		return err
	}
	// The peers would ignore the node (metaProblem): say so at start.
	if p := metaProblem(c.Meta); p != "" {
		return fmt.Errorf("metadata (price_per_mbps, transcode_cost, transcode slots, region): %s", p)
	}
	return nil
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
	// Dead and left members are listed for MembershipConfig.TombstoneTTL, for
	// operators, and are planned and gossiped to no more.
	State string `json:"state"`
	// Since is when the member entered a dead or left state.
	Since time.Time `json:"since,omitzero"`
	Meta  NodeMeta  `json:"meta"`
	// RTTMillis is this node's RTT estimate to the member: the minimum of
	// its last 8 probe RTTs (see pingDelegate), 0 when there is no sample
	// yet (and for the node itself).
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// TranscodeUsed is how many renditions the member produces now, and
	// TranscodeByStream how many of them for each stream.
	TranscodeUsed     int            `json:"transcode_used"`
	TranscodeByStream map[string]int `json:"transcode_streams,omitempty"`
	// Ignored says why the member is left out of Alive (and so of plans):
	// its metadata is out of range (metaProblem), does not decode, or has
	// no valid signing key. "" for a member in good standing.
	Ignored string `json:"ignored,omitempty"`
}

// Membership is the node's view of the cluster: who is alive, their
// metadata and RTTs, and the gossiped cluster state (streams, demand,
// plans). memberlist's callbacks land on unexported delegates
// (delegate.go), so its exported API is its own.
//
// NewMembership builds it without I/O; Start binds gossip and joins the
// seeds; Close leaves. Local state (SetStream, SetDemand …) may be set
// before Start: it is gossiped once the node is in the cluster.
type Membership struct {
	cfg   MembershipConfig
	mc    *memberlist.Config
	log   *slog.Logger
	queue *memberlist.TransmitLimitedQueue
	state *state

	mu      sync.Mutex
	ml      *memberlist.Memberlist // set by Start; read it through list()
	started bool
	meta    NodeMeta
	metaB   []byte
	rtt     map[string]float64 // RTT estimate in ms (see pingDelegate), by peer name
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
	// knownKeys holds, by owner, the keys (base64) this node saw the owner
	// announce or verified its entries with, newest last (at most
	// maxKnownKeys): a dead or restarted owner's VoD entries are checked
	// against them (verifyEntry), and a change back to one of them tells a
	// forged key (dropReplacedKeys).
	knownKeys map[string][]string
	// seenKey is each member's key at the last housekeeping round (or
	// first verification): when it changes, what the old key signed is
	// dropped (dropReplacedKeys).
	seenKey  map[string]string
	refusals refusals
}

// NewMembership checks cfg and builds the membership; Start joins the
// cluster. The zero fields of cfg take DefaultMembershipConfig's values.
func NewMembership(cfg MembershipConfig, log *slog.Logger) (*Membership, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "gossip")
	host, portStr, _ := net.SplitHostPort(cfg.BindAddr)
	port, _ := strconv.Atoi(portStr)
	priv := cfg.SigningKey
	if priv == nil {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("gossip signing key: %w", err)
		}
		priv = k
	}
	pub := base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	cfg.Meta.Key = pub
	meta, err := json.Marshal(cfg.Meta)
	if err != nil || len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata too large (%d bytes)", len(meta))
	}
	m := &Membership{cfg: cfg, log: log, meta: cfg.Meta, metaB: meta, rtt: map[string]float64{},
		alive: map[string]bool{cfg.Name: true}, nodes: map[string]Member{},
		lastAck: map[string]time.Time{}, gone: map[string]Member{}, rttSamples: map[string][]float64{}, subs: map[chan struct{}]struct{}{}, stop: make(chan struct{}),
		knownKeys: map[string][]string{}, seenKey: map[string]string{}}
	m.state = newState(cfg.Name, cfg.TombstoneTTL, m.ownerAlive)
	m.state.skew, m.state.maxPerOwner, m.state.maxVoDPerOwner = cfg.MaxClockSkew, cfg.MaxEntriesPerOwner, cfg.MaxVoDEntriesPerOwner
	m.state.priv, m.state.pub = priv, pub
	m.state.verify = m.verifyEntry
	m.state.refused = func(e *entry, why string) {
		m.refuse("gossip entry refused", e.Owner+"|"+why, "owner", e.Owner, "kind", e.Kind, "key", e.Key, "why", why)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = host
	if host == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		ah, ap, _ := net.SplitHostPort(cfg.Advertise)
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
	mc.Delegate = &delegate{m}
	mc.Events = &eventDelegate{m}
	mc.Ping = &pingDelegate{m}
	m.mc = mc
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: m.numNodes, RetransmitMult: 3}
	return m, nil
}

// numNodes is the cluster size the gossip queue scales retransmits by.
// memberlist calls it from its own goroutines, possibly while Start sets
// m.ml; the pointer is read under m.mu, and NumMembers (which takes
// memberlist's node lock, held by memberlist while it calls the event
// delegate, which takes m.mu) is called after m.mu is released.
func (m *Membership) numNodes() int {
	ml := m.list()
	if ml == nil {
		return 1
	}
	return ml.NumMembers()
}

// list returns the memberlist, nil before Start.
func (m *Membership) list() *memberlist.Memberlist {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ml
}

// Start binds gossip on the configured address and joins the seeds (a
// seed that does not answer is logged and skipped: the node then starts
// alone and others join it). It blocks while the seeds are contacted.
func (m *Membership) Start() error {
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return errors.New("gossip: started twice or after Close")
	}
	m.started = true
	m.mu.Unlock()
	mc := *m.mc
	if m.cfg.wrapTransport != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
		if err != nil {
			return fmt.Errorf("gossip on %s: %w", m.cfg.BindAddr, err)
		}
		mc.Transport = m.cfg.wrapTransport(nt)
	}
	ml, err := memberlist.Create(&mc)
	if err != nil && strings.Contains(err.Error(), "No private IP address found") {
		// A host with only public or loopback addresses: advertise loopback
		// and say so, rather than refusing to start.
		m.log.Warn("no private IP to advertise for gossip; using 127.0.0.1 (set gossip.advertise)")
		mc.AdvertiseAddr = "127.0.0.1"
		ml, err = memberlist.Create(&mc)
	}
	if err != nil {
		return fmt.Errorf("gossip on %s: %w", m.cfg.BindAddr, err)
	}
	m.mu.Lock()
	m.ml = ml
	m.wg.Add(1)
	m.mu.Unlock()
	go m.housekeeping()
	if len(m.cfg.Join) > 0 {
		// The join's push/pull brings back our persistent entries of
		// earlier lives (see state.merge); memberlist runs it within Join.
		m.state.mu.Lock()
		m.state.joining = true
		m.state.mu.Unlock()
		n, err := ml.Join(m.cfg.Join)
		m.state.mu.Lock()
		m.state.joining = false
		m.state.mu.Unlock()
		if err != nil {
			m.log.Warn("join seeds", "seeds", m.cfg.Join, "joined", n, "err", err)
		} else {
			m.log.Info("joined cluster", "seeds", m.cfg.Join, "contacted", n)
		}
	}
	return nil
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
// MembershipConfig.TombstoneTTL.
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
	for _, x := range out {
		if x.Ignored != "" && x.Name != m.cfg.Name && (x.State == "alive" || x.State == "suspect") {
			m.refuse("member ignored: left out of plans", x.Name+"|"+x.Ignored, "node", x.Name, "why", x.Ignored)
		}
	}
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
	err := json.Unmarshal(n.Meta, &mem.Meta)
	mem.Meta = resolveMeta(mem.Meta, n.Addr.String())
	switch {
	case err != nil:
		mem.Ignored = "metadata does not decode: " + err.Error()
	case !validKey(mem.Meta.Key):
		mem.Ignored = "no valid signing key in metadata"
	default:
		mem.Ignored = metaProblem(mem.Meta)
	}
	return mem
}

// Alive lists the members that are alive or suspected (not yet dead): the
// ones plans may use. A leaving member is left out, so that plans move off
// it before it goes, and so is an ignored one (Member.Ignored), so that
// one member's bad metadata cannot make planning fail for everyone.
func (m *Membership) Alive() []Member {
	var out []Member
	for _, x := range m.Members() {
		if x.Ignored != "" && x.Name != m.cfg.Name {
			continue
		}
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

// Close leaves the cluster gracefully and stops gossip. Safe without
// Start and more than once.
func (m *Membership) Close() error {
	if !m.shutdownLoops() {
		return nil
	}
	ml := m.list()
	if ml == nil {
		return nil
	}
	m.mu.Lock()
	m.meta.Leaving = true
	if b, err := json.Marshal(m.meta); err == nil {
		m.metaB = b
	}
	m.mu.Unlock()
	if err := ml.UpdateNode(500 * time.Millisecond); err != nil {
		m.log.Debug("announce leaving", "err", err)
	}
	err := ml.Leave(time.Second)
	if serr := ml.Shutdown(); serr != nil {
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
	if ml := m.list(); ml != nil {
		return ml.Shutdown()
	}
	return nil
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
		m.dropReplacedKeys()
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

// dropReplacedKeys drops the live entries of members whose key changed
// since the last round (see state.forgetSigner): a fast restart (a new key
// before the old life was declared dead), or forged metadata refuted by
// the node it named.
//
// A change back to a key the member had before tells the second case: a
// node draws a new key in each life and never returns to an old one, so
// the key in between was another member's forgery (memberlist gossips
// metadata, and a keyed member can gossip an alive message for another
// node, which that node refutes as soon as it hears it). Then everything
// that key signed is dropped, the VoD entries too, and the key is
// forgotten as the member's.
func (m *Membership) dropReplacedKeys() {
	type change struct {
		name, old, key string
		forged         bool
	}
	var changes []change
	m.mu.Lock()
	for name, x := range m.nodes {
		if old := m.seenKey[name]; old != "" && old != x.Meta.Key {
			forged := slices.Contains(m.knownKeys[name], x.Meta.Key)
			if forged {
				m.knownKeys[name] = slices.DeleteFunc(m.knownKeys[name], func(k string) bool { return k == old })
			}
			changes = append(changes, change{name, old, x.Meta.Key, forged})
		}
		m.seenKey[name] = x.Meta.Key
		if name != m.cfg.Name && validKey(x.Meta.Key) {
			m.rememberKeyLocked(name, x.Meta.Key)
		}
	}
	for name := range m.seenKey {
		if _, ok := m.nodes[name]; !ok {
			delete(m.seenKey, name)
		}
	}
	m.mu.Unlock()
	for _, c := range changes {
		var n int
		if c.forged {
			n = m.state.forgetKey(c.name, c.old)
			m.log.Warn("member's signing key changed back: the one in between was forged; all it signed dropped", "node", c.name, "dropped", n)
		} else {
			n = m.state.forgetSigner(c.name, c.key)
			m.log.Warn("member's signing key changed; its entries signed with the old one dropped", "node", c.name, "dropped", n)
		}
		if n > 0 {
			m.changed()
		}
	}
}
