package optimizer_test

import (
	"testing"

	"github.com/gradient-cdn/gradient/optimizer"
)

// FuzzParseProblem: reading a problem never panics, and a problem that is
// accepted is solved into a feasible plan.
func FuzzParseProblem(f *testing.F) {
	f.Add([]byte(formatProblem))
	f.Add([]byte(`{"root":"a","levels":[{"name":"x","kbps":1}],"nodes":[{"id":"a"}],"links":[],"demands":[{"node":"a","viewers":3,"utility":{"x":1}}]}`))
	f.Add([]byte(`{"root":"a","levels":[{"name":"x","kbps":0}],"nodes":[{"id":"a"},{"id":"b","transcode_slots":0}],"links":[{"a":"a","b":"b","cost_per_mbps":0}],"demands":[]}`))
	f.Add([]byte(`{"root":"a","levels":[],"nodes":[]}`))
	f.Add([]byte(`{"root":"a","levels":[{"name":"x","kbps":1e308},{"name":"y","kbps":1e-308}],"nodes":[{"id":"a"}],"demands":[{"node":"a","viewers":9223372036854775807,"utility":{"x":1e308}}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"root": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := optimizer.ParseProblem(data)
		if err != nil {
			return
		}
		if len(p.Nodes) > 60 || len(p.Links) > 600 || len(p.Demands) > 600 {
			return // keep each input fast
		}
		plan, err := optimizer.Solve("primal-dual", p)
		if err != nil {
			t.Fatalf("valid problem, Solve: %v", err)
		}
		if err := p.Check(plan); err != nil {
			t.Fatalf("infeasible plan: %v", err)
		}
	})
}
