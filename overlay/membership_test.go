package overlay

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

func TestThreeNodesGossipAndAgreeOnMembership(t *testing.T) {
	key := []byte("0123456789abcdef")
	var ms []*Membership
	for i := 0; i < 3; i++ {
		cfg := MembershipConfig{
			Name:     fmt.Sprintf("n%d", i),
			BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
			Key:      key,
			Meta:     NodeMeta{ID: fmt.Sprintf("n%d", i), HTTP: fmt.Sprintf("127.0.0.1:%d", 8080+i)},
		}
		if i > 0 {
			cfg.Join = []string{ms[0].Addr()}
		}
		m := startMembership(t, cfg)
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	testutil.Eventually(t, 10e9, "every node sees 3 alive members with metadata", func() bool {
		for _, m := range ms {
			mem := m.Members()
			if len(mem) != 3 {
				return false
			}
			for i, x := range mem {
				if x.State != "alive" || x.Meta.HTTP != fmt.Sprintf("127.0.0.1:%d", 8080+i) {
					return false
				}
			}
		}
		return true
	})
}

func TestGossipWithoutClusterKeyIsIgnored(t *testing.T) {
	a := startMembership(t, MembershipConfig{Name: "a", BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")), Key: []byte("0123456789abcdef")})
	defer a.Close()
	b := startMembership(t, MembershipConfig{Name: "b", BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")), Join: []string{a.Addr()}})
	defer b.Close()
	if n := len(a.Members()); n != 1 {
		t.Fatalf("node with the key sees %d members after a keyless join, want 1", n)
	}
	if n := len(b.Members()); n != 1 {
		t.Fatalf("keyless node sees %d members, want 1", n)
	}
}

func memberState(m *Membership, name string) string {
	for _, x := range m.Members() {
		if x.Name == name {
			return x.State
		}
	}
	return ""
}

func TestMembersShowSuspectDeadLeftAndARestartedNodeIsTakenBack(t *testing.T) {
	// A long suspicion (SuspicionMult 6: at least 1.2 s, up to 7.2 s with
	// 200 ms probes) leaves time to see n2 suspect before it is dead.
	ms := startCluster(t, 3, func(i int, c *MembershipConfig) {
		c.SuspicionMult = 6
		c.DeadNodeReclaim = 500 * time.Millisecond
	})
	testutil.Eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	ms[2].Shutdown() // a crash: no leave message
	var seen []string
	testutil.Eventually(t, 20*time.Second, "n0 sees n2 dead", func() bool {
		st := memberState(ms[0], "n2")
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		return st == "dead"
	})
	if !slices.Contains(seen, "suspect") {
		t.Errorf("n0 saw n2 go %v, want it suspect before dead", seen)
	}
	if got := aliveNames(ms[0]); got != "n0 n1 " {
		t.Errorf("alive after n2's death: %q, want n0 n1", got)
	}
	// The name is reclaimed from a new address (a restarted pod).
	c := fastConfig(t, "n2", 0.01)
	c.Join = []string{ms[0].Addr()}
	back := startMembership(t, c)
	t.Cleanup(func() { back.Close() })
	testutil.Eventually(t, 20*time.Second, "the restarted n2 is alive again at n0 and n1", func() bool {
		return memberState(ms[0], "n2") == "alive" && memberState(ms[1], "n2") == "alive"
	})
	ms[1].Close() // a graceful leave
	testutil.Eventually(t, 10*time.Second, "n0 sees n1 left", func() bool { return memberState(ms[0], "n1") == "left" })
	if got := aliveNames(ms[0]); got != "n0 n2 " {
		t.Errorf("alive after n1 left: %q, want n0 n2", got)
	}
}

func TestFreeSlotsLeaveOtherStreamsRenditionsOut(t *testing.T) {
	x := Member{Name: "e", Meta: NodeMeta{TranscodeSlots: 4},
		TranscodeByStream: map[string]int{"live/a": 2, "live/b": 1}}
	for _, c := range []struct {
		stream  string
		planned map[string]int
		want    int
	}{
		{"live/a", nil, 3},                         // b's one counts, a's own two do not
		{"live/b", nil, 2},                         // a's two count
		{"live/c", nil, 1},                         // both count
		{"live/c", map[string]int{"live/b": 2}, 0}, // b is planned for two (one not running yet)
		{"live/c", map[string]int{"live/d": 1}, 0}, // a planned stream that runs nothing yet
		{"live/a", map[string]int{"live/b": 0}, 3}, // planned less than running: running counts
		{"live/c", map[string]int{"live/d": 5}, 0}, // never below zero
	} {
		if got := FreeSlots(x, c.stream, c.planned); got != c.want {
			t.Errorf("FreeSlots(%s, planned %v) = %d, want %d", c.stream, c.planned, got, c.want)
		}
	}
}

func TestRTTEstimateIsTheRecentMinimumNotTheNoise(t *testing.T) {
	m := &Membership{rtt: map[string]float64{}, lastAck: map[string]time.Time{}, rttSamples: map[string][]float64{}}
	for _, ms := range []float64{10, 12, 300, 11, 95} { // a busy peer answers late now and then
		m.addRTTSample("b", ms)
	}
	if got := m.rtt["b"]; got != 10 {
		t.Fatalf("estimate after spikes = %v ms, want the path's 10", got)
	}
	for i := 0; i < rttWindow; i++ { // the path got longer for good
		m.addRTTSample("b", 50+float64(i))
	}
	if got := m.rtt["b"]; got != 50 {
		t.Fatalf("estimate after %d samples of a longer path = %v ms, want 50", rttWindow, got)
	}
	m.addRTTSample("b", 5) // and shorter: at once
	if got := m.rtt["b"]; got != 5 {
		t.Fatalf("estimate after a shorter sample = %v ms, want 5", got)
	}
	if n := len(m.rttSamples["b"]); n != rttWindow {
		t.Fatalf("%d samples kept, want %d", n, rttWindow)
	}
}

// TestGossipQueueSizeIsSafeWhileStarting runs what memberlist's goroutines
// do when they piggyback gossip on a packet (the queue asks for the
// cluster size) while Start creates the memberlist. Under -race it fails
// if the queue's size callback reads the memberlist without the lock Start
// writes it under.
func TestGossipQueueSizeIsSafeWhileStarting(t *testing.T) {
	m, err := NewMembership(fastConfig(t, "a", 0.01), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	stop := make(chan struct{})
	running := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			// A queued entry makes the queue ask for the cluster size.
			m.queue.QueueBroadcast(&broadcastMsg{id: "x", msg: []byte("{}")})
			m.queue.GetBroadcasts(2, 1400)
			if i == 0 {
				close(running)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	<-running
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	// Gossip on until memberlist has had its turn too.
	testutil.Eventually(t, 5*time.Second, "the node sees itself", func() bool { return len(m.Members()) == 1 })
	close(stop)
	<-done
	if n := m.numNodes(); n != 1 {
		t.Errorf("a node alone counts %d nodes, want 1", n)
	}
}

// TestComponentsBuildWithoutIOAndCloseWithoutStart: New binds nothing (two
// memberships on one address build; only the second Start fails), and
// every component closes without Start, and twice.
func TestComponentsBuildWithoutIOAndCloseWithoutStart(t *testing.T) {
	c := fastConfig(t, "a", 0.01)
	a, err := NewMembership(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewMembership(c, nil)
	if err != nil {
		t.Fatalf("a second membership on the same address does not build: %v (New must not bind)", err)
	}
	pl, err := NewPlanner(PlannerConfig{DeviceClasses: testClasses}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := NewReconciler(ReconcilerConfig{}, b, testutil.NewHub(t, media.HubConfig{}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := NewRelay(RelayConfig{Path: "live/cam1"}, testutil.NewHub(t, media.HubConfig{}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, close := range []func() error{pl.Close, rec.Close, rl.Close, b.Close} {
		for range 2 {
			if err := close(); err != nil {
				t.Errorf("Close without Start: %v", err)
			}
		}
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c2, err := NewMembership(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Start(); err == nil {
		c2.Close()
		t.Error("a second membership started on a bound address")
	}
	c2.Close()
	if err := a.Start(); err == nil {
		t.Error("Start twice succeeded")
	}
}
