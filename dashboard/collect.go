package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
)

// Source is where the collector reads the cluster. node/ fills it from
// its membership, planner and components; a nil func means that part is
// not there (gossip off: no members, plans nor demand).
type Source struct {
	// Self is this node's name.
	Self string
	// Members lists the members (overlay.Membership.Members).
	Members func() []overlay.Member
	// LinkCost is the overlay link cost between two members.
	LinkCost func(a, b overlay.Member) float64
	// Plans lists the newest plan of every stream.
	Plans func() []*overlay.Plan
	// Demands lists every node's demand.
	Demands func() []overlay.Demand
	// Problem builds stream's delivery problem from the current state, for
	// the baselines; ok is false when the stream is unknown.
	Problem func(stream string) (prob *optimizer.Problem, groups []overlay.Group, ok bool)
	// Changes subscribes to membership and cluster-state changes
	// (overlay.Membership.Subscribe).
	Changes func() (<-chan struct{}, func())
	// LocalLoad is this node's load.
	LocalLoad func() NodeLoad
	// Client fetches the other nodes' GET /api/v1/load; nil: http.Client
	// with a 1.5 s timeout.
	Client *http.Client
}

// MemberView is one member in the "members" event.
type MemberView struct {
	Name   string  `json:"name"`
	State  string  `json:"state"`
	Region string  `json:"region,omitempty"`
	Price  float64 `json:"price"`
	// Slots is the transcode capacity, SlotsUsed how many renditions the
	// member produces now.
	Slots     int     `json:"slots"`
	SlotsUsed int     `json:"slots_used"`
	TCost     float64 `json:"transcode_cost"`
	HTTP      string  `json:"http,omitempty"`
	RTTMillis float64 `json:"rtt_ms,omitempty"`
	// CPU and LoadAvg are from the member's last load (see NodeLoad).
	CPU     float64 `json:"cpu"`
	LoadAvg float64 `json:"loadavg"`
	Ignored string  `json:"ignored,omitempty"`
	Self    bool    `json:"self,omitempty"`
}

// LinkView is an overlay link between two live members and its cost per
// Mbps (prices, region multiplier, RTT).
type LinkView struct {
	A    string  `json:"a"`
	B    string  `json:"b"`
	Cost float64 `json:"cost"`
}

// MembersEvent is the "members" event.
type MembersEvent struct {
	Self    string       `json:"self"`
	Members []MemberView `json:"members"`
	Links   []LinkView   `json:"links"`
}

// ArcView is an arc of a plan with what it carries.
type ArcView struct {
	From       string   `json:"from"`
	To         string   `json:"to"`
	Renditions []string `json:"renditions"`
	Kbps       float64  `json:"kbps"`
}

// PlanCosts compares the plan with the baselines solved on the same
// problem. SavesVsMST and SavesVsNaive are in percent of the baseline's
// total cost (positive: the plan is cheaper).
type PlanCosts struct {
	Plan         *optimizer.Cost `json:"plan,omitempty"`
	MST          *optimizer.Cost `json:"mst,omitempty"`
	Naive        *optimizer.Cost `json:"naive,omitempty"`
	SavesVsMST   *float64        `json:"saves_vs_mst_pct,omitempty"`
	SavesVsNaive *float64        `json:"saves_vs_naive_pct,omitempty"`
	// SameDemand is false when the demand changed since the plan was
	// made: the plan is then evaluated with its services matched to
	// today's groups (see Baselines).
	SameDemand bool   `json:"same_demand"`
	Error      string `json:"error,omitempty"`
}

// PlanEvent is the "plan" event of one stream. Removed is set (and the
// rest empty) when the stream's plan is gone.
type PlanEvent struct {
	Stream  string `json:"stream"`
	Removed bool   `json:"removed,omitempty"`
	Root    string `json:"root,omitempty"`
	// Version is a string in JSON: plan versions pass 2^53, beyond
	// what a JavaScript number holds exactly.
	Version    uint64                       `json:"version,omitempty,string"`
	Made       time.Time                    `json:"made,omitzero"`
	Algorithm  string                       `json:"algorithm,omitempty"`
	Levels     []optimizer.Level            `json:"levels,omitempty"`
	Nodes      []string                     `json:"nodes,omitempty"`
	Arcs       []ArcView                    `json:"arcs"`
	Transcodes map[string][]string          `json:"transcodes,omitempty"` // node → ["1080p>360p"]
	Viewers    map[string]map[string]int    `json:"viewers,omitempty"`    // node → class → viewers
	Served     map[string]map[string]string `json:"served,omitempty"`     // node → class → level
	Cost       PlanCosts                    `json:"cost"`
}

// DemandEvent is the "demand" event: every node's viewers by stream and
// device class.
type DemandEvent struct {
	Demand []overlay.Demand `json:"demand"`
}

// NodeLoad is one node's load, the body of GET /api/v1/load.
type NodeLoad struct {
	Node string `json:"node"`
	// CPU is the node process's CPU use over the last interval (1 is one
	// core busy); LoadAvg the host's 1-minute load average.
	CPU     float64 `json:"cpu"`
	LoadAvg float64 `json:"loadavg"`
	Cores   int     `json:"cores"`
	// Slots and SlotsUsed are the serverlet slots.
	Slots      int             `json:"slots"`
	SlotsUsed  int             `json:"slots_used"`
	Streams    []StreamLoad    `json:"streams"`
	Serverlets []ServerletLoad `json:"serverlets"`
	// VoD is the node's VoD cache counters (GET /api/v1/vod/cache).
	VoD   json.RawMessage `json:"vod,omitempty"`
	Error string          `json:"error,omitempty"`
}

// StreamLoad is one live stream (or rendition) on a node.
type StreamLoad struct {
	Path string `json:"path"`
	// KbpsIn is the input bitrate over the last interval; KbpsOut an
	// estimate of what leaves the hub: KbpsIn times the readers that send
	// it on (every reader gets every packet).
	KbpsIn  float64 `json:"kbps_in"`
	KbpsOut float64 `json:"kbps_out_est"`
	// Readers counts the stream's readers by protocol: "webrtc" (WHEP
	// sessions), "hls" (HLS viewers), "hub" (every hub reader: muxers,
	// sessions, relays to other nodes, serverlets).
	Readers map[string]int `json:"readers"`
	Player  string         `json:"player"`
}

// ServerletLoad is one running serverlet.
type ServerletLoad struct {
	Rendition string  `json:"rendition"`
	Spec      string  `json:"spec"`
	FPS       float64 `json:"fps"`
	Speed     float64 `json:"speed"`
	CPU       float64 `json:"cpu"`
}

// LoadEvent is the "load" event: every reachable member's load.
type LoadEvent struct {
	Nodes []NodeLoad `json:"nodes"`
}

// Collector watches the Source and publishes to the Broker.
type Collector struct {
	b   *Broker
	src Source

	mu    sync.Mutex
	cache map[string]cachedCosts // by stream: baselines of one plan version and demand
	cpu   map[string][2]float64  // by member: CPU and load average of the last load
	// pub serializes building and publishing, so that an older view never
	// follows a newer one.
	pub sync.Mutex

	stop chan struct{}
	wg   sync.WaitGroup
}

type cachedCosts struct {
	key   string
	costs PlanCosts
}

// NewCollector builds a collector; Start runs it.
func NewCollector(b *Broker, src Source) *Collector {
	if src.Client == nil {
		src.Client = &http.Client{Timeout: 1500 * time.Millisecond}
	}
	return &Collector{b: b, src: src, cache: map[string]cachedCosts{}, stop: make(chan struct{})}
}

// Start publishes the first snapshot and starts the loop.
func (c *Collector) Start() {
	c.Refresh()
	c.wg.Add(1)
	go c.run()
}

// Close stops the loop.
func (c *Collector) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
	c.wg.Wait()
	return nil
}

func (c *Collector) run() {
	defer c.wg.Done()
	var changes <-chan struct{}
	if c.src.Changes != nil {
		ch, cancel := c.src.Changes()
		defer cancel()
		changes = ch
	}
	// Load is read in its own loop: it asks the other nodes over HTTP,
	// which must not hold up a plan on its way to the page.
	loadWake := make(chan struct{}, 1)
	c.wg.Add(1)
	go c.loadLoop(loadWake)
	// Member states that change without a gossip event (suspect after
	// missed probes) are seen by a slow poll.
	slow := time.NewTicker(time.Second)
	defer slow.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-changes:
		case <-slow.C:
		case <-c.b.wake:
			select {
			case loadWake <- struct{}{}:
			default:
			}
		}
		// With nobody watching there is nothing to compute: the first
		// client wakes the loop, and the changes since the last refresh
		// follow its (older) snapshot at once.
		if c.b.Clients() > 0 {
			c.Refresh()
		}
	}
}

func (c *Collector) loadLoop(wake <-chan struct{}) {
	defer c.wg.Done()
	t := time.NewTicker(c.b.cfg.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-wake:
		case <-t.C:
		}
		if c.b.Clients() > 0 {
			c.RefreshLoad()
		}
	}
}

// Refresh publishes members, plans and demand as they are now; the broker
// sends only what changed.
func (c *Collector) Refresh() {
	c.pub.Lock()
	defer c.pub.Unlock()
	if c.src.Members != nil {
		c.b.Publish("members", "members", c.members())
	} else {
		// Gossip off: the node alone.
		c.b.Publish("members", "members", MembersEvent{Self: c.src.Self, Links: []LinkView{},
			Members: []MemberView{{Name: c.src.Self, State: "alive", Self: true}}})
	}
	if c.src.Demands != nil {
		d := c.src.Demands()
		sort.Slice(d, func(i, j int) bool {
			if d[i].Stream != d[j].Stream {
				return d[i].Stream < d[j].Stream
			}
			return d[i].Node < d[j].Node
		})
		if d == nil {
			d = []overlay.Demand{}
		}
		c.b.Publish("demand", "demand", DemandEvent{Demand: d})
	}
	if c.src.Plans != nil {
		seen := map[string]bool{}
		for _, p := range c.src.Plans() {
			seen["plan\x00"+p.Stream] = true
			c.b.Publish("plan\x00"+p.Stream, "plan", c.planEvent(p))
		}
		for _, k := range c.b.Keys("plan\x00") {
			if !seen[k] {
				stream := strings.TrimPrefix(k, "plan\x00")
				c.b.Forget(k, "plan", PlanEvent{Stream: stream, Removed: true, Arcs: []ArcView{}})
				c.mu.Lock()
				delete(c.cache, stream)
				c.mu.Unlock()
			}
		}
	}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func (c *Collector) members() MembersEvent {
	ms := c.src.Members()
	c.mu.Lock()
	cpu := c.cpu
	c.mu.Unlock()
	ev := MembersEvent{Self: c.src.Self, Members: make([]MemberView, 0, len(ms)), Links: []LinkView{}}
	var live []overlay.Member
	for _, m := range ms {
		ev.Members = append(ev.Members, MemberView{Name: m.Name, State: m.State, Region: m.Meta.Region, Price: m.Meta.Price,
			Slots: m.Meta.TranscodeSlots, SlotsUsed: m.TranscodeUsed, TCost: m.Meta.TranscodeCost, HTTP: m.Meta.HTTP,
			// RTTs move by fractions of a millisecond: round them so that
			// the event is not re-sent for noise.
			RTTMillis: round(m.RTTMillis, 0), Ignored: m.Ignored, Self: m.Name == c.src.Self,
			CPU: cpu[m.Name][0], LoadAvg: cpu[m.Name][1]})
		if m.State == "alive" || m.State == "suspect" {
			live = append(live, m)
		}
	}
	if c.src.LinkCost != nil {
		for i := range live {
			for j := i + 1; j < len(live); j++ {
				ev.Links = append(ev.Links, LinkView{A: live[i].Name, B: live[j].Name,
					Cost: round(c.src.LinkCost(live[i], live[j]), 2)})
			}
		}
	}
	return ev
}

// PlanView builds the "plan" event of p (without the baselines).
func PlanView(p *overlay.Plan) PlanEvent {
	ev := PlanEvent{Stream: p.Stream, Root: p.Root, Version: p.Version, Made: p.Made, Algorithm: p.Plan.Algorithm,
		Levels: p.Levels, Nodes: p.Nodes, Arcs: make([]ArcView, 0, len(p.Plan.Arcs)),
		Transcodes: map[string][]string{}, Viewers: map[string]map[string]int{}, Served: map[string]map[string]string{}}
	kbps := map[string]float64{}
	for _, l := range p.Levels {
		kbps[l.Name] = l.Kbps
	}
	for _, a := range p.Plan.Arcs {
		av := ArcView{From: a.From, To: a.To, Renditions: append([]string{}, a.Levels...)}
		for _, l := range a.Levels {
			av.Kbps += kbps[l]
		}
		ev.Arcs = append(ev.Arcs, av)
	}
	for _, t := range p.Plan.Transcodes {
		ev.Transcodes[t.Node] = append(ev.Transcodes[t.Node], t.From+">"+t.To)
	}
	for _, g := range p.Groups {
		if g.Viewers == 0 {
			continue
		}
		if ev.Viewers[g.Node] == nil {
			ev.Viewers[g.Node] = map[string]int{}
		}
		ev.Viewers[g.Node][g.Class] += g.Viewers
	}
	for _, s := range p.Plan.Served {
		if s.Demand < 0 || s.Demand >= len(p.Groups) {
			continue
		}
		g := p.Groups[s.Demand]
		if ev.Served[g.Node] == nil {
			ev.Served[g.Node] = map[string]string{}
		}
		ev.Served[g.Node][g.Class] = s.Level
	}
	ev.Cost.Plan = p.Plan.Cost
	return ev
}

func (c *Collector) planEvent(p *overlay.Plan) PlanEvent {
	ev := PlanView(p)
	if c.src.Problem == nil {
		return ev
	}
	prob, groups, ok := c.src.Problem(p.Stream)
	if !ok {
		ev.Cost.Error = "stream not known here"
		return ev
	}
	gb, _ := json.Marshal(groups)
	pb, _ := json.Marshal(prob.Links)
	h := fnv.New64a()
	h.Write(gb)
	h.Write(pb)
	key := fmt.Sprintf("%d|%x", p.Version, h.Sum64())
	c.mu.Lock()
	cc, hit := c.cache[p.Stream]
	c.mu.Unlock()
	if hit && cc.key == key {
		ev.Cost = cc.costs
		return ev
	}
	ev.Cost = Baselines(p, prob, groups)
	c.mu.Lock()
	c.cache[p.Stream] = cachedCosts{key: key, costs: ev.Cost}
	c.mu.Unlock()
	return ev
}

// Baselines solves prob (the plan's stream's problem as it is now, with
// groups its demand groups) with the MST and naive baselines and compares
// them with the plan evaluated on prob too, so that the three costs are
// for the same demand and links. When the demand changed since the plan
// was made, the plan's services are matched to today's groups by node and
// device class (a new group is unserved); if the plan does not fit today's
// problem its published cost is shown and no saving is computed.
func Baselines(p *overlay.Plan, prob *optimizer.Problem, groups []overlay.Group) PlanCosts {
	pc := PlanCosts{Plan: p.Plan.Cost, SameDemand: sameGroups(p.Groups, groups)}
	bare := p.Plan
	bare.Cost = nil
	if !pc.SameDemand {
		idx := map[overlay.Group]int{}
		for i, g := range groups {
			idx[overlay.Group{Node: g.Node, Class: g.Class}] = i
		}
		bare.Served = nil
		for _, s := range p.Plan.Served {
			if s.Demand < 0 || s.Demand >= len(p.Groups) {
				continue
			}
			g := p.Groups[s.Demand]
			if i, ok := idx[overlay.Group{Node: g.Node, Class: g.Class}]; ok {
				bare.Served = append(bare.Served, optimizer.Service{Demand: i, Level: s.Level})
			}
		}
	}
	comparable := false
	if c, err := prob.Evaluate(&bare); err == nil {
		pc.Plan, comparable = &c, true
	}
	var errs []string
	if sol, err := optimizer.Solve("mst", prob); err == nil {
		pc.MST = sol.Cost
	} else {
		errs = append(errs, "mst: "+err.Error())
	}
	if sol, err := optimizer.Solve("naive", prob); err == nil {
		pc.Naive = sol.Cost
	} else {
		errs = append(errs, "naive: "+err.Error())
	}
	if !comparable {
		errs = append(errs, "the plan does not fit today's problem: no saving computed")
	}
	pc.Error = strings.Join(errs, "; ")
	saves := func(base *optimizer.Cost) *float64 {
		if !comparable || base == nil || base.Total == 0 {
			return nil
		}
		v := round((base.Total-pc.Plan.Total)/math.Abs(base.Total)*100, 1)
		return &v
	}
	pc.SavesVsMST, pc.SavesVsNaive = saves(pc.MST), saves(pc.Naive)
	return pc
}

func sameGroups(a, b []overlay.Group) bool {
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

// RefreshLoad collects every live member's load (this node's directly,
// the others' over GET /api/v1/load, in parallel) and publishes it.
func (c *Collector) RefreshLoad() {
	var ev LoadEvent
	var self NodeLoad
	if c.src.LocalLoad != nil {
		self = c.src.LocalLoad()
		self.Node = c.src.Self
	}
	ev.Nodes = append(ev.Nodes, self)
	if c.src.Members != nil {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, m := range c.src.Members() {
			if m.Name == c.src.Self || (m.State != "alive" && m.State != "suspect") || m.Meta.HTTP == "" {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := c.fetchLoad(m)
				mu.Lock()
				ev.Nodes = append(ev.Nodes, l)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	sort.Slice(ev.Nodes, func(i, j int) bool { return ev.Nodes[i].Node < ev.Nodes[j].Node })
	cpu := map[string][2]float64{}
	for _, l := range ev.Nodes {
		if l.Error == "" {
			cpu[l.Node] = [2]float64{round(l.CPU, 2), l.LoadAvg}
		}
	}
	c.mu.Lock()
	c.cpu = cpu
	c.mu.Unlock()
	c.pub.Lock()
	defer c.pub.Unlock()
	c.b.Publish("load", "load", ev)
	if c.src.Members != nil {
		c.b.Publish("members", "members", c.members())
	}
}

func (c *Collector) fetchLoad(m overlay.Member) NodeLoad {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	fail := func(err error) NodeLoad { return NodeLoad{Node: m.Name, Error: err.Error()} }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.Meta.HTTPBase()+"/api/v1/load", nil)
	if err != nil {
		return fail(err)
	}
	resp, err := c.src.Client.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("GET /api/v1/load: %s", resp.Status))
	}
	var l NodeLoad
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4<<20)).Decode(&l); err != nil {
		return fail(fmt.Errorf("GET /api/v1/load: %w", err))
	}
	l.Node = m.Name
	return l
}
