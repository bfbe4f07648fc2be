package bench

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// overlayCluster starts n memberships on loopback with memberlist's LAN
// timers and a 100 ms gossip interval (the node defaults).
func overlayCluster(b *testing.B, n int) []*overlay.Membership {
	var ms []*overlay.Membership
	for i := 0; i < n; i++ {
		c := overlay.MembershipConfig{Name: fmt.Sprintf("n%d", i), BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp")),
			Key:  []byte("0123456789abcdef"),
			Meta: overlay.NodeMeta{HTTP: "127.0.0.1:1", RTSP: "127.0.0.1:2", Price: 0.01, TranscodeSlots: 2}}
		if i > 0 {
			c.Join = []string{ms[0].Addr()}
		}
		m, err := overlay.NewMembership(c, quiet)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		if err := m.Start(); err != nil {
			b.Fatal(err)
		}
		ms = append(ms, m)
	}
	testutil.Eventually(b, 60*time.Second, "all members agree", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != n {
				return false
			}
		}
		return true
	})
	return ms
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1)+0.5)]
}

// BenchmarkOverlayPlanPropagation measures the time from the root's
// publish of a new plan to every node holding it, at 5 and 20 nodes.
// Anchor: the issue asks for the figure; memberlist's gossip interval
// (100 ms) and the direct TCP send of plans bound it from below.
func BenchmarkOverlayPlanPropagation(b *testing.B) {
	for _, n := range []int{5, 20} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ms := overlayCluster(b, n)
			pl, err := overlay.NewPlanner(overlay.PlannerConfig{DeviceClasses: map[string]map[string]float64{"tv": {"720p": 10, "360p": 2}}}, ms[0], quiet)
			if err != nil {
				b.Fatal(err)
			}
			ms[0].SetStream(overlay.StreamInfo{Name: "live/cam1", Ladder: []optimizer.Level{{Name: "720p", Kbps: 2500}, {Name: "360p", Kbps: 800}}})
			for _, m := range ms[1:] {
				m.SetDemand("live/cam1", map[string]int{"tv": 1})
			}
			testutil.Eventually(b, 20*time.Second, "root knows all demand", func() bool { return len(ms[0].Demands("live/cam1")) == n-1 })
			pl.PlanAll()
			base, _ := ms[0].Plan("live/cam1")
			var samples []time.Duration
			b.ResetTimer()
			for i := 0; i < max(b.N, 10); i++ {
				p := *base
				start := time.Now()
				ms[0].PublishPlan(&p)
				testutil.Eventually(b, 30*time.Second, "plan everywhere", func() bool {
					for _, m := range ms {
						if q, ok := m.Plan("live/cam1"); !ok || q.Version != p.Version {
							return false
						}
					}
					return true
				})
				samples = append(samples, time.Since(start))
			}
			b.ReportMetric(float64(percentile(samples, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(samples, 1).Microseconds())/1000, "max-ms")
			b.Logf("plan propagation to %d nodes over %d plans: p50 %v, max %v", n, len(samples), percentile(samples, 0.5), percentile(samples, 1))
		})
	}
}

// BenchmarkOverlayGossipOverhead measures the state-gossip payload per node
// per second at 20 nodes with one stream, demand at every node, RTT
// reports and a plan (memberlist's own probes are not counted: about one
// ping/ack pair of ~60 bytes per node per ProbeInterval on top).
func BenchmarkOverlayGossipOverhead(b *testing.B) {
	const n = 20
	ms := overlayCluster(b, n)
	pl, err := overlay.NewPlanner(overlay.PlannerConfig{DeviceClasses: map[string]map[string]float64{"tv": {"720p": 10, "360p": 2}}}, ms[0], quiet)
	if err != nil {
		b.Fatal(err)
	}
	if err := pl.Start(); err != nil {
		b.Fatal(err)
	}
	defer pl.Close()
	ms[0].SetStream(overlay.StreamInfo{Name: "live/cam1", Ladder: []optimizer.Level{{Name: "720p", Kbps: 2500}, {Name: "360p", Kbps: 800}}})
	for i, m := range ms[1:] {
		m.SetDemand("live/cam1", map[string]int{"tv": 1 + i%3})
	}
	// Settle: a steady state is what is measured (every node has probed
	// every peer once, at one probe per second).
	time.Sleep(25 * time.Second)
	var in0, out0 uint64
	for _, m := range ms {
		i, o := m.GossipBytes()
		in0, out0 = in0+i, out0+o
	}
	const window = 20 * time.Second
	time.Sleep(window)
	var in1, out1 uint64
	for _, m := range ms {
		i, o := m.GossipBytes()
		in1, out1 = in1+i, out1+o
	}
	perNode := float64(out1-out0) / n / window.Seconds()
	b.ReportMetric(perNode, "B/node/s-out")
	b.ReportMetric(float64(in1-in0)/n/window.Seconds(), "B/node/s-in")
	b.Logf("gossip state payload at %d nodes: %.0f B/node/s sent, %.0f B/node/s received (push/pull every 10 s included; %d plans published in all)",
		n, perNode, float64(in1-in0)/n/window.Seconds(), pl.Published())
}

// BenchmarkOverlayCostAgainstBaselines prints the total cost of the tree
// the planner builds for the 5-node test topology (root dear to leave,
// edges dear, two cheap interior nodes; phones at n3, a TV at n4) against
// mst and naive for the same demand, and the optimum.
func BenchmarkOverlayCostAgainstBaselines(b *testing.B) {
	prices := []float64{1, 0.01, 0.01, 0.5, 0.5}
	p := &optimizer.Problem{Root: "n0", Levels: []optimizer.Level{{Name: "source", Kbps: 2500}, {Name: "360p", Kbps: 800}}}
	for i := range prices {
		p.Nodes = append(p.Nodes, optimizer.Node{ID: fmt.Sprintf("n%d", i), TranscodeCost: 0.001, TranscodeSlots: optimizer.Slots(2)})
		for j := i + 1; j < len(prices); j++ {
			p.Links = append(p.Links, optimizer.Link{A: fmt.Sprintf("n%d", i), B: fmt.Sprintf("n%d", j),
				CostPerMbps: overlay.LinkCost(prices[i], prices[j], 100*time.Microsecond, 50*time.Millisecond)})
		}
	}
	p.Demands = []optimizer.Demand{
		{Node: "n3", Viewers: 3, Utility: map[string]float64{"source": 2.91, "360p": 2.9}},
		{Node: "n4", Viewers: 1, Utility: map[string]float64{"source": 10, "360p": 2}},
	}
	for _, alg := range []string{"primal-dual", "mst", "naive", "exact"} {
		var plan *optimizer.Plan
		var err error
		for i := 0; i < b.N; i++ {
			if plan, err = optimizer.Solve(alg, p); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("%-12s links %.4f transcodes %.4f total %.4f regret %.4f arcs %v", alg, plan.Cost.Links, plan.Cost.Transcodes, plan.Cost.Total, plan.Cost.Regret, plan.Arcs)
	}
}

// BenchmarkOverlayRelayFailover kills the parent a relay pulls from and
// measures, 10 times, the longest gap between units the local viewers see
// until the relay is fed by its fallback source (the next ancestor, which
// already has the rendition). Target of the issue: under 3 s.
func BenchmarkOverlayRelayFailover(b *testing.B) {
	clip := testutil.Clip(b, testutil.ClipOptions{Width: 640, Height: 360, FPS: 25, Seconds: 4})
	var gaps []time.Duration
	for run := 0; run < 10; run++ {
		parent := startRTSPUpstream(b, clip)
		grand := startRTSPUpstream(b, clip)
		hub := testutil.NewHub(b, media.HubConfig{}, quiet)
		r, err := overlay.NewRelay(overlay.RelayConfig{Path: "live/cam1", Sources: []string{parent.addr, grand.addr}}, hub, quiet)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Start(); err != nil {
			b.Fatal(err)
		}
		var rd *media.Reader
		testutil.Eventually(b, 15*time.Second, "relayed", func() bool {
			var err error
			rd, err = hub.Subscribe("live/cam1", "bench")
			return err == nil
		})
		arrivals := make(chan time.Time, 4096)
		go func() {
			for range rd.C() {
				select {
				case arrivals <- time.Now():
				default:
				}
			}
			close(arrivals)
		}()
		testutil.Eventually(b, 10*time.Second, "fed by the parent", func() bool { return r.Source() == parent.addr })
		time.Sleep(500 * time.Millisecond)
		killed := time.Now()
		parent.srv.Close()
		testutil.Eventually(b, 10*time.Second, "fed by the fallback", func() bool { return r.Source() == grand.addr })
		time.Sleep(2 * time.Second)
		rd.Close()
		var prev time.Time
		var gap time.Duration
		for a := range arrivals {
			if a.After(killed) && !prev.IsZero() && a.Sub(prev) > gap {
				gap = a.Sub(prev)
			}
			prev = a
		}
		gaps = append(gaps, gap)
		r.Close()
		hub.Close()
		parent.close()
		grand.close()
	}
	b.ReportMetric(float64(percentile(gaps, 0.5).Milliseconds()), "p50-gap-ms")
	b.ReportMetric(float64(percentile(gaps, 1).Milliseconds()), "max-gap-ms")
	b.Logf("relay failover over %d runs: viewer gap p50 %v, max %v (target < 3 s)", len(gaps), percentile(gaps, 0.5), percentile(gaps, 1))
}

type rtspUpstream struct {
	hub   *media.Hub
	srv   *ingest.RTSPServer
	rd    *egress.RTSPReader
	addr  string
	close func()
}

func startRTSPUpstream(b *testing.B, clip string) *rtspUpstream {
	hub := testutil.NewHub(b, media.HubConfig{}, quiet)
	rd, err := egress.NewRTSPReader(egress.RTSPReaderConfig{}, hub, quiet)
	if err != nil {
		b.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(b, "tcp"))
	srv, err := ingest.NewRTSPServer(ingest.RTSPConfig{Addr: addr, DisableUDP: true, Read: rd}, hub, quiet)
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	stop := testutil.PublishFile(b, hub, "live/cam1", clip, false)
	u := &rtspUpstream{hub: hub, srv: srv, rd: rd, addr: addr}
	u.close = func() { stop(); srv.Close(); rd.Close(); hub.Close() }
	return u
}
