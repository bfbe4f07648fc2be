package overlay

import (
	"encoding/json"
	"log/slog"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/gradient-cdn/gradient/optimizer"
)

// fuzzMembership is a membership that is built but not started (nothing
// binds): merge, the state and its readers work without memberlist. The
// peers "a" and "b" are alive, so their entries are accepted.
func fuzzMembership(t *testing.T) *Membership {
	m, err := NewMembership(MembershipConfig{Name: "self", BindAddr: "127.0.0.1:7946"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.alive["a"], m.alive["b"] = true, true
	m.mu.Unlock()
	return m
}

// fuzzStateDump is the state's entries, sorted, as comparable JSON.
func fuzzStateDump(s *state) string {
	es := s.all()
	sort.Slice(es, func(i, j int) bool { return es[i].id() < es[j].id() })
	b, _ := json.Marshal(es)
	return string(b)
}

func fuzzGossipSeeds(f *testing.F) {
	plan, _ := json.Marshal(&Plan{Stream: "live/x", Root: "a", Version: 3, Made: time.Unix(1, 0).UTC(),
		Levels: []optimizer.Level{{Name: "src", Kbps: 3000}, {Name: "360p", Kbps: 800}},
		Groups: []Group{{Node: "b", Class: "phone", Viewers: 3}}, Nodes: []string{"a", "b"},
		Plan: optimizer.Plan{Arcs: []optimizer.Arc{{From: "a", To: "b", Levels: []string{"src"}}},
			Served: []optimizer.Service{{Demand: 0, Level: "src"}}}})
	stream, _ := json.Marshal(StreamInfo{Name: "live/x", Root: "a", Ladder: []optimizer.Level{{Name: "src", Kbps: 3000}}})
	demand, _ := json.Marshal(Demand{Node: "b", Stream: "live/x", Viewers: map[string]int{"phone": 3}})
	es := []*entry{
		{Kind: kindStream, Key: "live/x", Owner: "a", Version: 5, Data: stream},
		{Kind: kindPlan, Key: "live/x", Owner: "a", Version: 6, Data: plan},
		{Kind: kindDemand, Key: "b|live/x", Owner: "b", Version: 7, Data: demand},
		{Kind: kindRTT, Key: "a", Owner: "a", Version: 8, Data: json.RawMessage(`{"b":1.5}`)},
		{Kind: kindLoad, Key: "a", Owner: "a", Version: 9, Data: json.RawMessage(`{"live/x":1}`)},
		{Kind: kindVoDTitle, Key: "t1", Owner: "c", Version: 10, Data: json.RawMessage(`{"id":"t1"}`)},
		{Kind: kindVoDRm, Key: "t2", Owner: "self", Version: 11, Data: json.RawMessage(`true`)},
		{Kind: kindStream, Key: "live/mine", Owner: "self", Version: 12, Data: stream},
		{Kind: kindStream, Key: "live/gone", Owner: "a", Version: 13, Deleted: true},
		{Kind: "future-kind", Key: "k", Owner: "a", Version: 1, Data: json.RawMessage(`[1,2]`)},
	}
	all, _ := json.Marshal(es)
	f.Add(all)
	for _, e := range es {
		b, _ := json.Marshal(e)
		f.Add(b)
	}
	f.Add([]byte(`[null,{},{"k":""}]`))
	f.Add([]byte(`{"k":"plan","key":"s","o":"a","v":1,"data":{"plan":{"served":[{"demand":-1}]}}}`))
	f.Add([]byte(`[{"k":"vodrm","key":"t1","o":"a","v":1,"data":true},{"k":"vodtitle","key":"t1","o":"a","v":2,"data":{}}]`))
	f.Add([]byte(`{"k":"stream","key":"x","o":"a","v":18446744073709551615,"data":"x"}`))
}

// FuzzGossipMerge feeds a peer's bytes (a user message or a push/pull
// state: both go through Membership.merge) to a membership. It never
// panics; the state holds at most one entry per distinct (kind, key) the
// message carried; merging the same bytes again changes nothing; every
// reader of the state (streams, plans and their queries, demands, RTTs,
// transcode use, VoD) copes with whatever data the entries carry, kinds it
// does not know included; what is queued for re-gossip fits a UDP packet.
func FuzzGossipMerge(f *testing.F) {
	fuzzGossipSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m := fuzzMembership(t)
		m.merge(b)

		var es []*entry
		if json.Unmarshal(b, &es) != nil {
			var e entry
			if json.Unmarshal(b, &e) == nil {
				es = []*entry{&e}
			}
		}
		ids := map[string]bool{}
		for _, e := range es {
			if e != nil && e.Kind != "" {
				ids[e.id()] = true
			}
		}
		m.state.mu.Lock()
		for id := range m.state.entries {
			if !ids[id] {
				t.Errorf("state holds %q, which the message did not carry", id)
			}
		}
		m.state.mu.Unlock()

		before := fuzzStateDump(m.state)
		m.merge(b)
		if after := fuzzStateDump(m.state); after != before {
			t.Fatalf("merging the same message twice changed the state:\n%s\n%s", before, after)
		}

		for _, s := range m.Streams() {
			m.Stream(s.Name)
		}
		for _, p := range m.Plans() {
			for _, n := range append(append([]string{p.Root}, p.Nodes...), "a", "b", "self") {
				p.Ancestors(n)
				p.Has(n)
				p.Covers(n)
				for _, g := range p.Groups {
					p.Served(n, g.Class)
				}
			}
			for _, l := range p.Levels {
				p.Path(l.Name)
			}
			sameTree(p, p)
			m.Plan(p.Stream)
		}
		m.Demands("")
		m.RTTs()
		for _, n := range []string{"a", "b", "self"} {
			m.transcodeUse(n)
		}
		m.VoDTitles()
		m.VoDRemovals()
		for _, bc := range m.queue.GetBroadcasts(0, 1<<20) {
			if len(bc) > maxGossipEntry {
				t.Fatalf("queued a %d-byte gossip message", len(bc))
			}
		}
	})
}

// FuzzGossipPlan: a plan as the cluster state carries it (JSON from a
// peer) is stable: decoded, encoded and decoded again it is the same, and
// the queries the relays make on it never panic, whatever its arcs (cycles,
// unknown nodes) and service indices.
func FuzzGossipPlan(f *testing.F) {
	p := &Plan{Stream: "live/x", Root: "a", Version: 3, Made: time.Unix(1, 0).UTC(),
		Levels: []optimizer.Level{{Name: "src", Kbps: 3000}, {Name: "360p", Kbps: 800}},
		Groups: []Group{{Node: "b", Class: "phone", Viewers: 3}}, Nodes: []string{"a", "b"},
		Plan: optimizer.Plan{Algorithm: "primal-dual", Arcs: []optimizer.Arc{{From: "a", To: "b", Levels: []string{"src"}}, {From: "b", To: "a"}},
			Transcodes: []optimizer.Transcode{{Node: "b", From: "src", To: "360p"}},
			Served:     []optimizer.Service{{Demand: 0, Level: "src"}, {Demand: 7, Level: "x"}}}}
	b, _ := json.Marshal(p)
	f.Add(b)
	f.Add([]byte(`{"plan":{"served":[{"demand":-1}],"arcs":[{"from":"a","to":"a"}]}}`))
	f.Add([]byte(`{"made":"2020-01-01T00:00:00.123456789+14:00","version":18446744073709551615}`))
	f.Add([]byte(`{"levels":[{"name":"a","kbps":1e308}],"plan":{"cost":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p1 Plan
		if json.Unmarshal(b, &p1) != nil {
			return
		}
		for _, n := range append(append([]string{p1.Root, ""}, p1.Nodes...), "a", "b") {
			p1.Ancestors(n)
			p1.Has(n)
			p1.Covers(n)
			p1.Served(n, "phone")
		}
		sameTree(&p1, &p1)
		b1, err := json.Marshal(&p1)
		if err != nil {
			return // e.g. a time outside what MarshalJSON writes
		}
		var p2 Plan
		if err := json.Unmarshal(b1, &p2); err != nil {
			t.Fatalf("a re-encoded plan does not decode: %v\n%s", err, b1)
		}
		b2, err := json.Marshal(&p2)
		if err != nil || string(b1) != string(b2) {
			t.Fatalf("plan not stable:\n%s\n%s (%v)", b1, b2, err)
		}
	})
}

// FuzzPeerPlanning: what peers control — their metadata (price, slots,
// transcode cost, addresses) and the state they gossip (streams and
// their ladders, demand, RTTs, transcode use) — goes into the problem the
// planner of a stream builds. It never panics; the problem it builds
// either fails validation (then planStream reports the error) or solves
// into a plan that passes Check.
func FuzzPeerPlanning(f *testing.F) {
	meta, _ := json.Marshal(NodeMeta{ID: "a", HTTP: ":8080", RTSP: "0.0.0.0:8554", Price: 0.02, TranscodeSlots: 2, TranscodeCost: 0.1})
	stream, _ := json.Marshal(StreamInfo{Name: "live/x", Root: "a", Ladder: []optimizer.Level{{Name: "src", Kbps: 3000}, {Name: "360p", Kbps: 800}}})
	demand, _ := json.Marshal(Demand{Node: "a", Stream: "live/x", Viewers: map[string]int{"phone": 3, "tv": 1}})
	state, _ := json.Marshal([]*entry{
		{Kind: kindStream, Key: "live/x", Owner: "a", Version: 5, Data: stream},
		{Kind: kindDemand, Key: "a|live/x", Owner: "a", Version: 7, Data: demand},
		{Kind: kindRTT, Key: "a", Owner: "a", Version: 8, Data: json.RawMessage(`{"self":12.5}`)},
		{Kind: kindLoad, Key: "a", Owner: "a", Version: 9, Data: json.RawMessage(`{"live/y":1}`)},
	})
	f.Add(meta, state)
	f.Add([]byte(`{"price":-1,"slots":-5,"tcost":1e308,"http":"[::]:1"}`), state)
	f.Add([]byte(`{"price":1e308}`), []byte(`{"k":"rtt","key":"a","o":"a","v":1,"data":{"self":-1e308}}`))
	f.Add([]byte(`null`), []byte(`{"k":"stream","key":"s","o":"a","v":1,"data":{"name":"s","ladder":[{"name":"","kbps":-1},{"name":"","kbps":0}]}}`))
	f.Add([]byte(`{}`), []byte(`{"k":"demand","key":"a|s","o":"a","v":1,"data":{"stream":"s","viewers":{"x":-9223372036854775808}}}`))
	f.Fuzz(func(t *testing.T, meta, gossip []byte) {
		m := fuzzMembership(t)
		self, _ := json.Marshal(m.meta)
		ed := &eventDelegate{m}
		ed.NotifyJoin(&memberlist.Node{Name: "self", Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: self})
		ed.NotifyJoin(&memberlist.Node{Name: "a", Addr: net.IPv4(127, 0, 0, 2), Port: 7946, Meta: meta})
		m.merge(gossip)
		m.Members()
		p, err := NewPlanner(PlannerConfig{DeviceClasses: map[string]map[string]float64{
			"phone": {"src": 1, "360p": 2}, "tv": {"src": 5, "360p": 1}}}, m, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range m.Streams() {
			prob, groups := p.Problem(s)
			if len(prob.Demands) != len(groups) {
				t.Fatalf("%d demands, %d groups", len(prob.Demands), len(groups))
			}
			if prob.Validate() != nil || len(prob.Levels) > 8 || len(prob.Demands) > 50 {
				continue
			}
			sol, err := optimizer.Solve("primal-dual", prob)
			if err != nil {
				t.Fatalf("valid problem from peer state, Solve: %v", err)
			}
			if err := prob.Check(sol); err != nil {
				t.Fatalf("infeasible plan from peer state: %v", err)
			}
		}
		ed.NotifyLeave(&memberlist.Node{Name: "a", Addr: net.IPv4(127, 0, 0, 2), Port: 7946, Meta: meta})
		m.Members()
	})
}
