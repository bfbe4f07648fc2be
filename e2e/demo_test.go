package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/overlay"
)

// demoPorts is a block of 100 ports, free a moment ago, laid out for
// `gradient demo` with up to 10 nodes: HTTP at base, RTSP +10, RTSP UDP
// +20 (pairs), SRT +40, RTMP +50, ICE +60, gossip +70, control +90.
type demoPorts struct{ base int }

func freeDemoPorts(t *testing.T) demoPorts {
	t.Helper()
	for try := 0; try < 100; try++ {
		base := 20000 + 100*rand.IntN(120) // below the ephemeral range
		free := true
		for p := base; p < base+100 && free; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				free = false
				break
			}
			l.Close()
			c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				free = false
				break
			}
			c.Close()
		}
		if free {
			return demoPorts{base}
		}
	}
	t.Fatal("no free block of 100 ports")
	return demoPorts{}
}

func (p demoPorts) args() []string {
	b := p.base
	return []string{"--http-base", fmt.Sprint(b), "--rtsp-base", fmt.Sprint(b + 10), "--rtsp-udp-base", fmt.Sprint(b + 20),
		"--srt-base", fmt.Sprint(b + 40), "--rtmp-base", fmt.Sprint(b + 50), "--ice-base", fmt.Sprint(b + 60),
		"--gossip-base", fmt.Sprint(b + 70), "--control-port", fmt.Sprint(b + 90)}
}

func (p demoPorts) http(i int) string { return fmt.Sprintf("127.0.0.1:%d", p.base+i) }

// used lists the ports a demo of n nodes binds, TCP and UDP.
func (p demoPorts) used(n int) (tcp, udp []int) {
	b := p.base
	tcp = append(tcp, b+90)
	for i := 0; i < n; i++ {
		tcp = append(tcp, b+i, b+10+i, b+50+i, b+70+i)
		udp = append(udp, b+20+2*i, b+21+2*i, b+40+i, b+60+i, b+70+i)
	}
	return tcp, udp
}

func getCluster(t *testing.T, addr string) (overlay.ClusterStatus, error) {
	var st overlay.ClusterStatus
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/api/v1/cluster")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func getPlan(addr, stream string) (overlay.Plan, error) {
	var p overlay.Plan
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/api/v1/streams/" + stream + "/plan")
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return p, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return p, json.NewDecoder(resp.Body).Decode(&p)
}

func planMentions(p overlay.Plan, node string) bool {
	for _, a := range p.Plan.Arcs {
		if a.From == node || a.To == node {
			return true
		}
	}
	for _, tc := range p.Plan.Transcodes {
		if tc.Node == node {
			return true
		}
	}
	for _, n := range p.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

// TestDemoRunsAClusterWithViewersKillsANodeAndStopsClean runs `gradient
// demo --nodes 3 --viewers 6 --kill demo-1`: every node joins (3 alive),
// live/demo gets a plan with arcs, the viewers' device classes show in the
// gossiped demand, every printed URL answers; --kill kills demo-1 and the
// others see it dead and plan without it; POST /kill on the control
// endpoint (with CORS) kills demo-2; SIGINT ends the demo with exit 0, no
// child process left, its temporary folder removed and every port free.
func TestDemoRunsAClusterWithViewersKillsANodeAndStopsClean(t *testing.T) {
	bin := buildGradient(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ports := freeDemoPorts(t)
	args := append([]string{"demo", "--nodes", "3", "--viewers", "6", "--size", "640x360", "--fps", "15", "--bitrate", "800k",
		"--kill", "demo-1", "--kill-after", "10s", "--grace", "5s"}, ports.args()...)
	p := testutil.Start(t, bin, args...)
	testutil.Eventually(t, 75*time.Second, "the demo says the cluster is up", func() bool {
		select {
		case <-p.Done():
			t.Fatalf("the demo exited: %v\n%s", p.Err(), p.Output())
		default:
		}
		return strings.Contains(p.Output(), "cluster up")
	})
	out := p.Output()

	// All three alive, as another node than the root sees it.
	st, err := getCluster(t, ports.http(2))
	if err != nil {
		t.Fatalf("cluster on demo-2: %v", err)
	}
	alive := 0
	for _, m := range st.Members {
		if m.State == "alive" && strings.HasPrefix(m.Name, "demo-") {
			alive++
		}
	}
	if alive != 3 {
		t.Errorf("demo-2 sees %d nodes alive, want 3: %+v", alive, st.Members)
	}
	plan, err := getPlan(ports.http(0), "live/demo")
	if err != nil || len(plan.Plan.Arcs) == 0 {
		t.Fatalf("plan of live/demo: %v, %+v", err, plan)
	}
	t.Logf("plan: arcs %+v transcodes %+v", plan.Plan.Arcs, plan.Plan.Transcodes)

	// Every URL the demo printed answers (the watch URL with its redirect).
	noFollow := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	urls := regexp.MustCompile(`(?m)^\s+(dashboard|player|watch|plan|cluster):\s+(http://\S+)`).FindAllStringSubmatch(out, -1)
	if len(urls) != 5 {
		t.Fatalf("want 5 printed URLs, got %q in\n%s", urls, out)
	}
	for _, u := range urls {
		resp, err := noFollow.Get(u[2])
		if err != nil {
			t.Errorf("%s %s: %v", u[1], u[2], err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := http.StatusOK
		if u[1] == "watch" {
			want = http.StatusFound
		}
		if resp.StatusCode != want {
			t.Errorf("%s %s: HTTP %d, want %d", u[1], u[2], resp.StatusCode, want)
		}
	}

	// The viewers' device classes reach the gossiped demand.
	testutil.Eventually(t, 30*time.Second, "phone and tv viewers in the demand", func() bool {
		st, err := getCluster(t, ports.http(0))
		if err != nil {
			return false
		}
		classes := map[string]int{}
		for _, d := range st.Demand {
			if d.Stream == "live/demo" {
				for c, n := range d.Viewers {
					classes[c] += n
				}
			}
		}
		return classes["phone"] > 0 && classes["tv"] > 0
	})

	pids := map[string]int{}
	for _, m := range regexp.MustCompile(`started (demo-\d+|publisher) pid (\d+)`).FindAllStringSubmatch(out, -1) {
		pids[m[1]+"/"+m[2]], _ = strconv.Atoi(m[2])
	}
	if len(pids) < 4 {
		t.Fatalf("want 3 node and a publisher pid printed, got %v\n%s", pids, out)
	}

	// --kill demo-1: it dies, the others see it dead and plan without it.
	testutil.Eventually(t, 30*time.Second, "the demo kills demo-1", func() bool { return strings.Contains(p.Output(), "killed demo-1") })
	for k, pid := range pids {
		if strings.HasPrefix(k, "demo-1/") {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				t.Errorf("demo-1 (pid %d) still exists after the kill", pid)
			}
		}
	}
	testutil.Eventually(t, 40*time.Second, "demo-0 and demo-2 see demo-1 dead and demo-0 plans without it", func() bool {
		for _, i := range []int{0, 2} {
			st, err := getCluster(t, ports.http(i))
			if err != nil {
				return false
			}
			for _, m := range st.Members {
				if m.Name == "demo-1" && m.State != "dead" && m.State != "left" {
					return false
				}
			}
		}
		p2, err := getPlan(ports.http(0), "live/demo")
		return err == nil && p2.Version != plan.Version && !planMentions(p2, "demo-1")
	})

	// The control endpoint: CORS preflight, an unknown node, then demo-2.
	ctl := fmt.Sprintf("http://127.0.0.1:%d", ports.base+90)
	req, _ := http.NewRequest(http.MethodOptions, ctl+"/kill?node=demo-2", nil)
	req.Header.Set("Origin", "http://"+ports.http(0))
	req.Header.Set("Access-Control-Request-Method", "POST")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("preflight of /kill: %v %+v", err, resp)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Post(ctl+"/kill?node=demo-9", "", nil); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /kill of an unknown node: %v %+v, want 404", err, resp)
	} else {
		resp.Body.Close()
	}
	resp, err := http.Post(ctl+"/kill?node=demo-2", "", nil)
	if err != nil {
		t.Fatalf("POST /kill: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("POST /kill?node=demo-2: HTTP %d %q, CORS %q", resp.StatusCode, body, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(p.Output(), "killed demo-2") {
		t.Errorf("the demo did not report demo-2 killed:\n%s", p.Output())
	}

	// SIGINT: exit 0, nothing left.
	p.Cmd.Process.Signal(syscall.SIGINT)
	if err := p.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("the demo's exit after SIGINT: %v\n%s", err, p.Output())
	}
	for k, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("%s (pid %d) is left after the demo exited", k, pid)
		}
	}
	m := regexp.MustCompile(`logs and data in (\S+)`).FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(m[1], tmp) {
		t.Errorf("the demo did not name its temporary folder under %s:\n%s", tmp, out)
	} else if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("temporary folder %s is left: %v", m[1], err)
	}
	tcp, udp := ports.used(3)
	for _, port := range tcp {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("port %d/tcp still taken: %v", port, err)
			continue
		}
		l.Close()
	}
	for _, port := range udp {
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("port %d/udp still taken: %v", port, err)
			continue
		}
		c.Close()
	}
}

// TestDemoRefusesATakenPort: with demo-1's HTTP port taken, the demo exits
// non-zero naming that port and what needs it, and starts nothing (no
// process, no temporary folder).
func TestDemoRefusesATakenPort(t *testing.T) {
	bin := buildGradient(t)
	tmp := t.TempDir()
	ports := freeDemoPorts(t)
	l, err := net.Listen("tcp", ports.http(1))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(bin, append([]string{"demo", "--nodes", "3", "--viewers", "6"}, ports.args()...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the demo did not refuse within 20s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("the demo started with port %d taken:\n%s", ports.base+1, out)
	}
	if want := fmt.Sprintf("port %d/tcp, needed for demo-1 HTTP, is taken", ports.base+1); !strings.Contains(string(out), want) {
		t.Errorf("the refusal does not say %q:\n%s", want, out)
	}
	if strings.Contains(string(out), "started") {
		t.Errorf("the demo started something:\n%s", out)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("the demo left %d entries in TMPDIR", len(ents))
	}
}

// TestDemoChildrenDieWithTheDemo: a demo killed with SIGKILL (no chance to
// clean up) takes its nodes and publisher with it (the kernel's parent-death
// signal).
func TestDemoChildrenDieWithTheDemo(t *testing.T) {
	bin := buildGradient(t)
	t.Setenv("TMPDIR", t.TempDir())
	ports := freeDemoPorts(t)
	p := testutil.Start(t, bin, append([]string{"demo", "--nodes", "2", "--viewers", "0", "--size", "320x180", "--fps", "10", "--bitrate", "300k"}, ports.args()...)...)
	re := regexp.MustCompile(`started (demo-\d+|publisher) pid (\d+)`)
	testutil.Eventually(t, 60*time.Second, "the demo starts 2 nodes and the publisher", func() bool {
		return len(re.FindAllString(p.Output(), -1)) == 3
	})
	p.Cmd.Process.Kill()
	<-p.Done()
	for _, m := range re.FindAllStringSubmatch(p.Output(), -1) {
		testutil.Eventually(t, 10*time.Second, m[1]+" dies with the demo", func() bool {
			b, err := os.ReadFile("/proc/" + m[2] + "/stat")
			// Gone, or a zombie waiting for init to reap it.
			return err != nil || strings.Contains(string(b), ") Z ")
		})
	}
}
