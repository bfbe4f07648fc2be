package optimizer

import (
	"fmt"
	"sort"
	"strings"
)

// solver solves a compiled problem.
type solver func(in *instance) (*Plan, error)

var solvers = map[string]solver{
	"primal-dual": func(in *instance) (*Plan, error) { return primalDual(in), nil },
	"mst":         func(in *instance) (*Plan, error) { return mst(in), nil },
	"naive":       func(in *instance) (*Plan, error) { return naive(in), nil },
	"spt":         func(in *instance) (*Plan, error) { return spt(in), nil },
	"exact":       exact,
}

// Algorithms lists the names Solve accepts.
func Algorithms() []string {
	names := make([]string, 0, len(solvers))
	for n := range solvers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Solve validates p, runs the named algorithm and returns its plan with the
// cost block filled in by Evaluate.
func Solve(algorithm string, p *Problem) (*Plan, error) {
	s, ok := solvers[algorithm]
	if !ok {
		return nil, fmt.Errorf("unknown algorithm %q (one of %s)", algorithm, strings.Join(Algorithms(), ", "))
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	plan, err := s(compile(p))
	if err != nil {
		return nil, err
	}
	c, err := p.Evaluate(plan)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", algorithm, err) // a bug: plans name only what the problem has
	}
	plan.Cost = &c
	return plan, nil
}
