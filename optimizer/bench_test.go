package optimizer_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/optimizer/sim"
)

func benchSolve(b *testing.B, p *optimizer.Problem, anchorMs float64) {
	b.Helper()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := optimizer.Solve("primal-dual", p); err != nil {
			b.Fatal(err)
		}
	}
	ms := float64(time.Since(start).Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(ms, "ms/solve")
	if anchorMs > 0 {
		b.ReportMetric(anchorMs, "anchor-ms")
	}
}

// BenchmarkPrimalDual300Complete: 300 nodes, complete graph of links, 2,000
// demand groups, 4 levels. Anchor: under 100 ms (the figure).
func BenchmarkPrimalDual300Complete(b *testing.B) {
	p := sim.Complete(rand.New(rand.NewPCG(300, 2000)), 300, 2000, sim.DefaultConfig())
	benchSolve(b, p, 100)
}

// BenchmarkPrimalDual5000x20: 5,000 nodes with 20 links each on average
// (preferential attachment, m = 10), 4 levels. Anchor: under 5 s.
func BenchmarkPrimalDual5000x20(b *testing.B) {
	cfg := sim.DefaultConfig()
	cfg.AttachEdges = 10
	p, err := sim.Internet(rand.New(rand.NewPCG(5000, 20)), 5000, cfg)
	if err != nil {
		b.Fatal(err)
	}
	benchSolve(b, p, 5000)
}

// BenchmarkPrimalDualScaling prints how primal-dual's time grows with the
// size of Internet-like problems (m = 2 and m = 10).
func BenchmarkPrimalDualScaling(b *testing.B) {
	for _, m := range []int{2, 10} {
		for _, n := range []int{100, 300, 1000, 3000, 5000} {
			b.Run(fmt.Sprintf("n=%d/m=%d", n, m), func(b *testing.B) {
				cfg := sim.DefaultConfig()
				cfg.AttachEdges = m
				p, err := sim.Internet(rand.New(rand.NewPCG(uint64(n), uint64(m))), n, cfg)
				if err != nil {
					b.Fatal(err)
				}
				benchSolve(b, p, 0)
			})
		}
	}
}
