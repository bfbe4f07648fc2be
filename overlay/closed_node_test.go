package overlay

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// The forged-entry attack replayed against real `gradient node`
// processes: a member holding the cluster key (a node it controls, here
// a Membership in the test) joins two node processes and sends them, over
// memberlist, entries it signed itself but that name node n0 as their
// owner, and an entry of its own versioned an hour ahead. The node
// processes refuse them (their /api/v1/cluster shows none of them and
// n0's genuine state), log the refusal, and still take the attacker's
// honest entry, so the channel the forgeries travel is shown to work. A
// keyed member advertising an absurd price is left out of plans.

// gradientBinary builds cmd/gradient once per test binary.
func gradientBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain to build the node")
	}
	bin := filepath.Join(t.TempDir(), "gradient")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gradient").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type nodeProc struct{ *testutil.NodeProc }

func startNodeProc(t *testing.T, bin, name, join string) *nodeProc {
	t.Helper()
	return &nodeProc{testutil.StartNode(t, testutil.NodeOptions{Bin: bin, Name: name,
		GossipKey: base64.StdEncoding.EncodeToString(testKey), Join: join, Extra: `overlay:
  probe_interval: 300ms
  probe_timeout: 200ms
  suspicion_mult: 4
  push_pull_interval: 2s
`})}
}

func (p *nodeProc) cluster(t *testing.T) ClusterStatus {
	t.Helper()
	r, err := http.Get("http://" + p.HTTP + "/api/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var st ClusterStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		t.Fatalf("%s: /api/v1/cluster: %v", p.Name, err)
	}
	return st
}

func (st ClusterStatus) alive(name string) bool {
	return slices.ContainsFunc(st.Members, func(m Member) bool { return m.Name == name && m.State == "alive" })
}

func (st ClusterStatus) stream(name string) (StreamInfo, bool) {
	for _, s := range st.Streams {
		if s.Name == name {
			return s, true
		}
	}
	return StreamInfo{}, false
}

// sendRawTo sends b to the node process p as a memberlist user message
// from from.
func sendRawTo(t *testing.T, from *Membership, p *nodeProc, b []byte) {
	t.Helper()
	host, port, err := net.SplitHostPort(p.Gossip)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	if err := from.list().SendReliable(&memberlist.Node{Name: p.Name, Addr: net.ParseIP(host), Port: uint16(n)}, b); err != nil {
		t.Fatalf("send to %s: %v", p.Name, err)
	}
}

func TestForgedEntriesAreRefusedByNodeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	bin := gradientBinary(t)
	n0 := startNodeProc(t, bin, "n0", "")
	n1 := startNodeProc(t, bin, "n1", n0.Gossip)
	c := fastConfig(t, "mallory", 0.01)
	c.Join = []string{n0.Gossip}
	mallory := startMembership(t, c)
	testutil.Eventually(t, 20*time.Second, "n0, n1 and the attacker alive at both nodes", func() bool {
		for _, p := range []*nodeProc{n0, n1} {
			st := p.cluster(t)
			if !st.alive("n0") || !st.alive("n1") || !st.alive("mallory") {
				return false
			}
		}
		return true
	})

	// The attacker's honest entry: its own stream, which the nodes take.
	mallory.SetStream(StreamInfo{Name: "live/mallory", Ladder: testLadder})
	testutil.Eventually(t, 10*time.Second, "the attacker's own stream at n0 and n1", func() bool {
		_, ok0 := n0.cluster(t).stream("live/mallory")
		_, ok1 := n1.cluster(t).stream("live/mallory")
		return ok0 && ok1
	})

	v := uint64(time.Now().UnixNano())
	forged := []*entry{
		{Kind: kindStream, Key: "live/forged", Owner: "n0", Version: v, Data: rawJSON(`{"name":"live/forged","ladder":[{"name":"forged","kbps":1}]}`)},
		{Kind: kindPlan, Key: "live/forged", Owner: "n0", Version: v, Data: rawJSON(`{"stream":"live/forged","nodes":["mallory"]}`)},
		{Kind: kindRTT, Key: "n0", Owner: "n0", Version: v, Data: rawJSON(`{"n1":9999}`)},
		{Kind: kindDemand, Key: "n0|live/forged", Owner: "n0", Version: v, Data: rawJSON(`{"node":"n0","stream":"live/forged","viewers":{"tv":1000}}`)},
	}
	// Its own entry an hour ahead: it would win over every later update.
	future := &entry{Kind: kindStream, Key: "live/future", Owner: "mallory", Version: v + uint64(time.Hour), Data: rawJSON(`{"name":"live/future","ladder":[{"name":"x","kbps":1}]}`)}
	for _, p := range []*nodeProc{n0, n1} {
		sendRawTo(t, mallory, p, forgeAs(mallory, forged...))
		sendRawTo(t, mallory, p, signedAs(mallory, future))
	}
	for _, e := range append(forged, future) {
		mallory.queue.QueueBroadcast(&broadcastMsg{id: e.id(), msg: forgeAs(mallory, e)})
	}
	// For gossip rounds in which a taken forgery would spread, neither
	// node may show one even for a moment (n0, seeing an entry in its
	// name that it did not make, would soon answer it with a tombstone:
	// the end state alone would not tell a refusal from a repair).
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, p := range []*nodeProc{n0, n1} {
			st := p.cluster(t)
			if _, ok := st.stream("live/forged"); ok {
				t.Fatalf("%s took the forged stream of n0", p.Name)
			}
			if _, ok := st.stream("live/future"); ok {
				t.Fatalf("%s took the far-future stream", p.Name)
			}
		}
	}
	for _, p := range []*nodeProc{n0, n1} {
		st := p.cluster(t)
		for _, name := range []string{"live/forged", "live/future"} {
			if s, ok := st.stream(name); ok {
				t.Errorf("%s lists the forged stream %+v", p.Name, s)
			}
		}
		for _, pl := range st.Plans {
			if pl.Stream == "live/forged" {
				t.Errorf("%s holds the forged plan %+v", p.Name, pl)
			}
		}
		for _, d := range st.Demand {
			if d.Stream == "live/forged" {
				t.Errorf("%s holds the forged demand %+v", p.Name, d)
			}
		}
		if rtt := st.RTTMillis["n0"]["n1"]; rtt >= 9999 {
			t.Errorf("%s: n0's RTT to n1 is the forged %v ms", p.Name, rtt)
		}
		if _, ok := st.stream("live/mallory"); !ok {
			t.Errorf("%s dropped the attacker's honest entry", p.Name)
		}
	}
	testutil.Eventually(t, 5*time.Second, "n1 logs the refusal of n0's forged entries", func() bool {
		return strings.Contains(n1.Proc.Output(), "gossip entry refused") && strings.Contains(n1.Proc.Output(), "owner=n0")
	})
	if !strings.Contains(n1.Proc.Output(), "owner=mallory") {
		t.Error("n1 did not log the refusal of the far-future entry")
	}
	// A keyed member that advertises a price of 2e9 (which once made
	// planning fail for every stream) is listed but left out of plans,
	// with the reason, and logged.
	c2 := fastConfig(t, "greedy", 0.01)
	c2.Join = []string{n0.Gossip}
	greedy := startMembership(t, c2) // its own checks refuse such a price: set behind them
	greedy.mu.Lock()
	greedy.meta.Price = 2e9
	greedy.metaB, _ = json.Marshal(greedy.meta)
	greedy.mu.Unlock()
	if err := greedy.list().UpdateNode(time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "n1 lists greedy as ignored, with its reason", func() bool {
		for _, m := range n1.cluster(t).Members {
			if m.Name == "greedy" {
				return strings.Contains(m.Ignored, "price")
			}
		}
		return false
	})
	testutil.Eventually(t, 5*time.Second, "n1 logs that it ignores greedy", func() bool {
		return strings.Contains(n1.Proc.Output(), "member ignored: left out of plans") && strings.Contains(n1.Proc.Output(), "node=greedy")
	})
	if n := strings.Count(n1.Proc.Output(), "gossip entry refused"); n > 20 {
		t.Errorf("n1 logged %d refusals for a handful of forged entries sent a few times (the log is rate-limited per owner and reason)", n)
	}
}
