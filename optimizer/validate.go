package optimizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// MaxLevels is the longest ladder the solvers accept: the tree dynamic
// programme keeps a table over subsets of levels, 2^len(Levels) entries per node.
const MaxLevels = 8

// MaxNumber bounds every number of a problem (kbps, costs, utilities,
// viewers), so that every cost the solvers add up stays finite.
const MaxNumber = 1e9

// FieldError reports an invalid field of a problem or a plan.
type FieldError struct {
	Field string // e.g. "links[3].b"
	Msg   string // e.g. `unknown node "n9"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ParseProblem decodes a problem from JSON and validates it. Unknown fields
// are refused, so that a misspelt field is not silently ignored.
func ParseProblem(data []byte) (*Problem, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Problem
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("problem: %w", err)
	}
	if dec.More() {
		return nil, errors.New("problem: trailing data after the JSON object")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the problem against optimizer/problem-and-plan.md and returns
// the first error found, naming the field: repeated ids, unknown nodes, self-links,
// repeated pairs, a ladder whose kbps is not strictly decreasing, negative,
// non-finite or huge (above MaxNumber) numbers, a root without links.
func (p *Problem) Validate() error {
	if len(p.Levels) == 0 {
		return fieldErr("levels", "at least one level is required")
	}
	if len(p.Levels) > MaxLevels {
		return fieldErr("levels", "%d levels, at most %d are supported", len(p.Levels), MaxLevels)
	}
	levelNames := make(map[string]int, len(p.Levels))
	for i, l := range p.Levels {
		f := lazy("levels[%d]", i)
		if l.Name == "" {
			return fieldErr(f(".name"), "empty")
		}
		if j, dup := levelNames[l.Name]; dup {
			return fieldErr(f(".name"), "%q repeats levels[%d].name", l.Name, j)
		}
		levelNames[l.Name] = i
		if err := checkNumber(f, ".kbps", l.Kbps); err != nil {
			return err
		}
		if i > 0 && l.Kbps >= p.Levels[i-1].Kbps {
			return fieldErr(f(".kbps"), "%v not below levels[%d].kbps %v", l.Kbps, i-1, p.Levels[i-1].Kbps)
		}
	}
	if len(p.Nodes) == 0 {
		return fieldErr("nodes", "at least one node is required")
	}
	ids := make(map[string]int, len(p.Nodes))
	for i, n := range p.Nodes {
		f := lazy("nodes[%d]", i)
		if n.ID == "" {
			return fieldErr(f(".id"), "empty")
		}
		if j, dup := ids[n.ID]; dup {
			return fieldErr(f(".id"), "%q repeats nodes[%d].id", n.ID, j)
		}
		ids[n.ID] = i
		if err := checkNumber(f, ".transcode_cost", n.TranscodeCost); err != nil {
			return err
		}
		if n.TranscodeSlots != nil && *n.TranscodeSlots < 0 {
			return fieldErr(f(".transcode_slots"), "negative (%d)", *n.TranscodeSlots)
		}
	}
	if p.Root == "" {
		return fieldErr("root", "empty")
	}
	if _, ok := ids[p.Root]; !ok {
		return fieldErr("root", "unknown node %q", p.Root)
	}
	type pair struct{ a, b string }
	pairs := make(map[pair]int, len(p.Links))
	rootLinked := false
	for i, l := range p.Links {
		f := lazy("links[%d]", i)
		if _, ok := ids[l.A]; !ok {
			return fieldErr(f(".a"), "unknown node %q", l.A)
		}
		if _, ok := ids[l.B]; !ok {
			return fieldErr(f(".b"), "unknown node %q", l.B)
		}
		if l.A == l.B {
			return fieldErr(f(""), "joins node %q to itself", l.A)
		}
		k := pair{l.A, l.B}
		if k.a > k.b {
			k.a, k.b = k.b, k.a
		}
		if j, dup := pairs[k]; dup {
			return fieldErr(f(""), "repeats the pair %q–%q of links[%d]", l.A, l.B, j)
		}
		pairs[k] = i
		if err := checkNumber(f, ".cost_per_mbps", l.CostPerMbps); err != nil {
			return err
		}
		if l.A == p.Root || l.B == p.Root {
			rootLinked = true
		}
	}
	if len(p.Nodes) > 1 && !rootLinked {
		return fieldErr("root", "node %q has no link: disconnected from every other node", p.Root)
	}
	for i, d := range p.Demands {
		f := lazy("demands[%d]", i)
		if _, ok := ids[d.Node]; !ok {
			return fieldErr(f(".node"), "unknown node %q", d.Node)
		}
		if d.Viewers < 0 {
			return fieldErr(f(".viewers"), "negative (%d)", d.Viewers)
		}
		if d.Viewers > MaxNumber {
			return fieldErr(f(".viewers"), "%d above the supported %v", d.Viewers, MaxNumber)
		}
		if err := checkNumber(f, ".last_mile_cost_per_mbps", d.LastMileCostPerMbps); err != nil {
			return err
		}
		for name, u := range d.Utility {
			if _, ok := levelNames[name]; !ok {
				return fieldErr(f(fmt.Sprintf(".utility[%q]", name)), "unknown level")
			}
			if err := checkNumber(f, fmt.Sprintf(".utility[%q]", name), u); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkNumber(f func(string) string, suffix string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fieldErr(f(suffix), "not a finite number")
	}
	if v < 0 {
		return fieldErr(f(suffix), "negative (%v)", v)
	}
	if v > MaxNumber {
		return fieldErr(f(suffix), "%v above the supported %v", v, MaxNumber)
	}
	return nil
}

// lazy returns a builder of field names under an indexed entry, formatted
// only when an error needs one (problems have tens of thousands of links).
func lazy(format string, i int) func(string) string {
	return func(suffix string) string { return fmt.Sprintf(format, i) + suffix }
}
