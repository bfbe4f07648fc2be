package overlay

import (
	"fmt"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/optimizer"
)

var testKey = []byte("0123456789abcdef")

// fastConfig is a membership config with timers short enough for tests.
func fastConfig(t testing.TB, name string, price float64) MembershipConfig {
	return MembershipConfig{
		Name:             name,
		BindAddr:         fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
		Key:              testKey,
		Meta:             NodeMeta{ID: name, HTTP: "127.0.0.1:1", RTSP: "127.0.0.1:2", Price: price, TranscodeSlots: 2},
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    2,
		GossipInterval:   50 * time.Millisecond,
		PushPullInterval: 2 * time.Second,
		RTTInterval:      300 * time.Millisecond,
	}
}

func startCluster(t testing.TB, n int, cfg func(i int, c *MembershipConfig)) []*Membership {
	t.Helper()
	var ms []*Membership
	for i := 0; i < n; i++ {
		c := fastConfig(t, fmt.Sprintf("n%d", i), 0.01)
		if i > 0 {
			c.Join = []string{ms[0].Addr()}
		}
		if cfg != nil {
			cfg(i, &c)
		}
		m := startMembership(t, c)
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	return ms
}

func aliveNames(m *Membership) string {
	s := ""
	for _, x := range m.Alive() {
		s += x.Name + " "
	}
	return s
}

func TestStateGossipReachesEveryNodeAndLateJoinerCatchesUp(t *testing.T) {
	ms := startCluster(t, 5, nil)
	testutil.Eventually(t, 10*time.Second, "5 nodes agree on membership", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != 5 {
				return false
			}
		}
		return true
	})
	ladder := []optimizer.Level{{Name: "720p", Kbps: 2500}, {Name: "360p", Kbps: 800}}
	ms[0].SetStream(StreamInfo{Name: "live/cam1", Ladder: ladder})
	ms[3].SetDemand("live/cam1", map[string]int{"phone": 2})
	ms[4].SetDemand("live/cam1", map[string]int{"tv": 1})
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, "every node knows the stream and both demands", func() bool {
		for _, m := range ms {
			s, ok := m.Stream("live/cam1")
			if !ok || s.Root != "n0" || len(s.Ladder) != 2 || len(m.Demands("live/cam1")) != 2 {
				return false
			}
		}
		return true
	})
	t.Logf("stream and demand reached 5 nodes in %v", time.Since(start))

	// Newest wins: n3 updates its demand.
	ms[3].SetDemand("live/cam1", map[string]int{"phone": 5})
	testutil.Eventually(t, 5*time.Second, "n3's new demand replaces the old everywhere", func() bool {
		for _, m := range ms {
			for _, d := range m.Demands("live/cam1") {
				if d.Node == "n3" && d.Viewers["phone"] != 5 {
					return false
				}
			}
		}
		return true
	})

	// A late joiner gets the whole state by push/pull at join.
	c := fastConfig(t, "late", 0.01)
	c.Join = []string{ms[2].Addr()}
	late := startMembership(t, c)
	t.Cleanup(func() { late.Close() })
	testutil.Eventually(t, 5*time.Second, "the late joiner knows stream and demands", func() bool {
		_, ok := late.Stream("live/cam1")
		return ok && len(late.Demands("live/cam1")) == 2
	})

	// Withdrawn demand disappears everywhere.
	ms[4].SetDemand("live/cam1", nil)
	testutil.Eventually(t, 5*time.Second, "n4's withdrawn demand is gone everywhere", func() bool {
		for _, m := range append(ms, late) {
			if len(m.Demands("live/cam1")) != 1 {
				return false
			}
		}
		return true
	})
}

func TestDeadNodesStateIsForgotten(t *testing.T) {
	ms := startCluster(t, 4, nil)
	testutil.Eventually(t, 10*time.Second, "4 nodes agree on membership", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != 4 {
				return false
			}
		}
		return true
	})
	ms[3].SetStream(StreamInfo{Name: "live/dies", Ladder: []optimizer.Level{{Name: "src", Kbps: 1000}}})
	ms[3].SetDemand("live/other", map[string]int{"tv": 1})
	testutil.Eventually(t, 5*time.Second, "n3's state reached everyone", func() bool {
		for _, m := range ms[:3] {
			if _, ok := m.Stream("live/dies"); !ok || len(m.Demands("")) != 1 {
				return false
			}
		}
		return true
	})
	// A crash: no Leave message.
	ms[3].Shutdown()
	start := time.Now()
	testutil.Eventually(t, 20*time.Second, "n3 declared dead and its stream and demand forgotten", func() bool {
		for _, m := range ms[:3] {
			if _, ok := m.Stream("live/dies"); ok || len(m.Demands("")) != 0 || len(m.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	t.Logf("crash detected and state forgotten in %v", time.Since(start))
}

func TestRTTEstimatesComeFromPingsAndAreGossiped(t *testing.T) {
	ms := startCluster(t, 3, nil)
	testutil.Eventually(t, 10*time.Second, "every node has an RTT estimate of every pair, from both ends' gossip", func() bool {
		for _, m := range ms {
			rtts := m.RTTs()
			for _, a := range []string{"n0", "n1", "n2"} {
				for _, b := range []string{"n0", "n1", "n2"} {
					if a == b {
						continue
					}
					if v, ok := rtts[a][b]; !ok || v <= 0 {
						return false
					}
				}
			}
		}
		return true
	})
	for _, mem := range ms[0].Members() {
		if mem.Name != "n0" && (mem.RTTMillis <= 0 || mem.RTTMillis > 100) {
			t.Errorf("n0's RTT to %s is %.3f ms, want a loopback figure in (0, 100)", mem.Name, mem.RTTMillis)
		}
	}
}

func TestLinkCostGrowsWithPriceAndRTT(t *testing.T) {
	scale := 50 * time.Millisecond
	if got := LinkCost(0.01, 0.03, 0, scale); got != 0.02 {
		t.Errorf("cost at RTT 0 = %v, want the mean price 0.02", got)
	}
	if got := LinkCost(0.02, 0.02, 50*time.Millisecond, scale); got != 0.04 {
		t.Errorf("cost at RTT = scale = %v, want twice the price", got)
	}
	if LinkCost(1, 1, 10*time.Millisecond, scale) >= LinkCost(1, 1, 80*time.Millisecond, scale) {
		t.Error("a longer link is not dearer")
	}
}

func TestGossipedEntriesOfAnotherLifeAreRefuted(t *testing.T) {
	s := newState("a", time.Minute, func(string) bool { return true })
	ok, refute := s.merge(&entry{Kind: kindStream, Key: "live/x", Owner: "a", Version: 5, Data: []byte(`{}`)})
	if ok || refute == nil || !refute.Deleted || refute.Version <= 5 {
		t.Fatalf("a stale entry of our own was accepted=%v refuted=%+v, want a newer tombstone", ok, refute)
	}
	s2 := newState("b", time.Minute, func(o string) bool { return o != "dead" })
	if ok, _ := s2.merge(&entry{Kind: kindStream, Key: "live/x", Owner: "dead", Version: 5}); ok {
		t.Fatal("an entry of a node not alive was accepted")
	}
	if ok, _ := s2.merge(&entry{Kind: kindStream, Key: "live/x", Owner: "c", Version: 5}); !ok {
		t.Fatal("a new entry was refused")
	}
	if ok, _ := s2.merge(&entry{Kind: kindStream, Key: "live/x", Owner: "c", Version: 4}); ok {
		t.Fatal("an older entry replaced a newer one")
	}
}

// startMembership builds and starts a membership that is closed when the
// test ends.
func startMembership(t testing.TB, c MembershipConfig) *Membership {
	t.Helper()
	m, err := NewMembership(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	return m
}

// newTestPlanner builds a planner over m that is closed when the test ends.
func newTestPlanner(t testing.TB, c PlannerConfig, m *Membership) *Planner {
	t.Helper()
	p, err := NewPlanner(c, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
