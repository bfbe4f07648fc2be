package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NetLab is a few hosts, each a network namespace, joined by a router in
// the test process that delays every packet by a fixed time per direction.
// It stands in for tc netem, which not every kernel has: each host has a
// TUN device tun0 with the address 10.77.0.(i+1)/24, the test process holds
// the other end of every tun0, and a packet that host i sends to host j's
// address is written to host j's tun0 delay[i][j] after it was read, in the
// order it was sent. Packets to any other address are dropped.
//
// Only IPv4 is routed. Everything a host sends to itself stays on its own
// loopback and is not delayed.
type NetLab struct {
	hosts []string // namespace names
	ips   []string
	delay [][]time.Duration

	tuns    []*os.File
	done    chan struct{}
	wg      sync.WaitGroup
	dropped atomic.Int64
	errMu   sync.Mutex
	err     error // first unexpected read error of a forwarder
}

const netnsDir = "/var/run/netns"

var (
	netLabSeq   atomic.Int32
	netLabOnce  sync.Once
	netLabSkip  string
	staleNSName = regexp.MustCompile(`^gl(\d+)n\d+h\d+$`)
)

// RequireNetLab skips the test unless this machine can build a NetLab: the
// test runs as root, the ip command is there, and a network namespace with
// a TUN device in it can be made and opened (an unprivileged container
// cannot). The probe runs once per test binary.
func RequireNetLab(t testing.TB) {
	t.Helper()
	netLabOnce.Do(func() { netLabSkip = probeNetLab() })
	if netLabSkip != "" {
		t.Skip("no network namespace lab on this machine: " + netLabSkip)
	}
}

func probeNetLab() string {
	if os.Geteuid() != 0 {
		return "the test needs root to create network namespaces and TUN devices"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command (iproute2) is missing; run `make setup` (scripts/setup.sh)"
	}
	removeStaleNamespaces()
	ns := fmt.Sprintf("gl%dn%dh0", os.Getpid(), netLabSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun").CombinedOutput(); err != nil {
		return fmt.Sprintf("ip tuntap add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	defer exec.Command("ip", "-n", ns, "link", "del", "tun0").Run()
	var f *os.File
	err := inNamespace(ns, func() (err error) {
		f, err = openTun("tun0")
		return err
	})
	if err != nil {
		return "open the TUN device in a namespace: " + err.Error()
	}
	f.Close()
	return ""
}

// removeStaleNamespaces deletes the namespaces an earlier test binary left
// behind when it was killed before its cleanup: those named after this
// process's pid (an earlier process had it) or after a pid that no longer
// runs.
func removeStaleNamespaces() {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		m := staleNSName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || unix.Kill(pid, 0) == unix.ESRCH {
			exec.Command("ip", "-n", e.Name(), "link", "del", "tun0").Run()
			exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
}

// NewNetLab builds len(delay) hosts; delay[i][j] is the one-way delay of
// every packet from host i to host j (the diagonal is unused, a zero delay
// forwards at once). The test is skipped where RequireNetLab says so.
// Cleanup stops the router and deletes the namespaces; it runs after the
// cleanups of anything started later in the test, such as processes inside
// the hosts. Host i's namespace is gl<pid>n<lab>h<i>, so that test binaries
// running at the same time do not collide; namespaces that a killed test
// binary left behind are deleted by the next one.
func NewNetLab(t testing.TB, delay [][]time.Duration) *NetLab {
	t.Helper()
	RequireNetLab(t)
	if len(delay) > 99 {
		t.Fatalf("NewNetLab: %d hosts, at most 99", len(delay))
	}
	for i, row := range delay {
		if len(row) != len(delay) {
			t.Fatalf("NewNetLab: delay row %d has %d entries, want %d", i, len(row), len(delay))
		}
	}
	prefix := fmt.Sprintf("gl%dn%d", os.Getpid(), netLabSeq.Add(1))
	l := &NetLab{delay: delay, done: make(chan struct{})}
	t.Cleanup(func() { l.close(t) })
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for i := range delay {
		ns := fmt.Sprintf("%sh%d", prefix, i)
		if len(ns) > 15 {
			t.Fatalf("NewNetLab: namespace name %q is longer than 15 characters", ns)
		}
		ip := fmt.Sprintf("10.77.0.%d", i+1)
		run("netns", "add", ns)
		l.hosts, l.ips = append(l.hosts, ns), append(l.ips, ip)
		run("-n", ns, "link", "set", "lo", "up")
		run("-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun")
		run("-n", ns, "addr", "add", ip+"/24", "dev", "tun0")
		run("-n", ns, "link", "set", "tun0", "up")
		var f *os.File
		if err := inNamespace(ns, func() (err error) {
			f, err = openTun("tun0")
			return err
		}); err != nil {
			t.Fatalf("NewNetLab: open tun0 of %s: %v", ns, err)
		}
		l.tuns = append(l.tuns, f)
	}
	n := len(delay)
	links := make([][]chan packet, n)
	for i := range links {
		links[i] = make([]chan packet, n)
		for j := range links[i] {
			if i == j {
				continue
			}
			links[i][j] = make(chan packet, 8192)
			l.wg.Add(1)
			go l.link(links[i][j], l.tuns[j])
		}
	}
	for i := range l.tuns {
		l.wg.Add(1)
		go l.forward(i, links[i])
	}
	return l
}

// packet is one IPv4 packet on its way, with the time it is due.
type packet struct {
	b   []byte
	due time.Time
}

// forward reads what host i sends and queues it on the link to its
// destination host.
func (l *NetLab) forward(i int, out []chan packet) {
	defer l.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, err := l.tuns[i].Read(buf)
		now := time.Now()
		if err != nil {
			select {
			case <-l.done:
			default:
				l.errMu.Lock()
				if l.err == nil {
					l.err = fmt.Errorf("read tun0 of %s: %w", l.hosts[i], err)
				}
				l.errMu.Unlock()
			}
			return
		}
		// An IPv4 header is at least 20 bytes; the destination is at 16.
		if n < 20 || buf[0]>>4 != 4 {
			l.dropped.Add(1)
			continue
		}
		j := l.hostOf(buf[16:20])
		if j < 0 || j == i {
			l.dropped.Add(1)
			continue
		}
		p := packet{b: append([]byte(nil), buf[:n]...), due: now.Add(l.delay[i][j])}
		select {
		case out[j] <- p:
		default: // the link's queue is full: tail drop
			l.dropped.Add(1)
		}
	}
}

func (l *NetLab) hostOf(dst []byte) int {
	// Hosts are 10.77.0.(i+1).
	if dst[0] != 10 || dst[1] != 77 || dst[2] != 0 {
		return -1
	}
	j := int(dst[3]) - 1
	if j < 0 || j >= len(l.hosts) {
		return -1
	}
	return j
}

// link holds each packet until it is due and writes it to the destination
// host's TUN device, first in, first out: the delay is the same for every
// packet, so the order is kept.
func (l *NetLab) link(in chan packet, to *os.File) {
	defer l.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var p packet
		select {
		case p = <-in:
		case <-l.done:
			return
		}
		if d := time.Until(p.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-l.done:
				timer.Stop()
				return
			}
		}
		if _, err := to.Write(p.b); err != nil {
			l.dropped.Add(1)
		}
	}
}

func (l *NetLab) close(t testing.TB) {
	close(l.done)
	for _, f := range l.tuns {
		f.Close() // unblocks the forwarder's Read
	}
	l.wg.Wait()
	for _, ns := range l.hosts {
		exec.Command("ip", "-n", ns, "link", "del", "tun0").Run()
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	}
	l.errMu.Lock()
	err := l.err
	l.errMu.Unlock()
	if err != nil {
		t.Errorf("NetLab: %v", err)
	}
	if t.Failed() {
		t.Logf("NetLab: %d packets dropped (not IPv4, unknown address, full queue or failed write)", l.dropped.Load())
	}
}

// Hosts are the network namespace names, one per host.
func (l *NetLab) Hosts() []string { return l.hosts }

// IPs are the hosts' addresses: host i has 10.77.0.(i+1).
func (l *NetLab) IPs() []string { return l.ips }

// Command is an exec.Cmd that runs name inside host i (`ip netns exec`,
// which execs name: the process's pid is name's).
func (l *NetLab) Command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.hosts[i], name}, args...)...)
}

// Start is testutil.Start inside host i: the process is killed when the
// test ends, before the lab is taken down.
func (l *NetLab) Start(t testing.TB, i int, name string, args ...string) *Process {
	t.Helper()
	return Start(t, "ip", append([]string{"netns", "exec", l.hosts[i], name}, args...)...)
}

// Do runs fn on an OS thread that has entered host i's network namespace,
// so that the sockets fn opens belong to host i (a socket stays in the
// namespace it was made in, whichever thread uses it later). The thread is
// never given back to the Go scheduler: it ends with fn's goroutine.
func (l *NetLab) Do(i int, fn func() error) error {
	return inNamespace(l.hosts[i], fn)
}

// DialContext dials addr from host i.
func (l *NetLab) DialContext(ctx context.Context, i int, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := l.Do(i, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacket opens a packet socket on host i.
func (l *NetLab) ListenPacket(i int, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := l.Do(i, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Listen opens a stream listener on host i.
func (l *NetLab) Listen(i int, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := l.Do(i, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// HTTPClient is an HTTP client whose connections start on host i. It does
// not follow redirects, so that a test sees them; its idle connections are
// closed when the test ends.
func (l *NetLab) HTTPClient(t testing.TB, i int) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.DialContext(ctx, i, network, addr)
		},
		DisableKeepAlives: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// inNamespace runs fn on a fresh OS thread that has joined the named
// network namespace. The goroutine stays locked to the thread, so the
// runtime discards the thread when fn returns instead of reusing it in the
// wrong namespace.
func inNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(netnsDir+"/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// openTun attaches to the TUN device name of the calling thread's network
// namespace, without packet information headers: every read is one IP
// packet, every write injects one. The file is non-blocking and polled, so
// Close unblocks a Read.
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
	if f == nil {
		return nil, errors.New("os.NewFile failed")
	}
	return f, nil
}
