package sim

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

func TestGenerationIsReproducible(t *testing.T) {
	gen := func() []byte {
		p, err := Internet(rand.New(rand.NewPCG(5, 6)), 60, DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("generated problem invalid: %v", err)
		}
		b, _ := json.Marshal(p)
		return b
	}
	if string(gen()) != string(gen()) {
		t.Error("the same seed generated two different problems")
	}
}

func TestFigure1OrderingHoldsOnSmallRun(t *testing.T) {
	points, err := Figure1(3, []int{10, 40}, 4, DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != 2*len(Figure1Algorithms) {
		t.Fatalf("%d points, want %d", len(points), 2*len(Figure1Algorithms))
	}
	for i := 0; i < len(points); i += len(Figure1Algorithms) {
		pd := points[i]
		if pd.Algorithm != "primal-dual" || len(pd.Totals) != 4 {
			t.Fatalf("point %d: %+v", i, pd)
		}
		for _, other := range points[i+1 : i+len(Figure1Algorithms)] {
			if pd.Mean > other.Mean {
				t.Errorf("size %d: primal-dual mean total %.3f above %s's %.3f", pd.Size, pd.Mean, other.Algorithm, other.Mean)
			}
		}
	}
}

func TestRatioStudiesRun(t *testing.T) {
	st, err := RatioVsExact(1, 40, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.N != 40 || st.Mean < 1-1e-9 || st.Max < st.P95 || st.P95 < 1-1e-9 {
		t.Errorf("vs exact: %v; a ratio to the optimum is at least 1", st)
	}
	lb, err := RatioVsLowerBound(1, []int{20}, 3, DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lb) != 1 || lb[0].Mean < 1-1e-9 {
		t.Errorf("vs lower bound: %v; the bound is below every plan's regret", lb)
	}
}
