package optimizer_test

import (
	"encoding/json"
	"testing"

	"github.com/gradient-cdn/gradient/optimizer"
)

// FuzzCheckPlan: a plan from outside (a peer's gossiped plan, a plan file)
// is checked against a problem without panicking, whatever its arcs,
// levels and demand indices; a plan decoded and re-encoded is stable; a
// plan that passes Check can be evaluated, and the solver's own plan
// passes Check.
func FuzzCheckPlan(f *testing.F) {
	p, err := optimizer.ParseProblem([]byte(formatProblem))
	if err != nil {
		f.Fatal(err)
	}
	sol, err := optimizer.Solve("primal-dual", p)
	if err != nil {
		f.Fatal(err)
	}
	if err := p.Check(sol); err != nil {
		f.Fatalf("the solver's plan fails Check: %v", err)
	}
	b, _ := json.Marshal(sol)
	f.Add(b)
	f.Add([]byte(`{"arcs":[{"from":"n0","to":"n0","levels":["1080p"]}],"served":[{"demand":-1,"level":"x"}]}`))
	f.Add([]byte(`{"arcs":[{"from":"n0","to":"n1","levels":[]}],"transcodes":[{"node":"n1","from":"1080p","to":"1080p"}],"served":[{"demand":9223372036854775807}]}`))
	f.Add([]byte(`{"cost":{"links":1e308,"total":-1e308}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var plan optimizer.Plan
		if json.Unmarshal(b, &plan) != nil {
			return
		}
		b1, err := json.Marshal(&plan)
		if err != nil {
			return // NaN cannot come from JSON; nothing else fails
		}
		var again optimizer.Plan
		if err := json.Unmarshal(b1, &again); err != nil {
			t.Fatalf("re-encoded plan does not decode: %v", err)
		}
		if b2, _ := json.Marshal(&again); string(b2) != string(b1) {
			t.Fatalf("plan not stable:\n%s\n%s", b1, b2)
		}
		if p.Check(&plan) != nil {
			return
		}
		if _, err := p.Evaluate(&plan); err != nil {
			t.Fatalf("a plan that passes Check does not evaluate: %v", err)
		}
	})
}
