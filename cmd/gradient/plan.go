package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gradient-cdn/gradient/optimizer"
)

func init() {
	register("plan", "solve a delivery problem file and print the plan", runPlan)
}

const planUsage = `usage: gradient plan [--algorithm NAME] PROBLEM.json

Reads a delivery problem (see optimizer/problem-and-plan.md; "-" reads standard input),
solves it and prints the plan JSON with its cost block. Algorithms: %s.

flags:
`

// runPlan implements `gradient plan`.
func runPlan(ctx context.Context, args []string) error {
	return plan(args, os.Stdin, os.Stdout, os.Stderr)
}

func plan(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	algorithm := fs.String("algorithm", "primal-dual", "algorithm: "+strings.Join(optimizer.Algorithms(), ", "))
	fs.Usage = func() {
		fmt.Fprintf(stderr, planUsage, strings.Join(optimizer.Algorithms(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("expected one problem file, got %d arguments", fs.NArg())
	}
	name := fs.Arg(0)
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return err
	}
	p, err := optimizer.ParseProblem(data)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	pl, err := optimizer.Solve(*algorithm, p)
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(pl, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}
