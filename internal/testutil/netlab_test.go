package testutil

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

// udpEcho answers every datagram on host i's port 9000 with itself until
// the test ends.
func udpEcho(t *testing.T, lab *NetLab, i int) string {
	t.Helper()
	addr := lab.IPs()[i] + ":9000"
	c, err := lab.ListenPacket(i, "udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return addr
}

// pingRTTs sends n datagrams one after another from host i to an echo at
// addr and returns the shortest and the longest round trip. A datagram
// unanswered for 2 s is sent again with a new payload (UDP may lose one on
// a loaded machine); an answer to an earlier one is not counted, so a late
// answer cannot pass for a short round trip.
func pingRTTs(t *testing.T, lab *NetLab, i int, addr string, n int) (lo, hi time.Duration) {
	t.Helper()
	c, err := lab.DialContext(context.Background(), i, "udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	lo = time.Hour
	lost := 0
	for k := 0; k < n; k++ {
		for try := 0; ; try++ {
			if try == 3 {
				t.Fatalf("ping %d from host %d to %s: no answer to 3 tries", k, i, addr)
			}
			msg := []byte{byte(k), byte(try), 'p', 'i', 'n', 'g'}
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(start.Add(2 * time.Second))
			var m int
			for err == nil && string(buf[:m]) != string(msg) {
				m, err = c.Read(buf)
			}
			if err != nil {
				lost++
				err = nil
				continue
			}
			rtt := time.Since(start)
			lo, hi = min(lo, rtt), max(hi, rtt)
			break
		}
	}
	if lost > 0 {
		t.Logf("%d of the pings from host %d to %s were lost", lost, i, addr)
	}
	return lo, hi
}

func TestNetLabDelaysEachDirectionByItsOwnDelay(t *testing.T) {
	// Host 0 → 1 takes 30 ms and 1 → 0 20 ms: RTT 50 ms. Host 0 ↔ 2 is
	// undelayed, the control that shows the delay is the link's, not the
	// router's.
	lab := NewNetLab(t, [][]time.Duration{
		{0, 30 * ms, 0},
		{20 * ms, 0, 5 * ms},
		{0, 5 * ms, 0},
	})
	delayed, direct := udpEcho(t, lab, 1), udpEcho(t, lab, 2)

	lo, hi := pingRTTs(t, lab, 0, delayed, 10)
	t.Logf("FIGURE netlab RTT host0↔host1 (30+20 ms configured): min %v, max %v", lo, hi)
	// The router holds every packet for its delay after reading it, so no
	// round trip can be shorter than the two delays together.
	if lo < 50*ms {
		t.Errorf("RTT host 0 ↔ 1 was %v, shorter than the configured 30+20 ms", lo)
	}
	if hi > 550*ms {
		t.Errorf("RTT host 0 ↔ 1 was up to %v, far above the configured 50 ms", hi)
	}
	lo0, hi0 := pingRTTs(t, lab, 0, direct, 10)
	t.Logf("FIGURE netlab RTT host0↔host2 (undelayed): min %v, max %v", lo0, hi0)
	if lo0 > 25*ms {
		t.Errorf("RTT of the undelayed link host 0 ↔ 2 was at least %v, want a few ms", lo0)
	}
}

func TestNetLabKeepsPacketOrderAndCarriesTCP(t *testing.T) {
	lab := NewNetLab(t, [][]time.Duration{{0, 10 * ms}, {10 * ms, 0}})

	// A burst of numbered datagrams arrives in the order it was sent.
	rx, err := lab.ListenPacket(1, "udp4", lab.IPs()[1]+":9001")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := lab.DialContext(context.Background(), 0, "udp4", lab.IPs()[1]+":9001")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	const burst = 200
	for k := uint32(0); k < burst; k++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], k)
		if _, err := tx.Write(b[:]); err != nil {
			t.Fatal(err)
		}
	}
	got, last := 0, -1
	buf := make([]byte, 64)
	for got < burst {
		rx.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := rx.ReadFrom(buf)
		if err != nil {
			break
		}
		k := int(binary.BigEndian.Uint32(buf[:n]))
		if k <= last {
			t.Fatalf("datagram %d arrived after %d: the lab reordered packets", k, last)
		}
		last = k
		got++
	}
	if got < burst*9/10 {
		t.Errorf("%d of %d datagrams arrived", got, burst)
	}

	// A TCP connection from host 0 to host 1 carries a message both ways.
	ln, err := lab.Listen(1, "tcp4", lab.IPs()[1]+":9002")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := lab.DialContext(ctx, 0, "tcp4", lab.IPs()[1]+":9002")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Repeat("gradient ", 2000) // several segments
	go c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c, back); err != nil || string(back) != msg {
		t.Fatalf("TCP echo through the lab: %v (%d bytes back)", err, len(back))
	}

	// Commands run inside a host see its address.
	out, err := lab.Command(1, "ip", "-4", "-o", "addr", "show", "dev", "tun0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), lab.IPs()[1]+"/24") {
		t.Errorf("ip addr inside host 1: %v: %s", err, out)
	}
}

func TestNetLabCleanupRemovesNamespacesAndGoroutines(t *testing.T) {
	RequireNetLab(t)
	var hosts []string
	t.Run("lab", func(t *testing.T) {
		lab := NewNetLab(t, [][]time.Duration{{0, 5 * ms}, {5 * ms, 0}})
		hosts = lab.Hosts()
		addr := udpEcho(t, lab, 1)
		pingRTTs(t, lab, 0, addr, 2)
	})
	for _, h := range hosts {
		if _, err := os.Stat(netnsDir + "/" + h); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists after the test (stat: %v)", h, err)
		}
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, fn := range []string{"(*NetLab).forward", "(*NetLab).link", "inNamespace"} {
		if strings.Contains(stacks, fn) {
			t.Errorf("a %s goroutine outlived the lab:\n%s", fn, stacks)
		}
	}
}
