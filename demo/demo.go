// Package demo runs a whole Gradient cluster on one host for a demonstration:
// N `gradient node` child processes on loopback, in two or three regions
// with dear links between them, the built-in test pattern published into
// the first, and synthetic WHEP and HLS viewers of several device classes
// watching through /watch, so that the cluster plans a tree that relays
// once per region and places transcodes inside the network.
//
// Run starts it all, prints the URLs, and on the context's end stops every
// process it started (SIGTERM, then SIGKILL after a grace), removes its
// temporary folder and frees every port. Children get SIGKILL from the
// kernel when the demo process dies hard (Linux).
package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Stream is the path the demo publishes and its viewers watch.
const Stream = "live/demo"

// Config is one demo run. The zero value of a port base means its default.
type Config struct {
	// Bin is the gradient binary the nodes and the publisher run.
	Bin string
	// Nodes is the number of nodes (1-50). Default 5.
	Nodes int
	// Viewers is the number of synthetic viewers (0-500). Default 12.
	Viewers int
	// Node i listens on base+i for each of these (RTSPUDPBase+2i and the
	// next for RTSP's RTP/RTCP pair). Defaults: the node defaults (8080,
	// 8554, 8000, 8890, 1935, 8189, 7946).
	HTTPBase, RTSPBase, RTSPUDPBase, SRTBase, RTMPBase, ICEBase, GossipBase int
	// ControlPort serves POST /kill?node=NAME. Default HTTPBase+100.
	ControlPort int
	// Kill names a node to kill (SIGKILL) KillAfter after the cluster is
	// up, to show the repair. Empty: none.
	Kill      string
	KillAfter time.Duration
	// Grace is how long a child has to exit after SIGTERM before SIGKILL.
	// Default 5s.
	Grace time.Duration
	// Size, FPS and Bitrate are the test pattern's. Defaults 1280x720, 30, 2M.
	Size    string
	FPS     int
	Bitrate string
	// Out receives the URLs and progress lines. Default os.Stdout.
	Out io.Writer
	// Log receives diagnostics. Default slog.Default().
	Log *slog.Logger
}

const host = "127.0.0.1"

// Defaults of KillAfter and Grace.
const (
	DefaultKillAfter = 20 * time.Second
	DefaultGrace     = 5 * time.Second
)

func (c *Config) fill() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Nodes, 5)
	def(&c.HTTPBase, 8080)
	def(&c.RTSPBase, 8554)
	def(&c.RTSPUDPBase, 8000)
	def(&c.SRTBase, 8890)
	def(&c.RTMPBase, 1935)
	def(&c.ICEBase, 8189)
	def(&c.GossipBase, 7946)
	def(&c.ControlPort, c.HTTPBase+100)
	def(&c.FPS, 30)
	if c.Grace == 0 {
		c.Grace = 5 * time.Second
	}
	if c.KillAfter == 0 {
		c.KillAfter = 20 * time.Second
	}
	if c.Size == "" {
		c.Size = "1280x720"
	}
	if c.Bitrate == "" {
		c.Bitrate = "2M"
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Validate checks the numbers, and that the demo's ports do not collide
// with one another.
func (c *Config) Validate() error {
	if c.Nodes < 1 || c.Nodes > 50 {
		return fmt.Errorf("--nodes %d: want 1 to 50", c.Nodes)
	}
	if c.Viewers < 0 || c.Viewers > 500 {
		return fmt.Errorf("--viewers %d: want 0 to 500", c.Viewers)
	}
	if c.RTSPUDPBase%2 != 0 {
		return fmt.Errorf("--rtsp-udp-base %d: must be even (RTSP pairs RTP on an even port with RTCP on the next)", c.RTSPUDPBase)
	}
	if c.Kill != "" && c.nodeIndex(c.Kill) < 0 {
		return fmt.Errorf("--kill %q: no such node (demo-0 … demo-%d)", c.Kill, c.Nodes-1)
	}
	if c.Bin == "" {
		return errors.New("no gradient binary")
	}
	seen := map[string]string{}
	for _, p := range c.ports() {
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("port %d (%s) is out of range: lower the port bases or --nodes", p.port, p.what)
		}
		k := fmt.Sprintf("%d/%s", p.port, p.network)
		if prev, dup := seen[k]; dup {
			return fmt.Errorf("port %s is both %s and %s: move a port base", k, prev, p.what)
		}
		seen[k] = p.what
	}
	return nil
}

func (c *Config) nodeIndex(name string) int {
	for i := 0; i < c.Nodes; i++ {
		if nodeName(i) == name {
			return i
		}
	}
	return -1
}

func nodeName(i int) string { return fmt.Sprintf("demo-%d", i) }

type portUse struct {
	port    int
	network string // "tcp" or "udp"
	what    string
}

// ports lists every port the demo binds, with what binds it.
func (c *Config) ports() []portUse {
	var ps []portUse
	ps = append(ps, portUse{c.ControlPort, "tcp", "the demo's control endpoint"})
	for i := 0; i < c.Nodes; i++ {
		n := nodeName(i)
		ps = append(ps,
			portUse{c.HTTPBase + i, "tcp", n + " HTTP"},
			portUse{c.RTSPBase + i, "tcp", n + " RTSP"},
			portUse{c.RTSPUDPBase + 2*i, "udp", n + " RTSP RTP"},
			portUse{c.RTSPUDPBase + 2*i + 1, "udp", n + " RTSP RTCP"},
			portUse{c.SRTBase + i, "udp", n + " SRT"},
			portUse{c.RTMPBase + i, "tcp", n + " RTMP"},
			portUse{c.ICEBase + i, "udp", n + " WebRTC ICE"},
			portUse{c.GossipBase + i, "tcp", n + " gossip"},
			portUse{c.GossipBase + i, "udp", n + " gossip"},
		)
	}
	return ps
}

// CheckPorts binds every port the demo needs for a moment, and names the
// first one that is taken.
func (c *Config) CheckPorts() error {
	for _, p := range c.ports() {
		addr := net.JoinHostPort(host, fmt.Sprint(p.port))
		var err error
		if p.network == "tcp" {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				l.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", addr); err == nil {
				pc.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("port %d/%s, needed for %s, is taken (%v); stop what uses it or move the port bases (see gradient demo -h)", p.port, p.network, p.what, err)
		}
	}
	return nil
}

// regions gives node i's region: two regions from 2 nodes, three from 5.
func (c *Config) region(i int) string {
	names := []string{"eu", "us", "ap"}
	r := 1
	switch {
	case c.Nodes >= 5:
		r = 3
	case c.Nodes >= 2:
		r = 2
	}
	return names[i*r/c.Nodes]
}

// child is one process the demo started.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string // its log file

	mu     sync.Mutex
	killed bool // by the demo, on purpose
}

func (ch *child) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// demo is a running demo.
type demo struct {
	cfg   Config
	tmp   string
	key   string
	mu    sync.Mutex
	nodes []*child
	pub   *child
	log   *slog.Logger
}

// Run runs the demo until ctx ends, then stops and removes everything it
// started. A port that is taken, or a bad configuration, is refused before
// anything starts.
func Run(ctx context.Context, cfg Config) error {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.CheckPorts(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "gradient-demo-")
	if err != nil {
		return err
	}
	d := &demo{cfg: cfg, tmp: tmp, log: cfg.Log.With("component", "demo")}
	fmt.Fprintf(cfg.Out, "logs and data in %s (removed at exit)\n", tmp)
	defer func() {
		if err := os.RemoveAll(tmp); err != nil {
			d.log.Warn("removing the temporary folder", "dir", tmp, "err", err)
		}
	}()
	k := make([]byte, 32)
	rand.Read(k)
	d.key = base64.StdEncoding.EncodeToString(k)

	ctl, err := d.serveControl()
	if err != nil {
		return err
	}
	defer ctl.Close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // viewers first: their DELETEs reach live nodes
		d.stopAll()
	}()

	// demo-0 first: the others join its gossip port, and a node that finds
	// no seed at start stays alone.
	for i := 0; i < cfg.Nodes && ctx.Err() == nil; i++ {
		ch, err := d.startNode(i)
		if err != nil {
			return err
		}
		fmt.Fprintf(cfg.Out, "started %s pid %d region %s http://%s/\n", ch.name, ch.cmd.Process.Pid, cfg.region(i), d.httpAddr(i))
		if i == 0 || i == cfg.Nodes-1 {
			if err := d.waitHealthy(runCtx); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.supervisePublisher(runCtx) }()
	d.printURLs()

	for i := 0; i < cfg.Viewers; i++ {
		v := d.newViewer(i)
		wg.Add(1)
		go func() { defer wg.Done(); v.run(runCtx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.announceUp(runCtx) }()

	<-ctx.Done()
	fmt.Fprintln(cfg.Out, "stopping the demo")
	return nil
}

func (d *demo) httpAddr(i int) string {
	return net.JoinHostPort(host, fmt.Sprint(d.cfg.HTTPBase+i))
}

func (d *demo) addr(base, i int) string { return net.JoinHostPort(host, fmt.Sprint(base+i)) }

// nodeConfig is node i's config file: the cluster key, its region, the
// region price table, and the dashboard's demo control URL.
func (d *demo) nodeConfig(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gossip:\n  key: %q\n", d.key)
	fmt.Fprintf(&b, "overlay:\n  region: %s\n", d.cfg.region(i))
	// Loopback answers a ping in microseconds: the demo detects a killed
	// node in about 2 s instead of the default's 4-5 s (1 s probes), so
	// the repair it is there to show follows the kill at once.
	b.WriteString("  probe_interval: 400ms\n  probe_timeout: 200ms\n")
	regions := map[string]bool{}
	for j := 0; j < d.cfg.Nodes; j++ {
		regions[d.cfg.region(j)] = true
	}
	var rs []string
	for _, r := range []string{"eu", "us", "ap"} {
		if regions[r] {
			rs = append(rs, r)
		}
	}
	if len(rs) > 0 {
		b.WriteString("  region_prices:\n")
		for x := range rs {
			for y := x; y < len(rs); y++ {
				price := 1
				if x != y {
					price = 20 // a link between regions costs 20x one inside
				}
				fmt.Fprintf(&b, "    - {a: %s, b: %s, price: %d}\n", rs[x], rs[y], price)
			}
		}
	}
	fmt.Fprintf(&b, "dashboard:\n  demo_url: http://%s\n", net.JoinHostPort(host, fmt.Sprint(d.cfg.ControlPort)))
	return b.String()
}

func (d *demo) startNode(i int) (*child, error) {
	name := nodeName(i)
	dir := filepath.Join(d.tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfgPath, []byte(d.nodeConfig(i)), 0o600); err != nil {
		return nil, err
	}
	c := d.cfg
	args := []string{"node", "--config", cfgPath, "--name", name, "--data", filepath.Join(dir, "data"),
		"--http", d.httpAddr(i),
		"--rtsp", d.addr(c.RTSPBase, i),
		"--rtsp-udp", d.addr(c.RTSPUDPBase, 2*i) + "," + d.addr(c.RTSPUDPBase, 2*i+1),
		"--srt", d.addr(c.SRTBase, i),
		"--rtmp", d.addr(c.RTMPBase, i),
		"--ice-udp", d.addr(c.ICEBase, i),
		"--gossip", d.addr(c.GossipBase, i),
	}
	if i > 0 {
		args = append(args, "--join", d.addr(c.GossipBase, 0))
	}
	ch, err := d.start(name, filepath.Join(d.tmp, name+".log"), args...)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.nodes = append(d.nodes, ch)
	d.mu.Unlock()
	return ch, nil
}

// start runs the gradient binary with args, its output into logPath.
func (d *demo) start(name, logPath string, args ...string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.cfg.Bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		ch.err = cmd.Wait()
		f.Close()
		close(ch.done)
		ch.mu.Lock()
		killed := ch.killed
		ch.mu.Unlock()
		if !killed {
			d.log.Warn("a demo process exited", "name", name, "err", ch.err, "log_tail", tail(logPath, 1500))
		}
	}()
	return ch, nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitHealthy waits until every node answers /healthz.
func (d *demo) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	d.mu.Lock()
	nodes := append([]*child(nil), d.nodes...)
	d.mu.Unlock()
	for i, ch := range nodes {
		for {
			if ch.exited() {
				return fmt.Errorf("%s exited while starting: %v\n%s", ch.name, ch.err, tail(ch.log, 3000))
			}
			resp, err := http.Get("http://" + d.httpAddr(i) + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not answer /healthz within 60s\n%s", ch.name, tail(ch.log, 3000))
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// supervisePublisher publishes the test pattern into node 0 over RTSP, and
// starts it again if it stops (node 0 restarting, say) until ctx ends.
func (d *demo) supervisePublisher(ctx context.Context) {
	url := fmt.Sprintf("rtsp://%s/%s", d.addr(d.cfg.RTSPBase, 0), Stream)
	for ctx.Err() == nil {
		ch, err := d.start("publisher", filepath.Join(d.tmp, "publisher.log"), "publish", "--testsrc",
			"--size", d.cfg.Size, "--fps", fmt.Sprint(d.cfg.FPS), "--bitrate", d.cfg.Bitrate, url)
		if err != nil {
			d.log.Error("starting the publisher", "err", err)
			return
		}
		fmt.Fprintf(d.cfg.Out, "started publisher pid %d into %s\n", ch.cmd.Process.Pid, url)
		d.mu.Lock()
		d.pub = ch
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ch.done:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (d *demo) printURLs() {
	c := d.cfg
	w := c.Out
	fmt.Fprintf(w, "\n  Gradient demo: %d nodes, the test pattern on %s into demo-0, %d synthetic viewers.\n", c.Nodes, Stream, c.Viewers)
	fmt.Fprintf(w, "    dashboard:  http://%s/\n", d.httpAddr(0))
	fmt.Fprintf(w, "    player:     http://%s/%s/\n", d.httpAddr(0), Stream)
	fmt.Fprintf(w, "    watch:      http://%s/watch/%s?device=phone   (or tv, laptop; any node)\n", d.httpAddr(c.Nodes-1), Stream)
	fmt.Fprintf(w, "    plan:       http://%s/api/v1/streams/%s/plan\n", d.httpAddr(0), Stream)
	fmt.Fprintf(w, "    cluster:    http://%s/api/v1/cluster\n", d.httpAddr(0))
	fmt.Fprintf(w, "    kill:       curl -X POST 'http://%s/kill?node=demo-1'\n", net.JoinHostPort(host, fmt.Sprint(c.ControlPort)))
	fmt.Fprintf(w, "  Ctrl-C stops.\n\n")
}

// Kill kills node name with SIGKILL.
func (d *demo) kill(name string) error {
	d.mu.Lock()
	var ch *child
	for _, n := range d.nodes {
		if n.name == name {
			ch = n
		}
	}
	d.mu.Unlock()
	if ch == nil {
		return errNoNode
	}
	if ch.exited() {
		return errGone
	}
	ch.mu.Lock()
	ch.killed = true
	ch.mu.Unlock()
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-ch.done
	fmt.Fprintf(d.cfg.Out, "killed %s (pid %d)\n", name, ch.cmd.Process.Pid)
	return nil
}

var (
	errNoNode = errors.New("no such node")
	errGone   = errors.New("the node is not running")
)

// stopAll stops every child: SIGTERM, then SIGKILL after the grace.
func (d *demo) stopAll() {
	d.mu.Lock()
	all := append([]*child(nil), d.nodes...)
	if d.pub != nil {
		all = append(all, d.pub)
	}
	d.mu.Unlock()
	for _, ch := range all {
		ch.mu.Lock()
		ch.killed = true
		ch.mu.Unlock()
		if !ch.exited() {
			_ = ch.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	timer := time.NewTimer(d.cfg.Grace)
	defer timer.Stop()
	for _, ch := range all {
		select {
		case <-ch.done:
		case <-timer.C:
			for _, c := range all {
				if !c.exited() {
					d.log.Warn("a demo process did not stop in time: SIGKILL", "name", c.name, "grace", d.cfg.Grace)
					_ = c.cmd.Process.Signal(syscall.SIGKILL)
				}
			}
			for _, c := range all {
				<-c.done
			}
			return
		}
	}
}
