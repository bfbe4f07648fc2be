package overlay

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/gradient-cdn/gradient/optimizer"
)

// The cluster state is a set of entries, each owned by one node (the only
// one that changes it) and versioned: a copy with a higher version (ties:
// the owner's name decides) replaces a lower one everywhere. Versions are
// hybrid clocks (max(wall clock in ns, last version + 1)), so a restarted
// node's new entries win over copies of its old ones. A deletion is a
// tombstone entry kept for MembershipConfig.TombstoneTTL. All entries of a node that
// leaves or dies are dropped, and entries of a node not known alive are not
// accepted, so a dead node's state does not come back through a peer that
// had not heard of the death yet. The VoD kinds (vod.go) are the exception:
// they are persistent (see persistentKind).
//
// The cluster is closed: a member speaks only for itself (serf's rule),
// even though every member holds the cluster key. Each node signs the
// entries it owns with its own Ed25519 key, whose public half it announces
// in its memberlist metadata (NodeMeta.Key); an entry is taken only when it
// verifies against its owner's key (verifyEntry), wherever it was relayed
// from, so a member cannot forge another's entries. Keys that name a node
// (rtt, load: the node; demand: node "|" stream) must name the owner.
// Versions may not run more than MembershipConfig.MaxClockSkew ahead of the
// local clock (a far-future version would win over every later update), and
// each owner may hold at most MembershipConfig.MaxEntriesPerOwner keys of a
// kind (MaxVoDEntriesPerOwner for the VoD kinds), so that no member can fill
// the others' memory. Every refusal is logged, rate-limited (refusals).
const (
	kindStream = "stream" // key: stream name; owner: the root
	kindDemand = "demand" // key: node "|" stream; owner: the edge node
	kindPlan   = "plan"   // key: stream name; owner: the root
	kindRTT    = "rtt"    // key: node; owner: that node
	kindLoad   = "load"   // key: node; owner: that node
)

// entry is one versioned piece of cluster state.
type entry struct {
	Kind    string          `json:"k"`
	Key     string          `json:"key"`
	Owner   string          `json:"o"`
	Version uint64          `json:"v"`
	Deleted bool            `json:"d,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	// Sig is the owner's Ed25519 signature of the entry (signedBytes).
	Sig []byte `json:"sig,omitempty"`
	// PK is the signer's public key (base64), carried by the persistent
	// kinds only: they outlive their owner, and a node that joins after
	// the owner died has no other way to check them (verifyEntry).
	PK string `json:"pk,omitempty"`

	deletedAt time.Time
	// stranger marks an entry taken on the key it carries alone (its owner
	// unknown here, see verifyEntry).
	stranger bool
	// signer is the key (base64) the entry was verified with here, or
	// this node's key for its own entries; "" when no verifier is set.
	signer string
}

// signedBytes is what an entry's signature covers: every field that
// carries meaning, length-prefixed so that no two entries share an
// encoding. A tombstone's data does not count (it is dropped on store).
func (e *entry) signedBytes() []byte {
	b := make([]byte, 0, 64+len(e.Key)+len(e.Data))
	b = append(b, "gradient-entry-v1"...)
	for _, f := range []string{e.Kind, e.Key, e.Owner} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, e.Version)
	if e.Deleted {
		return append(b, 1)
	}
	b = append(b, 0)
	return append(b, e.Data...)
}

// signWith signs e with priv, whose public half is pub (base64).
func (e *entry) signWith(priv ed25519.PrivateKey, pub string) {
	if priv == nil {
		return
	}
	e.PK = ""
	if persistentKind(e.Kind) {
		e.PK = pub
	}
	e.Sig = ed25519.Sign(priv, e.signedBytes())
	e.signer = pub
}

// verifiedBy reports whether e carries a valid signature by pub (base64).
func (e *entry) verifiedBy(pub string) bool {
	k, err := base64.StdEncoding.DecodeString(pub)
	if err != nil || len(k) != ed25519.PublicKeySize || len(e.Sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(k), e.signedBytes(), e.Sig)
}

// keyNamesOwner reports whether an entry's key, for the kinds whose key
// names a node, names the entry's owner: otherwise a member could publish,
// under its own name and key, the entry that stands for another node (the
// id is kind and key, so the newer version would replace the other's).
func (e *entry) keyNamesOwner() bool {
	switch e.Kind {
	case kindRTT, kindLoad:
		return e.Key == e.Owner
	case kindDemand:
		return strings.HasPrefix(e.Key, e.Owner+"|")
	}
	return true
}

// Default bounds of the gossiped state (MembershipConfig).
const (
	// defaultMaxClockSkew bounds how far ahead of the local clock an
	// entry's version may be; clocks of a cluster agree within seconds.
	defaultMaxClockSkew = time.Minute
	// defaultMaxEntriesPerOwner caps an owner's keys of a live kind:
	// streams rooted at a node, plans, the demand of an edge (a stream per
	// key). Ten thousand is far beyond a node's streams.
	defaultMaxEntriesPerOwner = 10_000
	// defaultMaxVoDEntriesPerOwner caps an owner's titles and removal
	// records: a library is larger than a node's live streams, and
	// removal records are never collected.
	defaultMaxVoDEntriesPerOwner = 100_000
)

// errSigner is returned by a verifier that refuses an entry's signature.
var errSigner = errors.New("not signed by its owner")

func (e *entry) id() string { return e.Kind + "\x00" + e.Key }

func (e *entry) newer(o *entry) bool {
	if e.Version != o.Version {
		return e.Version > o.Version
	}
	return e.Owner > o.Owner
}

type state struct {
	self  string
	ttl   time.Duration
	alive func(owner string) bool
	// skew, maxPerOwner and maxVoDPerOwner are the bounds of
	// MembershipConfig (MaxClockSkew, MaxEntriesPerOwner, MaxVoDEntriesPerOwner).
	skew           time.Duration
	maxPerOwner    int
	maxVoDPerOwner int
	// priv and pub (base64) sign this node's entries; nil: unsigned (tests
	// of the state alone).
	priv ed25519.PrivateKey
	pub  string
	// verify checks a remote entry's signature and returns the key it was
	// verified with, and whether that key is only the one the entry
	// carries, its owner being unknown here (verifyEntry); nil: every
	// entry passes. It is called under mu, after the cheap checks, so that
	// only news costs a check.
	verify func(e *entry) (signer string, stranger bool, err error)
	// refused is told of every refused entry and why (logged,
	// rate-limited); nil: not told. Called under mu.
	refused func(e *entry, why string)
	// joining is set while Start joins the seeds: the only time this
	// node takes back persistent entries of its own signed with a key of
	// an earlier life (see merge).
	joining bool

	mu      sync.Mutex
	entries map[string]*entry
	// owned counts the entries of each owner and kind (ownedKey), for the
	// per-owner caps.
	owned map[string]int
	// strangers counts the entries taken on the key they carry (entry.
	// stranger): owner names are free to invent, so these share one cap,
	// maxVoDPerOwner, whatever owner they name.
	strangers int
	clock     uint64
	// vodGen counts changes of the VoD kinds (VoDGeneration).
	vodGen uint64
}

func newState(self string, ttl time.Duration, alive func(string) bool) *state {
	return &state{self: self, ttl: ttl, alive: alive, entries: map[string]*entry{}, owned: map[string]int{},
		skew: defaultMaxClockSkew, maxPerOwner: defaultMaxEntriesPerOwner, maxVoDPerOwner: defaultMaxVoDEntriesPerOwner}
}

func ownedKey(owner, kind string) string { return owner + "\x00" + kind }

// putLocked stores e, replacing the entry of the same id, and keeps the
// per-owner counts.
func (s *state) putLocked(e *entry) {
	s.delLocked(e.id())
	s.entries[e.id()] = e
	s.owned[ownedKey(e.Owner, e.Kind)]++
	if e.stranger {
		s.strangers++
	}
}

// delLocked drops the entry of id, if any, and keeps the counts.
func (s *state) delLocked(id string) {
	if old, ok := s.entries[id]; ok {
		k := ownedKey(old.Owner, old.Kind)
		if s.owned[k]--; s.owned[k] <= 0 {
			delete(s.owned, k)
		}
		if old.stranger {
			s.strangers--
		}
		delete(s.entries, id)
	}
}

// capOf is how many keys of kind one owner may hold here.
func (s *state) capOf(kind string) int {
	if persistentKind(kind) {
		return s.maxVoDPerOwner
	}
	return s.maxPerOwner
}

func (s *state) refuseLocked(e *entry, why string) {
	if s.refused != nil {
		s.refused(e, why)
	}
}

// tick returns the next version.
func (s *state) tickLocked() uint64 {
	now := uint64(time.Now().UnixNano())
	if now <= s.clock {
		now = s.clock + 1
	}
	s.clock = now
	return now
}

// set stores a local entry and returns it, or nil when nothing changed.
func (s *state) set(kind, key string, v any, del bool) *entry {
	var data json.RawMessage
	if !del {
		b, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		data = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &entry{Kind: kind, Key: key, Owner: s.self, Deleted: del, Data: data}
	if s.removedLocked(e) {
		return nil
	}
	// An unchanged entry is not published again, unless it is signed with
	// another key than ours (taken back from an earlier life, see merge):
	// re-announced, it is signed anew, and every node can check it.
	if old, ok := s.entries[e.id()]; ok && old.Owner == s.self && old.Deleted == del && string(old.Data) == string(data) && old.signer == s.pub {
		return nil
	} else if !ok && del {
		return nil
	}
	e.Version = s.tickLocked()
	if del {
		e.deletedAt = time.Now()
	}
	e.signWith(s.priv, s.pub)
	s.putLocked(e)
	s.acceptedLocked(e)
	return e
}

// merge applies a remote entry. It returns whether the state changed, and
// a tombstone to broadcast when a peer holds a stale entry owned by us.
//
// An entry is refused (and the refusal reported to s.refused) when its key
// names another node than its owner, when its version is more than s.skew
// ahead of the local clock, when it is a new key of an owner that holds
// its kind's cap already, and when it does not verify against its owner's
// key (s.verify). The clock follows only entries that passed the bound.
func (s *state) merge(e *entry) (bool, *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !e.keyNamesOwner() {
		s.refuseLocked(e, "key names another node than the owner")
		return false, nil
	}
	if limit := uint64(time.Now().Add(s.skew).UnixNano()); e.Version > limit {
		s.refuseLocked(e, fmt.Sprintf("version %v ahead of the local clock (max_clock_skew %v)", time.Duration(e.Version-limit)+s.skew, s.skew))
		return false, nil
	}
	if e.Version > s.clock {
		s.clock = e.Version
	}
	if s.removedLocked(e) {
		return false, nil
	}
	old, ok := s.entries[e.id()]
	if e.Owner == s.self {
		// We are the authority on our entries: a copy we do not hold (or
		// hold newer) comes from an earlier life or a lost update. A
		// persistent entry of ours is taken back instead: it outlives
		// our restarts (a removal we made must keep winning), and the
		// VoD layer re-announces what it still has (set re-signs it
		// then). One signed with our key is ours. One signed with
		// another (an earlier life's, unknown to us) is taken only from
		// the push/pull of our join, as our seed holds it, and not
		// vouched for (not re-signed): at any other time it would be a
		// member forging entries in our name for us to adopt.
		if !ok && persistentKind(e.Kind) {
			c := *e
			if c.Deleted {
				c.deletedAt = time.Now()
				c.Data = nil
			}
			if s.verify != nil {
				signer, _, err := s.verify(e)
				if err != nil {
					if !s.joining || e.PK == "" || !e.verifiedBy(e.PK) {
						s.refuseLocked(e, "an entry in our name not signed by our key")
						return false, nil
					}
					signer = e.PK
				}
				c.signer = signer
			}
			s.putLocked(&c)
			s.acceptedLocked(&c)
			return true, nil
		}
		if !ok && !e.Deleted {
			t := &entry{Kind: e.Kind, Key: e.Key, Owner: s.self, Deleted: true, Version: s.tickLocked(), deletedAt: time.Now()}
			t.signWith(s.priv, s.pub)
			s.putLocked(t)
			return false, t
		}
		return false, nil
	}
	if ok && !e.newer(old) {
		return false, nil
	}
	if !s.alive(e.Owner) && !persistentKind(e.Kind) {
		return false, nil
	}
	if (!ok || old.Owner != e.Owner) && s.owned[ownedKey(e.Owner, e.Kind)] >= s.capOf(e.Kind) {
		s.refuseLocked(e, fmt.Sprintf("owner holds %d %s entries, the cap", s.capOf(e.Kind), e.Kind))
		return false, nil
	}
	c := *e
	if s.verify != nil {
		signer, stranger, err := s.verify(e)
		if err != nil {
			s.refuseLocked(e, err.Error())
			return false, nil
		}
		if stranger && (!ok || !old.stranger) && s.strangers >= s.maxVoDPerOwner {
			s.refuseLocked(e, fmt.Sprintf("%d entries of owners unknown here held, the cap", s.maxVoDPerOwner))
			return false, nil
		}
		c.signer, c.stranger = signer, stranger
	}
	if c.Deleted {
		c.deletedAt = time.Now()
		c.Data = nil
	}
	s.putLocked(&c)
	s.acceptedLocked(&c)
	return true, nil
}

// forgetOwner drops every entry owner made; it returns how many.
func (s *state) forgetOwner(owner string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.entries {
		if e.Owner == owner && owner != s.self && !persistentKind(e.Kind) {
			s.delLocked(k)
			n++
		}
	}
	return n
}

// forgetSigner drops the live (not persistent) entries of owner that were
// verified with another key than key: owner's key changed (it restarted,
// or its metadata was forged and then refuted), and what the old key
// signed is from another life or forged. It returns how many.
func (s *state) forgetSigner(owner, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.entries {
		if e.Owner == owner && owner != s.self && !persistentKind(e.Kind) && e.signer != "" && e.signer != key {
			s.delLocked(k)
			n++
		}
	}
	return n
}

// forgetKey drops every entry of owner verified with key, the persistent
// ones too: key was forged (see Membership.dropReplacedKeys). It returns
// how many.
func (s *state) forgetKey(owner, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.entries {
		if e.Owner == owner && owner != s.self && e.signer == key {
			s.delLocked(k)
			n++
		}
	}
	if n > 0 {
		s.vodGen++
	}
	return n
}

// gc forgets old tombstones.
func (s *state) gc() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.entries {
		if e.Deleted && time.Since(e.deletedAt) > s.ttl {
			s.delLocked(k)
		}
	}
}

// all returns every entry, tombstones included, for push/pull.
func (s *state) all() []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	return out
}

// live returns the live entries of a kind, sorted by key.
func (s *state) live(kind string) []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*entry
	for _, e := range s.entries {
		if e.Kind == kind && !e.Deleted {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (s *state) get(kind, key string) (*entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[kind+"\x00"+key]
	if !ok || e.Deleted {
		return nil, false
	}
	return e, true
}

// broadcastMsg is one entry queued for gossip; a newer entry with the same
// id replaces it in the queue.
type broadcastMsg struct {
	id  string
	msg []byte
}

func (b *broadcastMsg) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcastMsg)
	return ok && ob.id == b.id
}
func (b *broadcastMsg) Message() []byte { return b.msg }
func (b *broadcastMsg) Finished()       {}

// maxGossipEntry is the largest entry sent by UDP gossip; a larger one
// (a big plan) is sent to every member over TCP instead. memberlist's UDP
// packets are 1400 bytes; encryption (29) and its compound and ping
// headers (under 100) leave more than 1250 for a gossiped message. The
// owner's signature (and, for VoD entries, key) take about 150 bytes of an
// entry: a typical VoD title entry (about 800 bytes of data) encodes to
// about 1040.
const maxGossipEntry = 1200

// broadcast spreads a local entry.
func (m *Membership) broadcast(e *entry) {
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	if len(b) <= maxGossipEntry {
		m.queue.QueueBroadcast(&broadcastMsg{id: e.id(), msg: b})
		if e.Kind != kindPlan && e.Kind != kindVoDRm {
			return
		}
		// A plan is also sent to every member over TCP: the nodes act on
		// it, so it must not wait for push/pull if a UDP packet is lost.
		// So is a VoD removal (rare; the origin drops chunks on it).
	}
	m.mu.Lock()
	closed := m.closed
	if !closed {
		m.wg.Add(1)
	}
	m.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer m.wg.Done()
		ml := m.list()
		for _, x := range m.Alive() {
			if ml == nil || x.Name == m.cfg.Name {
				continue
			}
			host, port, err := net.SplitHostPort(x.Addr)
			if err != nil {
				continue
			}
			p, _ := strconv.Atoi(port)
			n := &memberlist.Node{Name: x.Name, Addr: net.ParseIP(host), Port: uint16(p)}
			if err := ml.SendReliable(n, b); err != nil {
				m.log.Debug("send state entry", "to", n.Name, "kind", e.Kind, "err", err)
			}
			m.mu.Lock()
			m.bytesOut += uint64(len(b))
			m.mu.Unlock()
		}
	}()
}

// setLocal stores and gossips a local entry.
func (m *Membership) setLocal(kind, key string, v any, del bool) {
	if e := m.state.set(kind, key, v, del); e != nil {
		m.broadcast(e)
		m.changed()
	}
}

// StreamInfo is a live stream as the cluster knows it.
type StreamInfo struct {
	// Name is the stream name ("live/cam1").
	Name string `json:"name"`
	// Root is the node the stream is published into.
	Root string `json:"root"`
	// Ladder is the rendition ladder, best first; Ladder[0] is the source
	// rendition, which is the bare stream path.
	Ladder []optimizer.Level `json:"ladder"`
}

// Demand is one edge node's viewers of one stream.
type Demand struct {
	Node   string `json:"node"`
	Stream string `json:"stream"`
	// Viewers counts viewers by device class.
	Viewers map[string]int `json:"viewers"`
}

// SetStream registers (or updates) a stream rooted at this node.
func (m *Membership) SetStream(s StreamInfo) {
	s.Root = m.cfg.Name
	m.setLocal(kindStream, s.Name, s, false)
}

// RemoveStream withdraws a stream rooted at this node, and its plan.
func (m *Membership) RemoveStream(name string) {
	m.setLocal(kindStream, name, nil, true)
	m.setLocal(kindPlan, name, nil, true)
}

// Streams lists the live streams of the cluster.
func (m *Membership) Streams() []StreamInfo {
	var out []StreamInfo
	for _, e := range m.state.live(kindStream) {
		var s StreamInfo
		if json.Unmarshal(e.Data, &s) == nil {
			s.Root = e.Owner
			out = append(out, s)
		}
	}
	return out
}

// Stream returns the named live stream.
func (m *Membership) Stream(name string) (StreamInfo, bool) {
	e, ok := m.state.get(kindStream, name)
	if !ok {
		return StreamInfo{}, false
	}
	var s StreamInfo
	if json.Unmarshal(e.Data, &s) != nil {
		return s, false
	}
	s.Root = e.Owner
	return s, true
}

// SetDemand reports this node's viewers of stream by device class; an
// empty map (or all zero) withdraws the demand.
func (m *Membership) SetDemand(stream string, viewers map[string]int) {
	v := map[string]int{}
	for c, n := range viewers {
		if n > 0 {
			v[c] = n
		}
	}
	key := m.cfg.Name + "|" + stream
	if len(v) == 0 {
		m.setLocal(kindDemand, key, nil, true)
		return
	}
	m.setLocal(kindDemand, key, Demand{Node: m.cfg.Name, Stream: stream, Viewers: v}, false)
}

// Demands lists every node's demand for stream ("" for all streams).
func (m *Membership) Demands(stream string) []Demand {
	var out []Demand
	for _, e := range m.state.live(kindDemand) {
		var d Demand
		if json.Unmarshal(e.Data, &d) != nil {
			continue
		}
		d.Node = e.Owner
		if stream == "" || d.Stream == stream {
			out = append(out, d)
		}
	}
	return out
}

// PublishPlan stores a plan made by this node (the stream's root) and
// gossips it; it sets p.Version and p.Root.
func (m *Membership) PublishPlan(p *Plan) {
	m.state.mu.Lock()
	p.Version = m.state.tickLocked() // the entry's version will be higher still
	m.state.mu.Unlock()
	p.Root = m.cfg.Name
	m.setLocal(kindPlan, p.Stream, p, false)
}

// Plan returns the newest plan of stream.
func (m *Membership) Plan(stream string) (*Plan, bool) {
	e, ok := m.state.get(kindPlan, stream)
	if !ok {
		return nil, false
	}
	var p Plan
	if json.Unmarshal(e.Data, &p) != nil {
		return nil, false
	}
	return &p, true
}

// Plans lists the newest plan of every stream.
func (m *Membership) Plans() []*Plan {
	var out []*Plan
	for _, e := range m.state.live(kindPlan) {
		var p Plan
		if json.Unmarshal(e.Data, &p) == nil {
			out = append(out, &p)
		}
	}
	return out
}

// RTTs returns every node's gossiped RTT estimates, in ms: rtt[a][b] is
// a's estimate of its RTT to b. This node's own are current.
func (m *Membership) RTTs() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, e := range m.state.live(kindRTT) {
		var r map[string]float64
		if json.Unmarshal(e.Data, &r) != nil {
			continue
		}
		// An estimate out of 0 … MaxRTTMillis is dropped (the pair then
		// counts the other end's estimate, or DefaultRTT): an absurd one
		// would price a link past what the optimizer takes.
		for peer, v := range r {
			if !(v >= 0 && v <= MaxRTTMillis) {
				delete(r, peer)
				m.refuse("RTT report out of range dropped", e.Key, "node", e.Key, "peer", peer, "rtt_ms", v)
			}
		}
		out[e.Key] = r
	}
	m.mu.Lock()
	own := make(map[string]float64, len(m.rtt))
	for k, v := range m.rtt {
		own[k] = v
	}
	m.mu.Unlock()
	out[m.cfg.Name] = own
	return out
}

// streamOf strips the rendition from a stream path.
func streamOf(path string) string {
	s, _, _ := strings.Cut(path, "@")
	return s
}

// SetTranscodeUse reports how many renditions this node produces now, by
// stream (serverlets making "live/cam1@360p" count for "live/cam1"). The
// planners of other streams leave those slots out of the capacity they
// plan with.
func (m *Membership) SetTranscodeUse(byStream map[string]int) {
	m.setLocal(kindLoad, m.cfg.Name, byStream, false)
}

func (m *Membership) transcodeUse(node string) map[string]int {
	e, ok := m.state.get(kindLoad, node)
	if !ok {
		return nil
	}
	var n map[string]int
	_ = json.Unmarshal(e.Data, &n)
	return n
}
