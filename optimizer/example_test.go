package optimizer_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/optimizer"
)

// The problem and plan of optimizer/problem-and-plan.md.
const formatProblem = `{
  "root": "n0",
  "levels": [
    {"name": "1080p", "kbps": 4500},
    {"name": "720p",  "kbps": 2500},
    {"name": "360p",  "kbps": 800}
  ],
  "nodes": [
    {"id": "n0"},
    {"id": "n1", "transcode_cost": 0.5, "transcode_slots": 2}
  ],
  "links": [
    {"a": "n0", "b": "n1", "cost_per_mbps": 0.02}
  ],
  "demands": [
    {"node": "n1", "viewers": 120, "last_mile_cost_per_mbps": 0.01,
     "utility": {"1080p": 0.05, "720p": 0.045, "360p": 0.03}}
  ]
}`

const formatPlan = `{
  "algorithm": "primal-dual",
  "arcs": [{"from": "n0", "to": "n1", "levels": ["360p"]}],
  "transcodes": [{"node": "n0", "from": "1080p", "to": "360p"}],
  "served": [{"demand": 0, "level": "360p"}],
  "cost": {"links": 0.016, "transcodes": 0, "last_mile": 0.96, "utility": 3.6,
           "total": -2.624, "regret": 3.376}
}`

func mustProblem(t testing.TB, s string) *optimizer.Problem {
	t.Helper()
	p, err := optimizer.ParseProblem([]byte(s))
	if err != nil {
		t.Fatalf("ParseProblem: %v", err)
	}
	return p
}

func TestEvaluateReproducesPlanFormatExample(t *testing.T) {
	p := mustProblem(t, formatProblem)
	var plan optimizer.Plan
	if err := json.Unmarshal([]byte(formatPlan), &plan); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(&plan); err != nil {
		t.Fatalf("the example plan is feasible, Check says: %v", err)
	}
	c, err := p.Evaluate(&plan)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(c.Total-(-2.624)) > 1e-12 || math.Abs(c.Regret-3.376) > 1e-12 {
		t.Errorf("Evaluate = total %v regret %v, optimizer/problem-and-plan.md says -2.624 and 3.376", c.Total, c.Regret)
	}
	if err := optimizer.CostsMatch(*plan.Cost, c); err != nil {
		t.Errorf("the example's cost block: %v", err)
	}
}

func TestAlgorithmsFindThePlanFormatOptimum(t *testing.T) {
	p := mustProblem(t, formatProblem)
	for _, alg := range []string{"primal-dual", "exact", "spt"} {
		plan, err := optimizer.Solve(alg, p)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(plan.Cost.Total-(-2.624)) > 1e-9 {
			t.Errorf("%s: total %v, the optimum is -2.624 (root downscales to 360p)", alg, plan.Cost.Total)
		}
	}
}

// TestPlanFormatDocumentShowsTheTestedExample keeps the document and the
// tests on one example: the JSON blocks of optimizer/problem-and-plan.md are
// formatProblem and formatPlan, and the figures asserted here are in it.
func TestPlanFormatDocumentShowsTheTestedExample(t *testing.T) {
	doc, err := os.ReadFile("problem-and-plan.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, part := range strings.Split(string(doc), "```json\n")[1:] {
		blocks = append(blocks, part[:strings.Index(part, "```")])
	}
	if len(blocks) < 2 {
		t.Fatalf("problem-and-plan.md has %d JSON blocks, want the problem and the plan", len(blocks))
	}
	for i, want := range []string{formatProblem, formatPlan} {
		var got, exp any
		if err := json.Unmarshal([]byte(blocks[i]), &got); err != nil {
			t.Fatalf("problem-and-plan.md JSON block %d: %v", i, err)
		}
		if err := json.Unmarshal([]byte(want), &exp); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("problem-and-plan.md JSON block %d differs from the tested example:\n%s", i, blocks[i])
		}
	}
	for _, figure := range []string{"−2.624", "3.376", "0.016", "0.96", "3.6"} {
		if !strings.Contains(string(doc), figure) {
			t.Errorf("problem-and-plan.md does not show the example's %s", figure)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		name, edit, want string
	}{
		{"unknown link end", `"links": [{"a": "n0", "b": "n9", "cost_per_mbps": 1}]`, `links[0].b: unknown node "n9"`},
		{"kbps not decreasing", `"levels": [{"name": "a", "kbps": 800}, {"name": "b", "kbps": 900}]`, `levels[1].kbps: 900 not below levels[0].kbps 800`},
		{"negative link cost", `"links": [{"a": "n0", "b": "n1", "cost_per_mbps": -1}]`, `links[0].cost_per_mbps: negative`},
		{"duplicate node", `"nodes": [{"id": "n0"}, {"id": "n0"}]`, `nodes[1].id: "n0" repeats nodes[0].id`},
		{"self link", `"links": [{"a": "n1", "b": "n1", "cost_per_mbps": 1}, {"a": "n0", "b": "n1", "cost_per_mbps": 1}]`, `links[0]: joins node "n1" to itself`},
		{"repeated pair", `"links": [{"a": "n0", "b": "n1", "cost_per_mbps": 1}, {"a": "n1", "b": "n0", "cost_per_mbps": 2}]`, `links[1]: repeats the pair`},
		{"disconnected root", `"links": []`, `root: node "n0" has no link`},
		{"unknown root", `"root": "x"`, `root: unknown node "x"`},
		{"unknown demand node", `"demands": [{"node": "zz", "viewers": 1, "utility": {}}]`, `demands[0].node: unknown node "zz"`},
		{"unknown utility level", `"demands": [{"node": "n1", "viewers": 1, "utility": {"4k": 1}}]`, `demands[0].utility["4k"]: unknown level`},
		{"negative viewers", `"demands": [{"node": "n1", "viewers": -3, "utility": {}}]`, `demands[0].viewers: negative`},
		{"negative slots", `"nodes": [{"id": "n0"}, {"id": "n1", "transcode_slots": -1}]`, `nodes[1].transcode_slots: negative`},
		{"unknown field", `"linkz": []`, `unknown field "linkz"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := optimizer.ParseProblem([]byte(withField(t, c.edit)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// withField replaces (or adds) one top-level field of formatProblem.
func withField(t *testing.T, field string) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(formatProblem), &m); err != nil {
		t.Fatal(err)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal([]byte("{"+field+"}"), &f); err != nil {
		t.Fatal(err)
	}
	for k, v := range f {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestCheckNamesTheRuleBroken(t *testing.T) {
	p := mustProblem(t, formatProblem)
	cases := []struct {
		name, plan, want string
	}{
		{"arc into root", `{"arcs": [{"from": "n1", "to": "n0", "levels": ["1080p"]}]}`, "rule 1"},
		{"no link", `{"arcs": [{"from": "n0", "to": "n0", "levels": ["1080p"]}]}`, "rule 1"},
		{"empty arc", `{"arcs": [{"from": "n0", "to": "n1", "levels": []}]}`, "rule 1: carries no level"},
		{"level twice", `{"arcs": [{"from": "n0", "to": "n1", "levels": ["1080p", "1080p"]}]}`, "rule 1: level \"1080p\" carried twice"},
		{"root lacks level", `{"arcs": [{"from": "n0", "to": "n1", "levels": ["720p"]}]}`, "rule 3"},
		{"upscale", `{"transcodes": [{"node": "n0", "from": "360p", "to": "1080p"}]}`, "rule 4"},
		{"produced twice", `{"transcodes": [{"node": "n0", "from": "1080p", "to": "720p"}, {"node": "n0", "from": "1080p", "to": "720p"}]}`, "rule 4"},
		{"over slots", `{"arcs": [{"from": "n0", "to": "n1", "levels": ["1080p"]}], "transcodes": [{"node": "n1", "from": "1080p", "to": "720p"}, {"node": "n1", "from": "1080p", "to": "360p"}, {"node": "n1", "from": "720p", "to": "360p"}]}`, "rule 4"},
		{"transcode off tree", `{"transcodes": [{"node": "n1", "from": "1080p", "to": "720p"}]}`, "rule 4"},
		{"served without level", `{"served": [{"demand": 0, "level": "1080p"}]}`, "rule 5"},
		{"served twice", `{"arcs": [{"from": "n0", "to": "n1", "levels": ["1080p"]}], "served": [{"demand": 0, "level": "1080p"}, {"demand": 0, "level": "1080p"}]}`, "rule 5"},
		{"wrong cost block", `{"arcs": [{"from": "n0", "to": "n1", "levels": ["1080p"]}], "cost": {"links": 1}}`, "cost.links"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var plan optimizer.Plan
			if err := json.Unmarshal([]byte(c.plan), &plan); err != nil {
				t.Fatal(err)
			}
			err := p.Check(&plan)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Check = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestSolveRefusesUnknownAlgorithmAndLargeExact(t *testing.T) {
	p := mustProblem(t, formatProblem)
	if _, err := optimizer.Solve("magic", p); err == nil || !strings.Contains(err.Error(), "primal-dual") {
		t.Errorf("unknown algorithm: %v, want an error listing the algorithms", err)
	}
	big := &optimizer.Problem{Root: "n0", Levels: p.Levels}
	for i := 0; i < optimizer.ExactMaxNodes+1; i++ {
		big.Nodes = append(big.Nodes, optimizer.Node{ID: fmt.Sprintf("n%d", i)})
		if i > 0 {
			big.Links = append(big.Links, optimizer.Link{A: "n0", B: fmt.Sprintf("n%d", i), CostPerMbps: 1})
		}
	}
	if _, err := optimizer.Solve("exact", big); err == nil || !strings.Contains(err.Error(), "at most 8") {
		t.Errorf("exact on 9 nodes: %v, want a refusal", err)
	}
}

func ExampleSolve() {
	p, err := optimizer.ParseProblem([]byte(formatProblem))
	if err != nil {
		panic(err)
	}
	plan, err := optimizer.Solve("primal-dual", p)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s→%s %v, total %.3f, regret %.3f\n", plan.Arcs[0].From, plan.Arcs[0].To, plan.Arcs[0].Levels, plan.Cost.Total, plan.Cost.Regret)
	// Output: n0→n1 [360p], total -2.624, regret 3.376
}
