package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/node"
	"github.com/gradient-cdn/gradient/overlay"
)

var clusterKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))

// startClusterNode starts a node with gossip on loopback, timers short
// enough for tests, and the planner's test utilities: a TV wants the
// source, a phone is as happy with 360p.
func startClusterNode(t *testing.T, name string, price float64, join []string) *testNode {
	t.Helper()
	return startNodeWith(t, func(c *node.Config) {
		c.Name = name
		c.Gossip.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
		c.Gossip.Join = join
		c.Gossip.Key = clusterKey
		c.Overlay.PricePerMbps = price
		c.Overlay.DeviceClasses = map[string]map[string]float64{
			"phone": {"source": 2.91, "360p": 2.9},
			"tv":    {"source": 10, "360p": 2},
		}
		c.Overlay.DefaultDevice = "phone"
		c.Overlay.LastMileCostPerMbps = 0
		c.Overlay.PlannerDebounce = 100 * time.Millisecond
		c.Overlay.PlannerInterval = time.Second
		// Fast probes, but not so touchy that a loaded CI machine (-race,
		// packages tested in parallel) gets a live node declared dead:
		// a death takes 1.2-7.2 s to declare. The failover tests do not
		// wait for it: a child sees its relay's TCP connection drop.
		c.Overlay.ProbeInterval = 300 * time.Millisecond
		c.Overlay.ProbeTimeout = 200 * time.Millisecond
		c.Overlay.SuspicionMult = 4
		c.Overlay.PushPullInterval = 2 * time.Second
		c.Overlay.WatchLease = 3 * time.Second
		c.Overlay.RelayGrace = 10 * time.Second
		c.Serverlets.Slots = 2
	})
}

func (n *testNode) cluster(t *testing.T) overlay.ClusterStatus {
	t.Helper()
	resp, err := http.Get(n.httpURL("api/v1/cluster"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st overlay.ClusterStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// watchURL asks n where a viewer of device should go and returns the
// redirect target.
func (n *testNode) watch(t *testing.T, stream, device string) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(n.httpURL("watch/" + stream + "?device=" + device))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("watch %s on %s: HTTP %d, want 302", stream, n.cfg.Name, resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// viewer is a WHEP session that decodes what it receives.
type viewer struct {
	s          *testutil.WHEPSession
	mu         sync.Mutex
	frames     int
	w, h       int
	lastAU     time.Time
	arrivals   []time.Time
	decodeErrs int
}

func dialViewer(t *testing.T, endpoint string) *viewer {
	t.Helper()
	dec, err := testutil.NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	v := &viewer{}
	var decMu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := testutil.DialWHEP(ctx, endpoint, testutil.WHEPOptions{Loopback: true, NACK: true, OnAU: func(au testutil.WHEPAccessUnit) {
		decMu.Lock()
		frames, err := dec.Decode(au.NALUs, int64(au.RTPTimestamp))
		decMu.Unlock()
		v.mu.Lock()
		defer v.mu.Unlock()
		if err != nil {
			v.decodeErrs++
		}
		v.arrivals = append(v.arrivals, au.Arrival)
		for _, f := range frames {
			v.frames++
			v.w, v.h = f.Width, f.Height
		}
	}})
	if err != nil {
		t.Fatalf("WHEP %s: %v", endpoint, err)
	}
	t.Cleanup(func() {
		s.Close()
		decMu.Lock()
		dec.Close()
		decMu.Unlock()
	})
	v.s = s
	return v
}

func (v *viewer) state() (frames, w, h int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.frames, v.w, v.h
}

// firstAfter is the arrival of the first access unit after t.
func (v *viewer) firstAfter(t time.Time) (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, a := range v.arrivals {
		if a.After(t) {
			return a, true
		}
	}
	return time.Time{}, false
}

// maxGapSince is the longest time between two access units arriving after
// t (counting from the last one before t) and until the last one.
func (v *viewer) maxGapSince(t time.Time) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	var gap time.Duration
	prev := time.Time{}
	for _, a := range v.arrivals {
		if a.After(t) && !prev.IsZero() && a.Sub(prev) > gap {
			gap = a.Sub(prev)
		}
		prev = a
	}
	return gap
}

// relayPaths is the sorted list of relay paths a node runs.
func relayPaths(st overlay.ClusterStatus) []string {
	var out []string
	for _, r := range st.Relays {
		out = append(out, r.Path)
	}
	sort.Strings(out)
	return out
}

// arcPaths is what the plan says node relays.
func arcPaths(p *overlay.Plan, name string) []string {
	var out []string
	if _, lv, ok := p.Parent(name); ok {
		for _, l := range lv {
			out = append(out, p.Path(l))
		}
	}
	sort.Strings(out)
	return out
}

func TestOverlayFiveNodesPlanRelayTranscodeAndRepairAfterInteriorDeath(t *testing.T) {
	// n0 (the root) is dear to leave, the edges n3 and n4 are dear, n1 and
	// n2 cheap: the cheapest tree crosses n0's links once and then fans out.
	prices := []float64{1, 0.01, 0.01, 0.5, 0.5}
	var nodes []*testNode
	for i, p := range prices {
		var join []string
		if i > 0 {
			join = []string{nodes[0].cfg.Gossip.Addr}
		}
		nodes = append(nodes, startClusterNode(t, fmt.Sprintf("n%d", i), p, join))
	}
	testutil.Eventually(t, 15*time.Second, "5 nodes agree on membership and know every pair's RTT", func() bool {
		for _, n := range nodes {
			if len(n.Members.Alive()) != 5 {
				return false
			}
		}
		for _, a := range nodes {
			for _, b := range nodes {
				if _, ok := nodes[0].Members.RTT(a.cfg.Name, b.cfg.Name); a != b && !ok {
					return false
				}
			}
		}
		return true
	})

	clip := testutil.Clip(t, testutil.ClipOptions{Width: 960, Height: 540, FPS: 15, Seconds: 6, Bitrate: "600k"})
	testutil.FFmpegPublish(t, clip, "rtsp", nodes[0].rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	nodes[0].waitStream(t, "live/cam1")
	testutil.Eventually(t, 5*time.Second, "every node knows live/cam1 rooted at n0", func() bool {
		for _, n := range nodes {
			if s, ok := n.Members.Stream("live/cam1"); !ok || s.Root != "n0" {
				return false
			}
		}
		return true
	})

	// Viewers arrive before any plan: fast start from the root, and demand.
	first3 := nodes[3].watch(t, "live/cam1", "phone")
	first4 := nodes[4].watch(t, "live/cam1", "tv")
	if first3 != "/live/cam1/?device=phone" || first4 != "/live/cam1/?device=tv" {
		t.Fatalf("fast start redirects %q, %q: want the source player", first3, first4)
	}
	// Both players start at once, as the player page does: their sessions,
	// not the short /watch leases, keep them in the demand.
	fastPhone := dialViewer(t, nodes[3].httpURL("live/cam1/whep?device=phone"))
	tv := dialViewer(t, nodes[4].httpURL("live/cam1/whep?device=tv"))

	var plan *overlay.Plan
	planStart := time.Now()
	testutil.Eventually(t, 15*time.Second, "a plan serving phones at n3 with 360p and the TV at n4 with the source", func() bool {
		p, ok := nodes[0].Members.Plan("live/cam1")
		if !ok {
			return false
		}
		l3, ok3 := p.Served("n3", "phone")
		l4, ok4 := p.Served("n4", "tv")
		plan = p
		return ok3 && ok4 && l3 == "360p" && l4 == "source"
	})
	t.Logf("plan v%d after %v: arcs %+v transcodes %+v cost %+v", plan.Version, time.Since(planStart), plan.Plan.Arcs, plan.Plan.Transcodes, *plan.Plan.Cost)
	if _, lv, _ := plan.Parent("n3"); len(lv) != 1 || lv[0] != "360p" {
		t.Errorf("n3's arc carries %v, want [360p] made upstream of it", lv)
	}
	// The phone viewer who comes now gets the planned rendition.
	loc := nodes[3].watch(t, "live/cam1", "phone")
	if loc != "/live/cam1@360p/?device=phone" {
		t.Fatalf("watch at n3 after the plan redirects to %q, want the 360p player", loc)
	}
	phone := dialViewer(t, nodes[3].httpURL("live/cam1@360p/whep?device=phone"))
	testutil.Eventually(t, 20*time.Second, "n3 decodes 640x360 and n4 960x540", func() bool {
		f3, w3, h3 := phone.state()
		f4, w4, h4 := tv.state()
		return f3 >= 15 && w3 == 640 && h3 == 360 && f4 >= 15 && w4 == 960 && h4 == 540
	})
	// The fast-start phone leaves (it watched the source, which the plan
	// does not bring to n3).
	fastPhone.s.Close()

	// The RTSP relays on every node match the plan's arcs (once the fast
	// start's lease has run out).
	testutil.Eventually(t, 15*time.Second, "relays on every node match the plan's arcs", func() bool {
		p, ok := nodes[0].Members.Plan("live/cam1")
		if !ok {
			return false
		}
		plan = p
		for _, n := range nodes {
			st := n.cluster(t)
			if strings.Join(relayPaths(st), ",") != strings.Join(arcPaths(p, n.cfg.Name), ",") {
				return false
			}
			for _, r := range st.Relays {
				if !r.Live {
					return false
				}
			}
		}
		return true
	})

	// Kill an interior node (no Leave: gossip stops, then every listener).
	interior := ""
	for _, a := range plan.Plan.Arcs {
		if a.From != "n0" {
			interior = a.From
		}
	}
	if interior == "" {
		t.Fatalf("plan %+v has no interior node", plan.Plan.Arcs)
	}
	var victim *testNode
	var below []*viewer
	for i, n := range nodes {
		if n.cfg.Name == interior {
			victim = n
			continue
		}
		if par, _, ok := plan.Parent(n.cfg.Name); ok && par == interior {
			switch i {
			case 3:
				below = append(below, phone)
			case 4:
				below = append(below, tv)
			}
		}
	}
	if len(below) == 0 {
		t.Fatalf("no viewer below the interior node %s in %+v", interior, plan.Plan.Arcs)
	}
	// As kill -9 would: its RTSP connections (the relays to its children)
	// drop at once and it stops answering gossip; the rest goes after.
	killed := time.Now()
	victim.RTSP.Close()
	victim.Members.Shutdown()
	victim.Close()
	for _, v := range below {
		// The viewer's interruption is the longest silence between two
		// access units around the death; wait until it plays again for 2 s.
		testutil.Eventually(t, 20*time.Second, "viewers below the dead node receive frames again", func() bool {
			_, ok := v.firstAfter(killed.Add(2 * time.Second))
			return ok && v.maxGapSince(killed) < 2*time.Second
		})
		gap := v.maxGapSince(killed)
		t.Logf("FIGURE failover: viewer below %s interrupted for %v at most", interior, gap)
		if gap > 5*time.Second {
			t.Errorf("viewers were interrupted %v when the interior node died, want < 5 s", gap)
		}
	}
	var rest []*testNode
	for _, n := range nodes {
		if n != victim {
			rest = append(rest, n)
		}
	}
	testutil.Eventually(t, 15*time.Second, "a new plan without the dead node, and relays re-parented to match it", func() bool {
		p, ok := nodes[0].Members.Plan("live/cam1")
		if !ok {
			return false
		}
		for _, n := range p.Nodes {
			if n == interior {
				return false
			}
		}
		for _, n := range rest {
			st := n.cluster(t)
			if strings.Join(relayPaths(st), ",") != strings.Join(arcPaths(p, n.cfg.Name), ",") {
				return false
			}
		}
		plan = p
		return true
	})
	t.Logf("re-planned: arcs %+v", plan.Plan.Arcs)
	for _, n := range rest {
		for _, l := range strings.Split(n.logs.String(), "\n") {
			if strings.Contains(l, "relay upstream") {
				t.Logf("%s: %s", n.cfg.Name, l)
			}
		}
	}

	// Demand goes away: every relay and transcode stops.
	for _, v := range []*viewer{phone, tv} {
		v.s.Close()
	}
	testutil.Eventually(t, 20*time.Second, "without viewers no relay or plan transcode runs anywhere", func() bool {
		for _, n := range rest {
			st := n.cluster(t)
			if len(st.Relays) != 0 || len(st.Transcodes) != 0 || len(st.Demand) != 0 {
				return false
			}
		}
		return true
	})
}

// The cluster secret guards relay users, not viewers: with reading open
// (the default) an anonymous RTSP reader reads, and a relay's credentials
// read too. (A relay user with a wrong password, when reading is closed, is
// refused: node's TestAuthNodeRelayUsersStillRead.)
func TestOverlayRTSPReadersWithAndWithoutClusterSecretAndPlanAPIAnswers(t *testing.T) {
	a := startClusterNode(t, "a", 0.01, nil)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4})
	testutil.FFmpegPublish(t, clip, "rtsp", a.rtspURL("live/cam1"), "-rtsp_transport", "tcp")
	a.waitStream(t, "live/cam1")

	// An anonymous viewer's RTSP read does not depend on the cluster secret.
	out := testutil.Start(t, "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=width", "-of", "csv=p=0", a.rtspURL("live/cam1"))
	if err := out.Wait(t, 20*time.Second); err != nil || !strings.Contains(out.Output(), "320") {
		t.Fatalf("anonymous ffprobe with a cluster secret and reading open: %v %q, want it to read", err, out.Output())
	}
	// A relay's credentials: user gradient.<node>, a password derived from
	// the cluster secret for that user and path (RTSP Digest).
	user := overlay.RelayUser + ".ops"
	withSecret := "rtsp://" + url.UserPassword(user, overlay.RelayPassword(clusterKey, user, "live/cam1")).String() + "@" + a.cfg.RTSP.Addr + "/live/cam1"
	ok := testutil.Start(t, "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=width", "-of", "csv=p=0", withSecret)
	if err := ok.Wait(t, 20*time.Second); err != nil || !strings.Contains(ok.Output(), "320") {
		t.Fatalf("ffprobe with the cluster secret: %v %q", err, ok.Output())
	}

	resp, err := http.Get(a.httpURL("api/v1/streams/live/cam1/plan"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testutil.Eventually(t, 10*time.Second, "the plan API answers with a plan and its cost block", func() bool {
		resp, err := http.Get(a.httpURL("api/v1/streams/live/cam1/plan"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var p overlay.Plan
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&p) == nil && p.Root == "a" && p.Plan.Cost != nil
	})
	resp, err = http.Get(a.httpURL("api/v1/streams/live/nope/plan"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("plan of an unknown stream: HTTP %d, want 404", resp.StatusCode)
	}
}

var (
	gradientOnce sync.Once
	gradientBin  string
	gradientErr  error
)

// buildGradient builds cmd/gradient once per test binary.
func buildGradient(t *testing.T) string {
	t.Helper()
	gradientOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gradient-e2e-bin")
		if err != nil {
			gradientErr = err
			return
		}
		gradientBin = filepath.Join(dir, "gradient")
		if out, err := exec.Command("go", "build", "-o", gradientBin, "../cmd/gradient").CombinedOutput(); err != nil {
			gradientErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if gradientErr != nil {
		t.Fatal(gradientErr)
	}
	return gradientBin
}

// procNode is a `gradient node` process.
type procNode struct {
	name, http, rtsp, gossip string
	proc                     *testutil.Process
}

func (p *procNode) url(path string) string { return "http://" + p.http + "/" + path }

func (p *procNode) status(t *testing.T) (overlay.ClusterStatus, bool) {
	var st overlay.ClusterStatus
	resp, err := http.Get(p.url("api/v1/cluster"))
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
}

func (p *procNode) plan(t *testing.T) (*overlay.Plan, bool) {
	resp, err := http.Get(p.url("api/v1/streams/live/cam1/plan"))
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	var pl overlay.Plan
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&pl) != nil {
		return nil, false
	}
	return &pl, true
}

func startProcNode(t *testing.T, bin, name string, price float64, join string) *procNode {
	t.Helper()
	n := testutil.StartNode(t, testutil.NodeOptions{Bin: bin, Name: name, GossipKey: clusterKey, Join: join, Extra: fmt.Sprintf(`serverlets: {slots: 2}
overlay:
  price_per_mbps: %g
  device_classes:
    phone: {source: 2.91, 360p: 2.9}
    tv: {source: 10, 360p: 2}
  default_device: phone
  last_mile_cost_per_mbps: 0
  planner_debounce: 100ms
  planner_interval: 1s
  probe_interval: 300ms
  probe_timeout: 200ms
  suspicion_mult: 4
  push_pull_interval: 2s
  watch_lease: 3s
  relay_grace: 10s
`, price)})
	return &procNode{name: name, http: n.HTTP, rtsp: n.RTSP, gossip: n.Gossip, proc: n.Proc}
}

func TestOverlayNodeProcessesRepairAfterKill9OfAnInteriorNode(t *testing.T) {
	bin := buildGradient(t)
	prices := []float64{1, 0.01, 0.01, 0.5, 0.5}
	var ps []*procNode
	for i, pr := range prices {
		join := ""
		if i > 0 {
			join = ps[0].gossip
		}
		ps = append(ps, startProcNode(t, bin, fmt.Sprintf("n%d", i), pr, join))
	}
	testutil.Eventually(t, 20*time.Second, "5 processes agree on membership and every pair's RTT", func() bool {
		for _, p := range ps {
			st, ok := p.status(t)
			if !ok || len(st.Members) != 5 {
				return false
			}
		}
		st, _ := ps[0].status(t)
		for _, a := range ps {
			for _, b := range ps {
				if a != b && st.RTTMillis[a.name][b.name] == 0 && st.RTTMillis[b.name][a.name] == 0 {
					return false
				}
			}
		}
		return true
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 960, Height: 540, FPS: 15, Seconds: 6, Bitrate: "600k"})
	testutil.FFmpegPublish(t, clip, "rtsp", "rtsp://"+ps[0].rtsp+"/live/cam1", "-rtsp_transport", "tcp")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	watch := func(p *procNode, device string) string {
		resp, err := noFollow.Get(p.url("watch/live/cam1?device=" + device))
		if err != nil {
			return ""
		}
		resp.Body.Close()
		return resp.Header.Get("Location")
	}
	testutil.Eventually(t, 20*time.Second, "n3 and n4 redirect viewers to a player", func() bool {
		return watch(ps[3], "phone") != "" && watch(ps[4], "tv") != ""
	})
	var plan *overlay.Plan
	testutil.Eventually(t, 20*time.Second, "the plan serves n3's phones with 360p and n4's TV with the source", func() bool {
		p, ok := ps[0].plan(t)
		if !ok {
			return false
		}
		l3, _ := p.Served("n3", "phone")
		l4, _ := p.Served("n4", "tv")
		plan = p
		return l3 == "360p" && l4 == "source"
	})
	if loc := watch(ps[3], "phone"); loc != "/live/cam1@360p/?device=phone" {
		t.Fatalf("n3 redirects a phone to %q, want the 360p player", loc)
	}
	phone := dialViewer(t, ps[3].url("live/cam1@360p/whep?device=phone"))
	tv := dialViewer(t, ps[4].url("live/cam1/whep?device=tv"))
	testutil.Eventually(t, 30*time.Second, "n3 decodes 640x360 and n4 960x540", func() bool {
		f3, w3, h3 := phone.state()
		f4, w4, h4 := tv.state()
		return f3 >= 15 && w3 == 640 && h3 == 360 && f4 >= 15 && w4 == 960 && h4 == 540
	})
	plan, _ = ps[0].plan(t)
	// `gradient status` shows the members, the plan and the relays.
	cli := testutil.Start(t, bin, "status", "--addr", ps[3].http)
	if err := cli.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("gradient status: %v\n%s", err, cli.Output())
	}
	for _, want := range []string{"node n3: 5 members", "plan live/cam1", "transcode at", "live/cam1@360p"} {
		if !strings.Contains(cli.Output(), want) {
			t.Errorf("gradient status output lacks %q:\n%s", want, cli.Output())
		}
	}
	interior := ""
	for _, a := range plan.Plan.Arcs {
		if a.From != "n0" {
			interior = a.From
		}
	}
	if interior == "" {
		t.Fatalf("plan %+v has no interior node", plan.Plan.Arcs)
	}
	var below []*viewer
	var victim *procNode
	for i, p := range ps {
		if p.name == interior {
			victim = p
		} else if par, _, ok := plan.Parent(p.name); ok && par == interior {
			below = append(below, map[int]*viewer{3: phone, 4: tv}[i])
		}
	}
	killed := time.Now()
	if err := victim.proc.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, v := range below {
		if v == nil {
			continue
		}
		testutil.Eventually(t, 20*time.Second, "viewers below the killed node receive frames again", func() bool {
			_, ok := v.firstAfter(killed.Add(2 * time.Second))
			return ok && v.maxGapSince(killed) < 2*time.Second
		})
		gap := v.maxGapSince(killed)
		t.Logf("FIGURE failover (kill -9 of %s, separate processes): viewer interrupted %v at most", interior, gap)
		if gap > 5*time.Second {
			t.Errorf("viewers were interrupted %v after kill -9 of the interior node, want < 5 s", gap)
		}
	}
	testutil.Eventually(t, 20*time.Second, "a new plan without the killed node", func() bool {
		p, ok := ps[0].plan(t)
		if !ok {
			return false
		}
		for _, n := range p.Nodes {
			if n == interior {
				return false
			}
		}
		plan = p
		return true
	})
	t.Logf("re-planned after kill -9 of %s: %+v", interior, plan.Plan.Arcs)
}

// getIn fetches url with an HTTP client of a NetLab host (which does not
// follow redirects) and returns the status and the body.
func getIn(c *http.Client, url string) (status int, body []byte, err error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Three hosts in network namespaces, joined by testutil.NetLab's delaying
// router (this kernel has no netem): one-way delays A–B 5 ms, B–C 5 ms,
// A–C 100 ms, equal prices. Gossip's RTT estimates must order the links,
// and the plan for a TV viewer at C must relay A→B→C (link cost 2 × 1.2)
// rather than A→C (1 + 200/50 = 5).
func TestOverlayRTTEstimatesOrderDelayedLinksAndThePlanTakesTheCheapPath(t *testing.T) {
	testutil.RequireNetLab(t)
	bin := buildGradient(t)
	const d = time.Millisecond
	lab := testutil.NewNetLab(t, [][]time.Duration{
		{0, 5 * d, 100 * d},
		{5 * d, 0, 5 * d},
		{100 * d, 5 * d, 0},
	})
	names := []string{"A", "B", "C"}
	ips := lab.IPs()
	clients := make([]*http.Client, len(ips))
	for i, ip := range ips {
		clients[i] = lab.HTTPClient(t, i)
		join := ""
		if i > 0 {
			join = "  join: [\"" + ips[0] + ":7946\"]\n"
		}
		cfg := fmt.Sprintf(`name: %s
data: %s
http: "%s:8080"
rtsp: {addr: "%s:8554", udp_rtp_addr: "off", udp_rtcp_addr: "off"}
srt: {addr: "off"}
rtmp: {addr: "off"}
webrtc: {ice_udp_addr: "%s:8189"}
auth:              # a lab network of its own: its hosts publish and read the API
  internal_users:
    - user: any
      ips: ["10.0.0.0/8"]
      permissions: [{action: publish}, {action: read}, {action: api}, {action: metrics}]
gossip:
  addr: "%s:7946"
  key: "%s"
%soverlay:
  device_classes:
    tv: {source: 10, 360p: 2}
  default_device: tv
  planner_debounce: 100ms
  planner_interval: 1s
  probe_interval: 500ms
  probe_timeout: 400ms
  watch_lease: 60s
`, names[i], t.TempDir(), ip, ip, ip, ip, clusterKey, join)
		file := filepath.Join(t.TempDir(), names[i]+".yaml")
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		// `ip netns exec` execs the node, so the process killed at
		// cleanup is the node itself.
		lab.Start(t, i, bin, "node", "--config", file)
		testutil.Eventually(t, 20*time.Second, names[i]+" answers", func() bool {
			code, body, err := getIn(clients[i], "http://"+ip+":8080/healthz")
			return err == nil && code == http.StatusOK && strings.HasPrefix(string(body), "ok")
		})
	}
	status := func() (overlay.ClusterStatus, bool) {
		var st overlay.ClusterStatus
		code, body, err := getIn(clients[0], "http://"+ips[0]+":8080/api/v1/cluster")
		return st, err == nil && code == http.StatusOK && json.Unmarshal(body, &st) == nil
	}
	rtt := func(st overlay.ClusterStatus, a, b string) float64 {
		x, y := st.RTTMillis[a][b], st.RTTMillis[b][a]
		switch {
		case x > 0 && y > 0:
			return (x + y) / 2
		case x > 0:
			return x
		}
		return y
	}
	var st overlay.ClusterStatus
	testutil.Eventually(t, 30*time.Second, "A knows the RTT of every pair", func() bool {
		var ok bool
		st, ok = status()
		return ok && len(st.Members) == 3 && rtt(st, "A", "B") > 0 && rtt(st, "B", "C") > 0 && rtt(st, "A", "C") > 0
	})
	ab, bc, ac := rtt(st, "A", "B"), rtt(st, "B", "C"), rtt(st, "A", "C")
	t.Logf("FIGURE RTT estimates at A over delayed links (configured 10, 10, 200 ms): A–B %.1f ms, B–C %.1f ms, A–C %.1f ms", ab, bc, ac)
	if !(ab < ac && bc < ac) || ab < 8 || ac < 150 {
		t.Fatalf("RTT estimates A–B %.1f, B–C %.1f, A–C %.1f ms do not follow the configured RTTs 10, 10, 200 ms", ab, bc, ac)
	}

	lab.Start(t, 0, "ffmpeg", "-hide_banner", "-loglevel", "warning", "-re", "-stream_loop", "-1",
		"-i", testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 15, Seconds: 4}), "-c", "copy", "-f", "rtsp",
		"-rtsp_transport", "tcp", "rtsp://"+ips[0]+":8554/live/cam1")
	testutil.Eventually(t, 20*time.Second, "a TV viewer at C is sent to a player", func() bool {
		code, _, err := getIn(clients[2], "http://"+ips[2]+":8080/watch/live/cam1?device=tv")
		return err == nil && code == http.StatusFound
	})
	var arcs string
	testutil.Eventually(t, 30*time.Second, "the plan relays A→B→C, not over the long A–C link", func() bool {
		code, body, err := getIn(clients[0], "http://"+ips[0]+":8080/api/v1/streams/live/cam1/plan")
		if err != nil || code != http.StatusOK {
			return false
		}
		var p overlay.Plan
		if json.Unmarshal(body, &p) != nil {
			return false
		}
		if a := fmt.Sprintf("%+v", p.Plan.Arcs); a != arcs {
			arcs = a
			t.Logf("plan arcs %s", arcs)
		}
		par, _, ok := p.Parent("C")
		return ok && par == "B"
	})
}
