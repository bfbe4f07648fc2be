package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/optimizer/sim"
)

func init() {
	register("sim", "reproduce the optimizer's simulation (Figure 1, --ratio, --speed)", runSim)
}

const simUsage = `usage: gradient sim [flags]

Without --ratio or --speed: reproduces the GRADIENT paper's Figure 1. For every
size, --trials Internet-like problems (preferential attachment, m=2; phones,
laptops and TVs; see optimizer/sim) are solved by primal-dual, mst, naive and
spt; the mean ± one standard deviation of the total cost per size is plotted
to DIR/figure1.png and written to DIR/figure1.csv, and a table is printed.

--ratio measures primal-dual's approximation ratio on regret: against exact on
--count random small problems, and against the lower bound on mid-size ones.
--speed prints primal-dual's solve time against problem size.

flags:
`

// runSim implements `gradient sim`.
func runSim(ctx context.Context, args []string) error {
	return simulate(ctx, args, os.Stdout, os.Stderr)
}

func simulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 1, "random seed: the same seed gives the same problems")
	trials := fs.Int("trials", 25, "trials per size")
	sizesFlag := fs.String("sizes", "10,25,50,100,150,200,250,300", "system sizes (nodes), comma-separated")
	out := fs.String("out", "sim-out", "output directory of figure1.png and figure1.csv")
	ratio := fs.Bool("ratio", false, "measure the approximation ratio instead of Figure 1")
	count := fs.Int("count", 500, "with --ratio: small problems compared against exact")
	boundSizes := fs.String("bound-sizes", "20,50,100,200", "with --ratio: sizes compared against the lower bound")
	speed := fs.Bool("speed", false, "print primal-dual's solve time against size instead of Figure 1")
	fs.Usage = func() { fmt.Fprint(stderr, simUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	sizes, err := parseSizes("--sizes", *sizesFlag)
	if err != nil {
		return err
	}
	if *trials < 1 {
		return fmt.Errorf("--trials: %d, want at least 1", *trials)
	}
	bar := newProgressBar(stderr)
	switch {
	case *ratio:
		bs, err := parseSizes("--bound-sizes", *boundSizes)
		if err != nil {
			return err
		}
		return ratioStudy(ctx, *seed, *count, bs, *trials, stdout, bar)
	case *speed:
		return speedTable(ctx, *seed, stdout)
	}
	points, err := sim.Figure1(*seed, sizes, *trials, sim.DefaultConfig(), bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(*out, "figure1.csv"), points); err != nil {
		return err
	}
	if err := plotFigure1(filepath.Join(*out, "figure1.png"), points); err != nil {
		return err
	}
	printFigure1(stdout, points)
	fmt.Fprintf(stdout, "wrote %s and %s\n", filepath.Join(*out, "figure1.png"), filepath.Join(*out, "figure1.csv"))
	return nil
}

func parseSizes(flagName, s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return nil, fmt.Errorf("%s: %q is not a size of at least 2 nodes", flagName, f)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

func ratioStudy(ctx context.Context, seed uint64, count int, sizes []int, trials int, stdout io.Writer, bar *progressBar) error {
	st, err := sim.RatioVsExact(seed, count, bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "primal-dual vs exact (regret ratio, %d random problems of ≤%d nodes, ≤%d levels):\n  mean %.4f  p95 %.4f  max %.4f\n",
		st.N, optimizer.ExactMaxNodes, optimizer.ExactMaxLevels, st.Mean, st.P95, st.Max)
	if err := ctx.Err(); err != nil {
		return err
	}
	lbs, err := sim.RatioVsLowerBound(seed, sizes, trials, sim.DefaultConfig(), bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "primal-dual vs lower bound (regret / LowerBound, an upper bound on the true ratio):")
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\ttrials\tmean\tp95\tmax\t")
	for i, s := range lbs {
		fmt.Fprintf(tw, "%d\t%d\t%.4f\t%.4f\t%.4f\t\n", sizes[i], s.N, s.Mean, s.P95, s.Max)
	}
	return tw.Flush()
}

func speedTable(ctx context.Context, seed uint64, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "problem\tnodes\tlinks\tgroups\tprimal-dual\t")
	run := func(label string, p *optimizer.Problem) error {
		start := time.Now()
		if _, err := optimizer.Solve("primal-dual", p); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%v\t\n", label, len(p.Nodes), len(p.Links), len(p.Demands), time.Since(start).Round(time.Microsecond))
		return nil
	}
	cfg := sim.DefaultConfig()
	if err := run("complete", sim.Complete(rand.New(rand.NewPCG(seed, 300)), 300, 2000, cfg)); err != nil {
		return err
	}
	for _, m := range []int{2, 10} {
		cfg.AttachEdges = m
		for _, n := range []int{100, 300, 1000, 2000, 5000} {
			if err := ctx.Err(); err != nil {
				return err
			}
			p, err := sim.Internet(rand.New(rand.NewPCG(seed, uint64(n))), n, cfg)
			if err != nil {
				return err
			}
			if err := run(fmt.Sprintf("pref. attachment m=%d", m), p); err != nil {
				return err
			}
		}
	}
	return tw.Flush()
}

func printFigure1(w io.Writer, points []sim.Point) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "nodes\t")
	for _, a := range sim.Figure1Algorithms {
		fmt.Fprintf(tw, "%s\t", a)
	}
	fmt.Fprintln(tw)
	for i := 0; i < len(points); i += len(sim.Figure1Algorithms) {
		fmt.Fprintf(tw, "%d\t", points[i].Size)
		for _, p := range points[i : i+len(sim.Figure1Algorithms)] {
			fmt.Fprintf(tw, "%.2f ± %.2f\t", p.Mean, p.Std)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func writeCSV(path string, points []sim.Point) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"nodes", "algorithm", "trials", "mean_total", "std_total"})
	for _, p := range points {
		w.Write([]string{strconv.Itoa(p.Size), p.Algorithm, strconv.Itoa(len(p.Totals)),
			strconv.FormatFloat(p.Mean, 'f', 6, 64), strconv.FormatFloat(p.Std, 'f', 6, 64)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// meanErrors is one algorithm's curve: means with ± one standard deviation.
type meanErrors struct {
	plotter.XYs
	plotter.YErrors
}

func plotFigure1(path string, points []sim.Point) error {
	p := plot.New()
	p.Title.Text = "Total cost vs. system size (mean ± 1 sd)"
	p.X.Label.Text = "system size (nodes)"
	p.Y.Label.Text = "total cost (bandwidth + transcodes + last mile − utility)"
	p.Legend.Top = false
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for i, alg := range sim.Figure1Algorithms {
		var me meanErrors
		for _, pt := range points {
			if pt.Algorithm == alg {
				me.XYs = append(me.XYs, plotter.XY{X: float64(pt.Size), Y: pt.Mean})
				me.YErrors = append(me.YErrors, struct{ Low, High float64 }{pt.Std, pt.Std})
			}
		}
		line, scatter, err := plotter.NewLinePoints(me.XYs)
		if err != nil {
			return err
		}
		c := plotutil.Color(i)
		line.Color, scatter.Color = c, c
		line.Width = vg.Points(1.5)
		scatter.Shape = plotutil.Shape(i)
		bars, err := plotter.NewYErrorBars(me)
		if err != nil {
			return err
		}
		bars.Color = c
		bars.LineStyle.Color = c
		p.Add(line, scatter, bars)
		p.Legend.Add(alg, line, scatter)
	}
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}

// progressBar draws `[#####     ] 40% size 100 trial 3/25` on one line.
type progressBar struct {
	w    io.Writer
	last string
}

func newProgressBar(w io.Writer) *progressBar { return &progressBar{w: w} }

func (b *progressBar) update(done, total int, what string) {
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	filled := int(frac * width)
	line := fmt.Sprintf("\r[%s%s] %3.0f%% %s", strings.Repeat("#", filled), strings.Repeat(" ", width-filled), 100*frac, what)
	if pad := len(b.last) - len(line); pad > 0 {
		line += strings.Repeat(" ", pad)
	}
	b.last = line
	fmt.Fprint(b.w, line)
}

func (b *progressBar) finish() {
	if b.last != "" {
		fmt.Fprintln(b.w)
		b.last = ""
	}
}
