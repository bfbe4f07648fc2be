package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/gradient-cdn/gradient/optimizer"
)

// Figure1Algorithms are the algorithms compared in Figure 1, Gradient's first.
var Figure1Algorithms = []string{"primal-dual", "mst", "naive", "spt"}

// Progress is told how many of total steps are done and what runs now.
type Progress func(done, total int, what string)

// Point is one algorithm at one system size: the totals of its trials and
// their mean and (population) standard deviation.
type Point struct {
	Size      int
	Algorithm string
	Totals    []float64
	Mean, Std float64
}

// Figure1 reproduces the GRADIENT paper's Figure 1: for every size, trials
// Internet-like problems (trial i of size n is generated from the PCG stream
// (seed, n·1000+i), so any trial can be regenerated alone), each solved by
// every algorithm of Figure1Algorithms; it returns one Point per size and
// algorithm, in that order. Every plan is checked for feasibility.
func Figure1(seed uint64, sizes []int, trials int, cfg Config, progress Progress) ([]Point, error) {
	var points []Point
	total, done := len(sizes)*trials, 0
	for _, n := range sizes {
		totals := make([][]float64, len(Figure1Algorithms))
		for trial := 0; trial < trials; trial++ {
			if progress != nil {
				progress(done, total, fmt.Sprintf("size %d trial %d/%d", n, trial+1, trials))
			}
			p, err := Internet(rand.New(rand.NewPCG(seed, uint64(n*1000+trial))), n, cfg)
			if err != nil {
				return nil, err
			}
			for i, alg := range Figure1Algorithms {
				plan, err := optimizer.Solve(alg, p)
				if err != nil {
					return nil, fmt.Errorf("size %d trial %d %s: %w", n, trial, alg, err)
				}
				if err := p.Check(plan); err != nil {
					return nil, fmt.Errorf("size %d trial %d %s: infeasible plan: %w", n, trial, alg, err)
				}
				totals[i] = append(totals[i], plan.Cost.Total)
			}
			done++
		}
		for i, alg := range Figure1Algorithms {
			m, s := meanStd(totals[i])
			points = append(points, Point{Size: n, Algorithm: alg, Totals: totals[i], Mean: m, Std: s})
		}
	}
	if progress != nil {
		progress(total, total, "done")
	}
	return points, nil
}

// Stats summarises ratios.
type Stats struct {
	N              int
	Mean, P95, Max float64
}

func (s Stats) String() string {
	return fmt.Sprintf("n=%d mean=%.4f p95=%.4f max=%.4f", s.N, s.Mean, s.P95, s.Max)
}

func summarise(r []float64) Stats {
	if len(r) == 0 {
		return Stats{}
	}
	sorted := append([]float64(nil), r...)
	sort.Float64s(sorted)
	m, _ := meanStd(sorted)
	idx := int(math.Ceil(0.95*float64(len(sorted)))) - 1
	return Stats{N: len(sorted), Mean: m, P95: sorted[max(idx, 0)], Max: sorted[len(sorted)-1]}
}

// Ratio is regret(plan)/regret(reference), 1 when both are 0 (a plan that
// matches a zero-regret optimum) and +Inf when only the reference is 0.
func Ratio(regret, reference float64) float64 {
	const eps = 1e-9
	switch {
	case reference > eps:
		return regret / reference
	case regret <= eps:
		return 1
	default:
		return math.Inf(1)
	}
}

// RatioVsExact solves count random small problems (Small with 8 nodes and 3
// levels, problem i from the PCG stream (seed, i)) with primal-dual and exact
// and summarises regret(primal-dual)/regret(exact).
func RatioVsExact(seed uint64, count int, progress Progress) (Stats, error) {
	var ratios []float64
	for i := 0; i < count; i++ {
		if progress != nil && i%10 == 0 {
			progress(i, count, fmt.Sprintf("exact %d/%d", i+1, count))
		}
		p := Small(rand.New(rand.NewPCG(seed, uint64(i))), optimizer.ExactMaxNodes, optimizer.ExactMaxLevels)
		pd, err := optimizer.Solve("primal-dual", p)
		if err != nil {
			return Stats{}, err
		}
		ex, err := optimizer.Solve("exact", p)
		if err != nil {
			return Stats{}, err
		}
		ratios = append(ratios, Ratio(pd.Cost.Regret, ex.Cost.Regret))
	}
	if progress != nil {
		progress(count, count, "done")
	}
	return summarise(ratios), nil
}

// RatioVsLowerBound solves trials Internet-like problems of every size with
// primal-dual and summarises, per size, regret(primal-dual)/LowerBound: an
// upper bound on the true approximation ratio.
func RatioVsLowerBound(seed uint64, sizes []int, trials int, cfg Config, progress Progress) ([]Stats, error) {
	var out []Stats
	total, done := len(sizes)*trials, 0
	for _, n := range sizes {
		var ratios []float64
		for trial := 0; trial < trials; trial++ {
			if progress != nil {
				progress(done, total, fmt.Sprintf("bound size %d trial %d/%d", n, trial+1, trials))
			}
			p, err := Internet(rand.New(rand.NewPCG(seed^0x5eed, uint64(n*1000+trial))), n, cfg)
			if err != nil {
				return nil, err
			}
			pd, err := optimizer.Solve("primal-dual", p)
			if err != nil {
				return nil, err
			}
			lb, err := optimizer.LowerBound(p)
			if err != nil {
				return nil, err
			}
			ratios = append(ratios, Ratio(pd.Cost.Regret, lb))
			done++
		}
		out = append(out, summarise(ratios))
	}
	if progress != nil {
		progress(total, total, "done")
	}
	return out, nil
}

func meanStd(xs []float64) (mean, std float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(xs)))
}
