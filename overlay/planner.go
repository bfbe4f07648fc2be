package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/optimizer"
)

// PlannerConfig configures the planner that runs on every node and plans
// the streams rooted there.
type PlannerConfig struct {
	// DeviceClasses maps a device class ("phone", "tv") to the utility of
	// one viewer watching at each level name. A class not listed here is
	// planned with DefaultDevice's utilities. Required.
	DeviceClasses map[string]map[string]float64 `yaml:"device_classes"`
	// DefaultDevice names the class for viewers whose device is unknown.
	// Default "laptop" if listed, else the first class by name.
	DefaultDevice string `yaml:"default_device"`
	// LastMileCostPerMbps is what delivering one viewer's stream from its
	// edge costs per Mbps. Default 0.
	LastMileCostPerMbps float64 `yaml:"last_mile_cost_per_mbps"`
	// Algorithm is the optimizer algorithm. Default "primal-dual".
	Algorithm string `yaml:"algorithm"`
	// Debounce delays a re-plan after a change, so that a burst of changes
	// (a node dying is seen by every peer) makes one plan. Default 300 ms.
	Debounce time.Duration `yaml:"debounce"`
	// Interval re-plans periodically even without a change (RTTs drift).
	// A plan is republished only when the tree changes. Default 10 s.
	Interval time.Duration `yaml:"interval"`
	// Hysteresis keeps the current plan while it is still feasible for the
	// same nodes and demand groups and a new one would lower its regret by
	// less than this fraction, so that RTT jitter does not move relays
	// back and forth. Default 0.05; negative disables it.
	Hysteresis float64 `yaml:"hysteresis"`
}

// DefaultPlannerConfig returns the planner's defaults (no device classes:
// the caller names them).
func DefaultPlannerConfig() PlannerConfig {
	return PlannerConfig{Algorithm: "primal-dual", Debounce: 300 * time.Millisecond, Interval: 10 * time.Second, Hysteresis: 0.05}
}

func (c PlannerConfig) withDefaults() PlannerConfig {
	defaults.Fill(&c, DefaultPlannerConfig())
	if c.DefaultDevice == "" {
		if _, ok := c.DeviceClasses["laptop"]; ok {
			c.DefaultDevice = "laptop"
		} else {
			names := make([]string, 0, len(c.DeviceClasses))
			for n := range c.DeviceClasses {
				names = append(names, n)
			}
			sort.Strings(names)
			if len(names) > 0 {
				c.DefaultDevice = names[0]
			}
		}
	}
	return c
}

// Validate checks the config and names the bad field by its YAML key.
func (c PlannerConfig) Validate() error {
	if err := validateDevices(c.DeviceClasses, c.DefaultDevice); err != nil {
		return err
	}
	if c.LastMileCostPerMbps < 0 {
		return errors.New("last_mile_cost_per_mbps: must not be negative")
	}
	return nil
}

// validateDevices checks the device_classes and default_device keys
// shared by the planner's and the demand tracker's configs.
func validateDevices(classes map[string]map[string]float64, def string) error {
	if len(classes) == 0 {
		return errors.New("device_classes: needs at least one class")
	}
	if _, ok := classes[def]; !ok {
		return fmt.Errorf("default_device: %q is not in device_classes", def)
	}
	return nil
}

// Planner plans the streams rooted at this node: on a change of membership,
// metadata or demand (debounced) and every Interval, it turns the cluster
// state into an optimizer.Problem, solves it and publishes the plan when
// the tree changed.
type Planner struct {
	cfg PlannerConfig
	m   *Membership
	log *slog.Logger

	mu    sync.Mutex
	stop  chan struct{}
	done  chan struct{}
	plans int // plans published, for tests and metrics
}

// NewPlanner checks cfg and returns a planner over m's state; Start runs
// it. The zero fields of cfg take DefaultPlannerConfig's values.
func NewPlanner(cfg PlannerConfig, m *Membership, log *slog.Logger) (*Planner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Planner{cfg: cfg, m: m, log: log.With("component", "planner")}, nil
}

// Start runs the planning loop.
func (p *Planner) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		return errors.New("planner: started twice")
	}
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go p.run()
	return nil
}

// Close stops the loop. Idempotent.
func (p *Planner) Close() error {
	p.mu.Lock()
	stop, done := p.stop, p.done
	if stop == nil {
		p.mu.Unlock()
		return nil
	}
	select {
	case <-stop:
	default:
		close(stop)
	}
	p.mu.Unlock()
	<-done
	return nil
}

func (p *Planner) run() {
	defer close(p.done)
	ch, cancel := p.m.Subscribe()
	defer cancel()
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-p.stop:
			return
		case <-ch:
			if debounce == nil {
				debounce = time.After(p.cfg.Debounce)
			}
			continue
		case <-debounce:
			debounce = nil
		case <-tick.C:
		}
		p.PlanAll()
	}
}

// PlanAll plans every stream rooted here now.
func (p *Planner) PlanAll() {
	self := p.m.Name()
	for _, s := range p.m.Streams() {
		if s.Root != self {
			continue
		}
		if err := p.planStream(s); err != nil {
			p.log.Warn("planning failed", "stream", s.Name, "err", err)
		}
	}
}

// Problem builds the delivery problem of stream s from the current state;
// groups[i] describes the problem's demand i.
func (p *Planner) Problem(s StreamInfo) (*optimizer.Problem, []Group) {
	members := p.m.Alive()
	rtts := p.m.RTTs()
	prob := &optimizer.Problem{Root: s.Root, Levels: s.Ladder}
	alive := map[string]bool{}
	others := p.otherStreamsTranscodes(s.Name)
	for _, x := range members {
		alive[x.Name] = true
		n := optimizer.Node{ID: x.Name, TranscodeCost: x.Meta.TranscodeCost}
		n.TranscodeSlots = optimizer.Slots(FreeSlots(x, s.Name, others[x.Name]))
		prob.Nodes = append(prob.Nodes, n)
	}
	for i := range members {
		for j := i + 1; j < len(members); j++ {
			prob.Links = append(prob.Links, optimizer.Link{A: members[i].Name, B: members[j].Name,
				CostPerMbps: p.m.linkCost(rtts, members[i], members[j])})
		}
	}
	var groups []Group
	for _, d := range p.m.Demands(s.Name) {
		if !alive[d.Node] {
			continue
		}
		classes := make([]string, 0, len(d.Viewers))
		for c := range d.Viewers {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			u, ok := p.cfg.DeviceClasses[c]
			if !ok {
				u = p.cfg.DeviceClasses[p.cfg.DefaultDevice]
			}
			util := map[string]float64{}
			for _, l := range s.Ladder {
				if v, ok := u[l.Name]; ok {
					util[l.Name] = v
				}
			}
			prob.Demands = append(prob.Demands, optimizer.Demand{Node: d.Node, Viewers: d.Viewers[c],
				LastMileCostPerMbps: p.cfg.LastMileCostPerMbps, Utility: util})
			groups = append(groups, Group{Node: d.Node, Class: c, Viewers: d.Viewers[c]})
		}
	}
	return prob, groups
}

// otherStreamsTranscodes counts, per node and stream, the renditions that
// the current plans of streams other than stream place there.
func (p *Planner) otherStreamsTranscodes(stream string) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, pl := range p.m.Plans() {
		if pl.Stream == stream {
			continue
		}
		for _, t := range pl.Plan.Transcodes {
			if out[t.Node] == nil {
				out[t.Node] = map[string]int{}
			}
			out[t.Node][pl.Stream]++
		}
	}
	return out
}

// FreeSlots is the transcode capacity member x offers to the plan of
// stream: its slots less what every other stream takes there, counting for
// each the larger of the renditions x reports producing for it and those
// its plan places on x (planned ones may not run yet; running ones may be
// unplanned, started for a local viewer). The stream's own renditions do
// not count against it: re-planning must not evict itself.
func FreeSlots(x Member, stream string, planned map[string]int) int {
	free := x.Meta.TranscodeSlots
	seen := map[string]bool{stream: true}
	for st, n := range x.TranscodeByStream {
		if !seen[st] {
			seen[st] = true
			free -= max(n, planned[st])
		}
	}
	for st, n := range planned {
		if !seen[st] {
			free -= n
		}
	}
	return max(0, free)
}

func (p *Planner) planStream(s StreamInfo) error {
	if len(s.Ladder) == 0 {
		return fmt.Errorf("stream %s has no ladder", s.Name)
	}
	prob, groups := p.Problem(s)
	start := time.Now()
	sol, err := optimizer.Solve(p.cfg.Algorithm, prob)
	if err != nil {
		return fmt.Errorf("solve %s: %w", s.Name, err)
	}
	nodes := make([]string, len(prob.Nodes))
	for i, n := range prob.Nodes {
		nodes[i] = n.ID
	}
	plan := &Plan{Stream: s.Name, Levels: s.Ladder, Groups: groups, Nodes: nodes, Plan: *sol, Made: time.Now()}
	old, _ := p.m.Plan(s.Name)
	if old != nil && old.Root == p.m.Name() && sameNodes(old.Nodes, nodes) {
		if sameTree(old, plan) {
			return nil
		}
		if p.cfg.Hysteresis > 0 && sameGroups(old.Groups, groups) && stillFeasible(prob, &old.Plan) {
			// The old plan still fits the problem (slots may have gone).
			if c, err := prob.Evaluate(&old.Plan); err == nil && sol.Cost.Regret > (1-p.cfg.Hysteresis)*c.Regret {
				return nil // not enough of a gain to move relays
			}
		}
	}
	p.m.PublishPlan(plan)
	p.mu.Lock()
	p.plans++
	p.mu.Unlock()
	p.log.Info("plan published", "stream", s.Name, "version", plan.Version, "arcs", len(sol.Arcs),
		"transcodes", len(sol.Transcodes), "served", len(sol.Served), "total", sol.Cost.Total, "solve", time.Since(start))
	return nil
}

// stillFeasible reports whether plan, made for an earlier problem, obeys
// prob's rules (its cost block, for the old link costs, is not checked).
func stillFeasible(prob *optimizer.Problem, plan *optimizer.Plan) bool {
	bare := *plan
	bare.Cost = nil
	return prob.Check(&bare) == nil
}

// sameGroups reports whether two plans' demand groups are the same node
// and class in the same order (the viewer counts may differ).
func sameGroups(a, b []Group) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Node != b[i].Node || a[i].Class != b[i].Class {
			return false
		}
	}
	return true
}

func sameNodes(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Published is how many plans this planner has published.
func (p *Planner) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.plans
}
