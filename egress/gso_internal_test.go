package egress

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	itest "github.com/gradient-cdn/gradient/internal/testutil"
)

func TestGSOGroupEnd(t *testing.T) {
	a := netip.MustParseAddrPort("192.0.2.1:5000")
	b := netip.MustParseAddrPort("192.0.2.2:5000")
	a6 := netip.MustParseAddrPort("[2001:db8::1]:5000")
	type pkt struct {
		dst  netip.AddrPort
		size int
	}
	run := func(dst netip.AddrPort, n, size, last int) []pkt {
		var ps []pkt
		for range n {
			ps = append(ps, pkt{dst, size})
		}
		if last > 0 {
			ps = append(ps, pkt{dst, last})
		}
		return ps
	}
	cat := func(runs ...[]pkt) []pkt { return slices.Concat(runs...) }
	for _, tc := range []struct {
		name  string
		pkts  []pkt
		sizes []int // datagrams per group, in order
	}{
		{"one datagram", run(a, 1, 1228, 0), []int{1}},
		{"equal sizes", run(a, 5, 1228, 0), []int{5}},
		{"smaller last", run(a, 5, 1228, 300), []int{6}},
		{"a smaller one ends the group", cat(run(a, 2, 1228, 300), run(a, 3, 1228, 0)), []int{3, 3}},
		{"a larger one breaks the group", cat(run(a, 3, 600, 0), run(a, 2, 1228, 0)), []int{3, 2}},
		{"two smaller in a row", []pkt{{a, 1228}, {a, 500}, {a, 500}}, []int{2, 1}},
		{"addresses in runs", cat(run(a, 3, 1228, 100), run(b, 4, 1228, 200), run(a, 2, 1228, 0)), []int{4, 5, 2}},
		{"interleaved addresses", []pkt{{a, 1228}, {b, 1228}, {a, 1228}, {b, 1228}}, []int{1, 1, 1, 1}},
		{"IPv6", run(a6, 3, 1228, 0), []int{3}},
		{"same IP, other port", []pkt{{a, 1228}, {netip.AddrPortFrom(a.Addr(), 5001), 1228}}, []int{1, 1}},
		{"no address to compare", []pkt{{netip.AddrPort{}, 1228}, {netip.AddrPort{}, 1228}}, []int{1, 1}},
		{"64 segments at most", run(a, 150, 100, 7), []int{64, 64, 23}},
		{"64 segments, the smaller last in the next group", run(a, 64, 100, 7), []int{64, 1}},
		{"65507 bytes at most", run(a, 60, 1228, 0), []int{53, 7}},                        // 53*1228 = 65084, 54*1228 > 65507
		{"65507 bytes exactly", cat(run(a, 1, 65000, 507), run(a, 1, 9, 0)), []int{2, 1}}, // 65000+507 = 65507
		{"one byte over", run(a, 1, 65000, 508), []int{1, 1}},
		{"empty datagram", []pkt{{a, 0}, {a, 0}, {a, 10}, {a, 0}}, []int{1, 1, 1, 1}},
		{"audio then video to one session", cat(run(a, 1, 100, 0), run(a, 3, 1228, 40)), []int{1, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs := make([][]byte, len(tc.pkts))
			keys := make([]netip.AddrPort, len(tc.pkts))
			for i, p := range tc.pkts {
				bufs[i], keys[i] = make([]byte, p.size), p.dst
			}
			var got []int
			for i := 0; i < len(bufs); {
				j := gsoGroupEnd(bufs, keys, i, len(bufs))
				if j <= i || j > len(bufs) {
					t.Fatalf("gsoGroupEnd(%d) = %d", i, j)
				}
				got = append(got, j-i)
				i = j
			}
			if !slices.Equal(got, tc.sizes) {
				t.Fatalf("groups %v, want %v", got, tc.sizes)
			}
		})
	}
}

// receiver is a UDP socket that collects the datagrams it gets.
type receiver struct {
	c   *net.UDPConn
	got chan []byte
}

func newReceiver(t *testing.T, network, addr string) *receiver {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP(network, la)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	r := &receiver{c: c, got: make(chan []byte, 4096)}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(r.got)
				return
			}
			r.got <- bytes.Clone(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return r
}

// expect reads want, in order, each datagram whole.
func (r *receiver) expect(t *testing.T, want [][]byte) {
	t.Helper()
	for i, w := range want {
		select {
		case g := <-r.got:
			if !bytes.Equal(g, w) {
				t.Fatalf("datagram %d: got %d bytes %.8x…, want %d bytes %.8x…", i, len(g), g, len(w), w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("datagram %d of %d not received", i, len(want))
		}
	}
	select {
	case g := <-r.got:
		t.Fatalf("extra datagram of %d bytes", len(g))
	case <-time.After(50 * time.Millisecond):
	}
}

// datagram is n bytes that tell their stream, index and offset apart.
func datagram(stream, i, n int) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(stream*31 + i*7 + k)
	}
	copy(b, fmt.Sprintf("%d/%d/", stream, i))
	return b
}

func counterValue(c prometheus.Counter) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		panic(fmt.Sprint("gather: ", err))
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}

type gsoConn struct {
	*batchConn
	msgs, pkts prometheus.Counter
	logs       *itest.LogBuffer
}

func newGSOConn(t *testing.T, network, addr string, gso bool) *gsoConn {
	t.Helper()
	la, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP(network, la)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { uc.Close() })
	c := &gsoConn{msgs: prometheus.NewCounter(prometheus.CounterOpts{Name: "m", Help: "m"}),
		pkts: prometheus.NewCounter(prometheus.CounterOpts{Name: "p", Help: "p"}), logs: &itest.LogBuffer{}}
	c.batchConn = newBatchConn(uc, gso, slog.New(slog.NewTextHandler(c.logs, nil)), c.msgs, c.pkts)
	return c
}

// sendFrames queues, in one batch, frames of FU-A-like runs to the
// receivers in turn (the way a feed writes an access unit to each session)
// and returns what each receiver must get.
func sendFrames(c *batchConn, rs []*receiver, frames int) [][][]byte {
	want := make([][][]byte, len(rs))
	c.begin()
	for f := range frames {
		for s, r := range rs {
			ap := r.c.LocalAddr().(*net.UDPAddr).AddrPort()
			n := 1 + (f+s)%9
			for i := range n {
				size := 1228
				if i == n-1 {
					size = 100 + 37*f
				}
				d := datagram(s, f*100+i, size)
				want[s] = append(want[s], d)
				if s%2 == 0 {
					_, _ = c.WriteToAddrPort(d, ap)
				} else {
					_, _ = c.WriteTo(d, net.UDPAddrFromAddrPort(ap))
				}
			}
		}
	}
	c.end()
	return want
}

func TestBatchConnGSOKeepsDatagramBoundaries(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("UDP GSO is Linux's")
	}
	for _, tc := range []struct {
		name, network, addr, raddr string
	}{
		{"IPv4", "udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"dual-stack socket to IPv4", "udp", ":0", "127.0.0.1:0"},
		{"IPv6", "udp6", "[::1]:0", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, gso := range []bool{true, false} {
				c := newGSOConn(t, tc.network, tc.addr, gso)
				var rs []*receiver
				for range 3 {
					rs = append(rs, newReceiver(t, "udp", tc.raddr))
				}
				want := sendFrames(c.batchConn, rs, 20)
				for i, r := range rs {
					r.expect(t, want[i])
				}
				msgs, pkts := counterValue(c.msgs), counterValue(c.pkts)
				t.Logf("gso %v: %v GSO messages carried %v datagrams", gso, msgs, pkts)
				if gso && (msgs == 0 || pkts < 2*msgs) {
					t.Fatalf("GSO on: %v messages, %v datagrams; logs:\n%s", msgs, pkts, c.logs)
				}
				if !gso && (msgs != 0 || pkts != 0) {
					t.Fatalf("GSO off: %v messages, %v datagrams", msgs, pkts)
				}
				if c.dropped.Load() != 0 {
					t.Fatalf("%d datagrams dropped", c.dropped.Load())
				}
			}
		})
	}
}

// A socket without UDP checksums (SO_NO_CHECK) makes the kernel refuse
// UDP_SEGMENT with EINVAL at send time: every datagram must still arrive,
// and GSO must be off from then on.
func TestBatchConnFallsBackWhenKernelRefusesGSO(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("UDP GSO is Linux's")
	}
	c := newGSOConn(t, "udp4", "127.0.0.1:0", true)
	if !c.gso {
		t.Skip("no UDP GSO here")
	}
	rc, err := c.UDPConn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) }); err != nil || serr != nil {
		t.Skipf("SO_NO_CHECK: %v %v", err, serr)
	}
	rs := []*receiver{newReceiver(t, "udp4", "127.0.0.1:0"), newReceiver(t, "udp4", "127.0.0.1:0")}
	for range 2 {
		want := sendFrames(c.batchConn, rs, 10)
		for i, r := range rs {
			r.expect(t, want[i])
		}
	}
	if c.gso {
		t.Fatal("GSO still on after the kernel refused it")
	}
	if n := strings.Count(c.logs.String(), "refused a UDP GSO message"); n != 1 {
		t.Fatalf("logged the refusal %d times, want once:\n%s", n, c.logs)
	}
	if m := counterValue(c.msgs); m != 0 {
		t.Fatalf("%v GSO messages counted as sent", m)
	}
	if c.dropped.Load() != 0 {
		t.Fatalf("%d datagrams dropped", c.dropped.Load())
	}
}

// TestNACKBudgetBoundsRetransmissions: a session NACKing everything gets
// at most rate packets resent per second (one second in reserve).
func TestNACKBudgetBoundsRetransmissions(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newNACKBudget(500, t0)
	if got := b.take(2000, t0); got != 500 {
		t.Fatalf("a burst of 2000 NACKed packets: %d resent, want the 500 in reserve", got)
	}
	if got := b.take(100, t0); got != 0 {
		t.Fatalf("more at once: %d resent, want 0", got)
	}
	total := 0
	for i := 1; i <= 100; i++ { // 10 s of NACK floods every 100 ms
		total += b.take(1000, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	if total < 4900 || total > 5000 {
		t.Fatalf("10 s of flooding: %d resent, want ~5000 (500/s)", total)
	}
	if got := b.take(10, t0.Add(time.Hour)); got != 10 {
		t.Fatalf("after an idle hour, 10 NACKed: %d resent", got)
	}
}
