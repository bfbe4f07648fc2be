package overlay

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// "The cluster is closed": a member holding the cluster key speaks only for
// itself. These tests play a keyed member (the attacker) that sends crafted
// state entries to its peers over memberlist, as a modified node would.

// sendRaw sends b to member to as a memberlist user message from from (the
// way broadcast sends plans), as a forging member would.
func sendRaw(t *testing.T, from, to *Membership, b []byte) {
	t.Helper()
	host, port, err := net.SplitHostPort(to.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	n := &memberlist.Node{Name: to.Name(), Addr: net.ParseIP(host), Port: uint16(p)}
	if err := from.list().SendReliable(n, b); err != nil {
		t.Fatalf("send to %s: %v", to.Name(), err)
	}
}

func waitAlive(t *testing.T, ms []*Membership) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, fmt.Sprintf("%d nodes agree on membership", len(ms)), func() bool {
		for _, m := range ms {
			if len(m.Alive()) != len(ms) {
				return false
			}
		}
		return true
	})
}

func rawJSON(s string) json.RawMessage { return json.RawMessage(s) }

// TestForgedEntriesOfAnotherOwnerAreRefusedEverywhere: n2, a member with the
// key, sends n0 and n1 entries of every kind owned by n0 (newer than n0's)
// and entries it owns under keys that belong to n0 (rtt, load and demand
// are keyed by their node). Every one is refused at both nodes, and n0's
// genuine entries stand.
func TestForgedEntriesOfAnotherOwnerAreRefusedEverywhere(t *testing.T) {
	ms := startCluster(t, 3, nil)
	waitAlive(t, ms)
	n0, n1, n2 := ms[0], ms[1], ms[2]
	n0.SetStream(StreamInfo{Name: "live/a", Ladder: testLadder})
	n0.SetStream(StreamInfo{Name: "live/b", Ladder: testLadder})
	n0.SetDemand("live/a", map[string]int{"phone": 1})
	n0.PublishPlan(&Plan{Stream: "live/a", Nodes: []string{"n0"}})
	n0.SetTranscodeUse(map[string]int{"live/a": 1})
	n0.SetVoDTitle("t1", []byte(`{"v":"genuine"}`))
	n1.SetVoDTitle("t2", []byte(`{"v":"genuine"}`))
	n0.setLocal(kindRTT, "n0", map[string]float64{"n1": 0.5}, false)
	testutil.Eventually(t, 10*time.Second, "n1 has n0's entries and n0 has n1's title", func() bool {
		_, okS := n1.Stream("live/a")
		_, okB := n1.Stream("live/b")
		okS = okS && okB
		_, okP := n1.Plan("live/a")
		_, okR := n1.state.get(kindRTT, "n0")
		return okS && okP && okR && len(n1.Demands("live/a")) == 1 && len(n1.VoDTitles()) == 2 && len(n0.VoDTitles()) == 2 && n1.transcodeUse("n0")["live/a"] == 1
	})
	v := uint64(time.Now().UnixNano())
	forged := []*entry{
		{Kind: kindStream, Key: "live/a", Owner: "n0", Version: v, Data: rawJSON(`{"name":"live/a","ladder":[{"name":"forged","kbps":1}]}`)},
		{Kind: kindDemand, Key: "n0|live/a", Owner: "n0", Version: v, Data: rawJSON(`{"node":"n0","stream":"live/a","viewers":{"tv":1000}}`)},
		{Kind: kindPlan, Key: "live/a", Owner: "n0", Version: v, Data: rawJSON(`{"stream":"live/a","nodes":["n2"]}`)},
		{Kind: kindRTT, Key: "n0", Owner: "n0", Version: v, Data: rawJSON(`{"n1":9999}`)},
		{Kind: kindLoad, Key: "n0", Owner: "n0", Version: v, Data: rawJSON(`{"live/a":99}`)},
		{Kind: kindVoDTitle, Key: "t1", Owner: "n0", Version: v, Data: rawJSON(`{"v":"forged"}`)},
		{Kind: kindVoDRm, Key: "t2", Owner: "n0", Version: v, Data: rawJSON(`true`)},
		{Kind: kindStream, Key: "live/b", Owner: "n0", Version: v, Deleted: true}, // a forged deletion
		{Kind: kindVoDTitle, Key: "t1", Owner: "n0", Version: v + 1, Deleted: true},
	}
	// Entries n2 signs as itself, but under keys that name n0.
	own := []*entry{
		{Kind: kindDemand, Key: "n0|live/a", Owner: "n2", Version: v + 1, Data: rawJSON(`{"node":"n0","stream":"live/a","viewers":{"tv":2000}}`)},
		{Kind: kindRTT, Key: "n0", Owner: "n2", Version: v + 1, Data: rawJSON(`{"n1":8888}`)},
		{Kind: kindLoad, Key: "n0", Owner: "n2", Version: v + 1, Data: rawJSON(`{"live/a":88}`)},
	}
	for _, to := range []*Membership{n0, n1} {
		sendRaw(t, n2, to, forgeAs(n2, forged...))
		sendRaw(t, n2, to, signedAs(n2, own...))
	}
	// The attacker also gossips them, for the epidemic path.
	for _, e := range append(forged, own...) {
		n2.queue.QueueBroadcast(&broadcastMsg{id: e.id(), msg: forgeAs(n2, e)})
	}
	time.Sleep(1500 * time.Millisecond)
	for _, m := range []*Membership{n0, n1} {
		if s, ok := m.Stream("live/a"); !ok || s.Root != "n0" || len(s.Ladder) != 2 {
			t.Errorf("%s: stream live/a = %+v, %v; want n0's genuine one", m.Name(), s, ok)
		}
		if _, ok := m.Stream("live/b"); !ok {
			t.Errorf("%s: n0's stream live/b was deleted by a forged tombstone", m.Name())
		}
		if d := m.Demands("live/a"); len(d) != 1 || d[0].Viewers["phone"] != 1 || d[0].Viewers["tv"] != 0 {
			t.Errorf("%s: demand of live/a = %+v; want n0's genuine phone:1", m.Name(), d)
		}
		if p, ok := m.Plan("live/a"); !ok || len(p.Nodes) != 1 || p.Nodes[0] != "n0" {
			t.Errorf("%s: plan of live/a = %+v; want n0's genuine one", m.Name(), p)
		}
		if e, ok := m.state.get(kindRTT, "n0"); !ok || e.Owner != "n0" || strings.Contains(string(e.Data), "99") || strings.Contains(string(e.Data), "88") {
			t.Errorf("%s: n0's RTT report = %+v; want n0's genuine one", m.Name(), e)
		}
		if u := m.transcodeUse("n0"); u["live/a"] != 1 {
			t.Errorf("%s: n0's transcode use = %v; want live/a:1", m.Name(), u)
		}
		titles := map[string]string{}
		for _, x := range m.VoDTitles() {
			titles[x.ID] = string(x.Data)
		}
		if titles["t1"] != `{"v":"genuine"}` || titles["t2"] != `{"v":"genuine"}` {
			t.Errorf("%s: VoD titles = %v; want t1 and t2 genuine", m.Name(), titles)
		}
		if rm := m.VoDRemovals(); len(rm) != 0 {
			t.Errorf("%s: VoD removals = %v; want none (n0 removed nothing)", m.Name(), rm)
		}
	}
}

// TestFarFutureVersionIsRefused: an entry versioned an hour ahead would win
// over every later update of its key (versions are clocks); it is refused,
// the receiver's clock does not jump, and the owner's next genuine update
// is taken.
func TestFarFutureVersionIsRefused(t *testing.T) {
	ms := startCluster(t, 2, nil)
	waitAlive(t, ms)
	n0, n1 := ms[0], ms[1]
	future := uint64(time.Now().Add(time.Hour).UnixNano())
	e := &entry{Kind: kindStream, Key: "live/f", Owner: "n1", Version: future,
		Data: rawJSON(`{"name":"live/f","ladder":[{"name":"future","kbps":1}]}`)}
	sendRaw(t, n1, n0, signedAs(n1, e))
	time.Sleep(500 * time.Millisecond)
	if s, ok := n0.Stream("live/f"); ok {
		t.Errorf("n0 took an entry versioned an hour ahead: %+v", s)
	}
	n0.state.mu.Lock()
	clock := n0.state.clock
	n0.state.mu.Unlock()
	if clock >= future {
		t.Errorf("n0's clock jumped to the far-future version")
	}
	n1.SetStream(StreamInfo{Name: "live/f", Ladder: testLadder})
	testutil.Eventually(t, 5*time.Second, "n0 takes n1's genuine update", func() bool {
		s, ok := n0.Stream("live/f")
		return ok && len(s.Ladder) == 2
	})
}

// TestEntriesPerOwnerAreCapped: a member that publishes more keys than the
// cap gets only the cap's worth stored at its peers; an update of a key
// already stored is still taken.
func TestEntriesPerOwnerAreCapped(t *testing.T) {
	ms := startCluster(t, 2, func(i int, c *MembershipConfig) {
		if i == 0 {
			setEntryCap(c, 20)
		}
	})
	waitAlive(t, ms)
	n0, n1 := ms[0], ms[1]
	for i := 0; i < 60; i++ {
		n1.SetStream(StreamInfo{Name: fmt.Sprintf("live/s%02d", i), Ladder: testLadder})
	}
	count := func() int {
		n := 0
		for _, s := range n0.Streams() {
			if s.Root == "n1" {
				n++
			}
		}
		return n
	}
	testutil.Eventually(t, 10*time.Second, "n0 stores n1's streams", func() bool { return count() >= 20 })
	time.Sleep(2500 * time.Millisecond) // a push/pull round too
	if n := count(); n != 20 {
		t.Fatalf("n0 stores %d of n1's 60 streams, want the cap of 20", n)
	}
	var stored string
	for _, s := range n0.Streams() {
		if s.Root == "n1" {
			stored = s.Name
			break
		}
	}
	n1.SetStream(StreamInfo{Name: stored, Ladder: testLadder[:1]})
	testutil.Eventually(t, 5*time.Second, "an update of a stored key is taken at the cap", func() bool {
		s, ok := n0.Stream(stored)
		return ok && len(s.Ladder) == 1
	})
}

// TestBadMetadataDoesNotBreakPlanning: members advertising a price of 2e9,
// a negative price, a huge transcode cost, negative or huge slots, metadata
// that does not decode, or RTTs of 1e15 ms do not make the root's planning
// fail: the stream is planned over the sane members.
func TestBadMetadataDoesNotBreakPlanning(t *testing.T) {
	bad := map[int]string{
		2: `{"id":"n2","rtsp":"127.0.0.1:2","price":2e9,"slots":2}`,
		3: `{"id":"n3","rtsp":"127.0.0.1:2","price":-1,"slots":2}`,
		4: `{"id":"n4","rtsp":"127.0.0.1:2","price":0.01,"slots":2,"tcost":5e9}`,
		5: `{"id":"n5","rtsp":"127.0.0.1:2","price":0.01,"slots":-3}`,
		6: `{"id":"n6","rtsp":"127.0.0.1:2","price":0.01,"slots":1000000000000}`,
		7: `{"id":"n7","rtsp":"127.0.0.1:2","price":1e999}`,
	}
	var ms []*Membership
	for i := 0; i < 9; i++ {
		c := fastConfig(t, fmt.Sprintf("n%d", i), 0.01)
		if i > 0 {
			c.Join = []string{ms[0].Addr()}
		}
		if i == 8 {
			c.RTTInterval = time.Hour // n8 reports its own (absurd) RTTs only
		}
		m, err := NewMembership(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if b, ok := bad[i]; ok {
			// What a modified node would advertise, with its genuine key
			// (its entries verify; only the numbers are wrong).
			m.metaB = []byte(strings.TrimSuffix(b, "}") + fmt.Sprintf(`,"pk":%q}`, m.meta.Key))
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	testutil.Eventually(t, 20*time.Second, "9 nodes see each other", func() bool {
		for _, m := range ms {
			if len(m.Members()) != 9 {
				return false
			}
		}
		return true
	})
	ms[8].setLocal(kindRTT, "n8", map[string]float64{"n0": 1e15, "n1": -5, "n2": 1e300}, false)
	// RTT reports are not relayed: n0 gets n8's from n8's own few gossip
	// rounds or a push/pull with it (each node picks one of 8 every 2 s).
	testutil.Eventually(t, 20*time.Second, "n0 has n8's RTT report", func() bool {
		_, ok := ms[0].state.get(kindRTT, "n8")
		return ok
	})
	pl := newTestPlanner(t, PlannerConfig{DeviceClasses: testClasses, Debounce: 100 * time.Millisecond, Interval: time.Second}, ms[0])
	pl.Start()
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: testLadder})
	ms[1].SetDemand("live/cam1", map[string]int{"tv": 1})
	ms[8].SetDemand("live/cam1", map[string]int{"phone": 1})
	p := waitPlanEverywhere(t, ms[:2], "n0 plans live/cam1 for n1 and n8", func(p *Plan) bool {
		return len(p.Plan.Served) == 2
	})
	for _, n := range p.Nodes {
		if _, isBad := bad[mustIndex(n)]; isBad {
			t.Errorf("plan uses %s, whose metadata is out of range: nodes %v", n, p.Nodes)
		}
	}
	for _, x := range ms[0].Members() {
		_, isBad := bad[mustIndex(x.Name)]
		if isBad != (x.Ignored != "") {
			t.Errorf("n0 lists %s as ignored %q; want ignored: %v", x.Name, x.Ignored, isBad)
		}
		if isBad && strings.Contains(x.Ignored, "key") {
			t.Errorf("%s is ignored for its key (%q), want for its metadata", x.Name, x.Ignored)
		}
	}
}

func mustIndex(name string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(name, "n"))
	return i
}

// TestOwnMetadataOutOfRangeIsRefused: a node does not start advertising
// what its peers would ignore it for.
func TestOwnMetadataOutOfRangeIsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		meta NodeMeta
	}{
		{"price NaN", NodeMeta{Price: math.NaN()}},
		{"price +Inf", NodeMeta{Price: math.Inf(1)}},
		{"price negative", NodeMeta{Price: -1}},
		{"price 2e9", NodeMeta{Price: 2e9}},
		{"tcost 2e9", NodeMeta{TranscodeCost: 2e9}},
		{"tcost -Inf", NodeMeta{TranscodeCost: math.Inf(-1)}},
		{"slots negative", NodeMeta{TranscodeSlots: -1}},
		{"slots 5000", NodeMeta{TranscodeSlots: 5000}},
	} {
		cfg := fastConfig(t, "a", 0.01)
		cfg.Meta = c.meta
		if _, err := NewMembership(cfg, nil); err == nil {
			t.Errorf("%s: NewMembership accepted it", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}

// TestASignedTypicalVoDEntryTravelsByUDPGossip: the signature and key a
// title entry now carries keep a typical one within a UDP gossip entry.
func TestASignedTypicalVoDEntryTravelsByUDPGossip(t *testing.T) {
	m, err := NewMembership(fastConfig(t, "a-rather-long-node-name-07", 0.01), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &entry{Kind: kindVoDTitle, Key: "abcdefghijklmnop", Owner: "a-rather-long-node-name-07", Version: uint64(time.Now().UnixNano()), Data: typicalVoDEntry("abcdefghijklmnop")}
	b := signedAs(m, e)
	if len(b)-2 > maxGossipEntry {
		t.Fatalf("a signed %d-byte title entry encodes to %d bytes, over the %d a UDP gossip entry may take", len(e.Data), len(b)-2, maxGossipEntry)
	}
	t.Logf("a signed %d-byte title entry encodes to %d bytes", len(e.Data), len(b)-2)

	// And it does travel by UDP gossip: with no push/pull after the join
	// (and titles not sent over TCP), only gossip can carry it.
	ms := startCluster(t, 2, func(i int, c *MembershipConfig) { c.PushPullInterval = time.Hour })
	waitAlive(t, ms)
	ms[0].SetVoDTitle("abcdefghijklmnop", typicalVoDEntry("abcdefghijklmnop"))
	testutil.Eventually(t, 5*time.Second, "the title reaches n1 by UDP gossip", func() bool { return vodIDs(ms[1]) == "abcdefghijklmnop@n0" })
}

// TestVoDEntriesOfUnknownOwnersShareOneCap: a node takes a dead origin's
// VoD entries it never saw the key of on the key they carry; names cost
// nothing, so entries under invented owners share one cap instead of a cap
// each.
func TestVoDEntriesOfUnknownOwnersShareOneCap(t *testing.T) {
	ms := startCluster(t, 2, func(i int, c *MembershipConfig) {
		if i == 0 {
			setVoDCap(c, 10)
		}
	})
	waitAlive(t, ms)
	n0, n1 := ms[0], ms[1]
	v := uint64(time.Now().UnixNano())
	var es []*entry
	for i := 0; i < 30; i++ {
		e := &entry{Kind: kindVoDTitle, Key: fmt.Sprintf("ghost-title-%02d", i), Owner: fmt.Sprintf("ghost%02d", i), Version: v, Data: rawJSON(`{}`)}
		signFresh(e) // each invented owner with a key of its own
		es = append(es, e)
	}
	b, _ := json.Marshal(es)
	sendRaw(t, n1, n0, b)
	testutil.Eventually(t, 5*time.Second, "n0 takes the first entries", func() bool { return len(n0.VoDTitles()) > 0 })
	time.Sleep(500 * time.Millisecond)
	if n := len(n0.VoDTitles()); n != 10 {
		t.Fatalf("n0 holds %d titles of 30 invented owners, want the cap of 10", n)
	}
}

// TestAMembersKeyChangeDropsWhatTheOldKeySigned: a member whose key
// changes (a fast restart, or metadata forged by another member and then
// refuted by the node) loses the live entries the old key signed; what it
// signs with the new key is taken.
func TestAMembersKeyChangeDropsWhatTheOldKeySigned(t *testing.T) {
	ms := startCluster(t, 2, nil)
	waitAlive(t, ms)
	n0, n1 := ms[0], ms[1]
	n1.SetStream(StreamInfo{Name: "live/k", Ladder: testLadder})
	testutil.Eventually(t, 5*time.Second, "n0 has n1's stream", func() bool { _, ok := n0.Stream("live/k"); return ok })
	rotateKey(t, n1)
	testutil.Eventually(t, 5*time.Second, "n0 drops the stream the old key signed", func() bool { _, ok := n0.Stream("live/k"); return !ok })
	n1.SetStream(StreamInfo{Name: "live/k2", Ladder: testLadder})
	testutil.Eventually(t, 5*time.Second, "n0 takes what the new key signs", func() bool { _, ok := n0.Stream("live/k2"); return ok })
}

// TestAKeyChangedBackWasForgedAndAllItSignedIsDropped: a member's key goes
// A → B → A, as when another member gossips forged metadata for it and the
// node refutes it. Whatever B signed is dropped everywhere, VoD entries
// included, and B is no longer taken as the member's.
func TestAKeyChangedBackWasForgedAndAllItSignedIsDropped(t *testing.T) {
	ms := startCluster(t, 2, nil)
	waitAlive(t, ms)
	n0, n1 := ms[0], ms[1]
	n1.SetVoDTitle("genuine", []byte(`{}`))
	testutil.Eventually(t, 5*time.Second, "n0 has n1's title", func() bool { return vodIDs(n0) == "genuine@n1" })
	a := saveKey(n1)
	rotateKey(t, n1)
	time.Sleep(time.Second) // a housekeeping round at n0 sees key B
	n1.SetVoDTitle("forged", []byte(`{}`))
	n1.SetStream(StreamInfo{Name: "live/forged", Ladder: testLadder})
	testutil.Eventually(t, 5*time.Second, "n0 takes what B signs", func() bool {
		_, ok := n0.Stream("live/forged")
		return ok && vodIDs(n0) == "forged@n1 genuine@n1"
	})
	restoreKey(t, n1, a)
	testutil.Eventually(t, 5*time.Second, "n0 drops all B signed, keeps what A signed", func() bool {
		_, ok := n0.Stream("live/forged")
		return !ok && vodIDs(n0) == "genuine@n1"
	})
	// n1 still holds the B-signed title: its push/pull (2 s) offers it
	// again, and n0 refuses it.
	time.Sleep(2500 * time.Millisecond)
	if got := vodIDs(n0); got != "genuine@n1" {
		t.Errorf("n0 lists %q after a push/pull, want only the genuine title", got)
	}
}
