package optimizer

// LowerBound returns a lower bound on the regret of every feasible plan of p,
// so that an algorithm's ratio can be quoted where exact cannot run.
//
// Relax the problem by making transcoding free and unlimited: a node whose
// best level is q can then serve its demands at any level q..L-1, worth
// V_v(q) = −serve(v, {q..L-1}), and an arc into it costs at least
// cost·mbps(q). Writing mbps(q) = Σ_{k≥q} Δ_k (Δ_k = mbps(k) − mbps(k+1))
// splits the relaxed regret into L prize-collecting Steiner tree problems
// that share nothing but the constraint that their trees nest:
//
//	regret ≥ C + Σ_k [ Δ_k·cost(T_k) + Σ_{v∉T_k} π_k(v) ]
//
// with π_k(v) = V_v(k) − V_v(k+1) and C = Σ viewers·max utility − Σ_v V_v(0).
// Dropping the nesting and bounding each layer by the dual Σ y of its
// Goemans–Williamson growth (a feasible solution of the dual of its LP
// relaxation) gives the bound.
func LowerBound(p *Problem) (float64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	in := compile(p)
	// C; the root is in every layer, so its prizes are never forgone.
	lb := in.maxUtil
	for v := 0; v < in.n; v++ {
		lb -= in.value(v, 0)
	}
	cost := make([]float64, len(in.edges))
	prize := make([]float64, in.n)
	for k := 0; k < in.L; k++ {
		delta := in.mbps[k]
		if k+1 < in.L {
			delta -= in.mbps[k+1]
		}
		for e, ed := range in.edges {
			cost[e] = ed.cost * delta
		}
		for v := range prize {
			prize[v] = in.value(v, k)
			if k+1 < in.L {
				prize[v] -= in.value(v, k+1)
			}
		}
		prize[in.root] = 0
		_, dual := growForest(in, cost, prize)
		lb += dual
	}
	return max(lb, 0), nil
}
