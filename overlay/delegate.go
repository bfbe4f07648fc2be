package overlay

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is memberlist's Delegate for a Membership: node metadata, and
// the cluster state carried by user messages and push/pull.
type delegate struct{ m *Membership }

var _ memberlist.Delegate = (*delegate)(nil)

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metaB
}

// NotifyMsg implements memberlist.Delegate: a gossiped or directly sent
// batch of state entries.
func (d *delegate) NotifyMsg(b []byte) {
	m := d.m
	m.mu.Lock()
	m.bytesIn += uint64(len(b))
	m.mu.Unlock()
	m.merge(b)
}

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	m := d.m
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
func (d *delegate) LocalState(join bool) []byte {
	m := d.m
	b, _ := json.Marshal(m.state.all())
	m.mu.Lock()
	m.bytesOut += uint64(len(b))
	m.mu.Unlock()
	return b
}

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	m := d.m
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

// maxKnownKeys is how many keys of one owner knownKeys keeps (a node gets
// a new key on each restart; the VoD entries of its recent lives stay
// checkable), and maxKnownOwners how many owners: past it, an owner picked
// at random (map order) is forgotten, which only makes its persistent
// entries checkable by the key they carry, as a stranger's.
const (
	maxKnownKeys   = 8
	maxKnownOwners = 10_000
)

// verifyEntry checks that a remote entry is signed by its owner, and
// returns the key it verified with and whether that key is only the one
// the entry carries (a stranger's). It is state.verify, called under the
// state's lock.
//
// A live entry (stream, demand, plan, rtt, load) must verify against the
// key its owner announces now in its metadata (memberlist's view of the
// node, which the node itself refutes if another member gossips a forged
// one); its owner is alive, or the entry would not be taken. A persistent
// entry (vodtitle, vodrm) carries its signer's key (entry.PK): it must
// verify against it, and that key must be the owner's current one or one
// this node saw the owner announce, or verified its entries with, before
// (the origin may be dead, or have restarted with a new key). Only when this node knows no
// key of the owner at all (it died before this node joined) is the
// carried key taken on the relaying peer's word: nobody is left to
// contradict it, and a member could publish the same title or removal
// under its own name anyway. Such entries (stranger) share one cap
// whatever owner they name (state.strangers), for names cost nothing.
func (m *Membership) verifyEntry(e *entry) (string, bool, error) {
	if len(e.Sig) == 0 {
		return "", false, fmt.Errorf("%w: unsigned", errSigner)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := ""
	if e.Owner == m.cfg.Name {
		cur = m.meta.Key
	} else if x, ok := m.nodes[e.Owner]; ok {
		cur = x.Meta.Key
	}
	if !persistentKind(e.Kind) {
		if cur == "" || !e.verifiedBy(cur) {
			return "", false, fmt.Errorf("%w: signature does not verify against the owner's key", errSigner)
		}
		m.rememberKeyLocked(e.Owner, cur)
		if m.seenKey[e.Owner] == "" {
			// What this key signs is dropped if it changes
			// (dropReplacedKeys), even before a housekeeping round saw it.
			m.seenKey[e.Owner] = cur
		}
		return cur, false, nil
	}
	known := m.knownKeys[e.Owner]
	switch {
	case e.PK == "" || !e.verifiedBy(e.PK):
		return "", false, fmt.Errorf("%w: signature does not verify against the key it carries", errSigner)
	case e.PK == cur || slices.Contains(known, e.PK):
	case cur == "" && len(known) == 0:
		// Taken on the relay's word; not remembered as the owner's key,
		// so that the first stranger to name an owner does not decide it.
		return e.PK, true, nil
	default:
		return "", false, fmt.Errorf("%w: signed by a key the owner never announced here", errSigner)
	}
	m.rememberKeyLocked(e.Owner, e.PK)
	return e.PK, false, nil
}

func (m *Membership) rememberKeyLocked(owner, key string) {
	ks := m.knownKeys[owner]
	if len(ks) > 0 && ks[len(ks)-1] == key {
		return
	}
	if i := slices.Index(ks, key); i >= 0 {
		ks = slices.Delete(ks, i, i+1)
	} else if len(ks) == 0 && len(m.knownKeys) >= maxKnownOwners {
		for o := range m.knownKeys {
			delete(m.knownKeys, o)
			break
		}
	}
	ks = append(ks, key)
	if len(ks) > maxKnownKeys {
		ks = ks[len(ks)-maxKnownKeys:]
	}
	m.knownKeys[owner] = ks
}

// refusals rate-limits the log lines of refused gossip, so that a member
// flooding forged entries does not flood the log: one line per refusal
// key (what, whose, why) per refusalLogEvery, with how many were not
// logged since.
type refusals struct {
	mu   sync.Mutex
	last map[string]refusal
}

type refusal struct {
	at         time.Time
	suppressed int
}

const (
	refusalLogEvery = time.Minute
	// maxRefusalKeys bounds the table (a flood of distinct keys); when
	// full it is reset, which at worst logs a line again early.
	maxRefusalKeys = 1000
)

// refuse logs msg with attrs at Warn, unless a refusal of the same key was
// logged less than refusalLogEvery ago.
func (m *Membership) refuse(msg, key string, attrs ...any) {
	r := &m.refusals
	r.mu.Lock()
	if r.last == nil || len(r.last) >= maxRefusalKeys {
		r.last = map[string]refusal{}
	}
	k := msg + "|" + key
	prev, ok := r.last[k]
	now := time.Now()
	if ok && now.Sub(prev.at) < refusalLogEvery {
		prev.suppressed++
		r.last[k] = prev
		r.mu.Unlock()
		return
	}
	r.last[k] = refusal{at: now}
	r.mu.Unlock()
	if prev.suppressed > 0 {
		attrs = append(attrs, "suppressed_since_last_line", prev.suppressed)
	}
	m.log.Warn(msg, attrs...)
}

// GossipBytes returns the state-gossip payload bytes this node received and
// sent (user messages and push/pull state; memberlist's own probes and
// membership gossip are not counted).
func (m *Membership) GossipBytes() (in, out uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytesIn, m.bytesOut
}
