package connlimit

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// Connections from one IP beyond the limit are answered by Refuse and
// closed; closing one gives its place back.
func TestListenerClosesAnIPsConnectionsBeyondItsLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(ln, Config{PerLoopback: 2, Refuse: func(c net.Conn) { io.WriteString(c, "busy\n") }, What: "test"})
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(), dial()
	defer a.Close()
	defer b.Close()
	sa, sb := <-accepted, <-accepted
	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(third).ReadString('\n')
	if line != "busy\n" {
		t.Fatalf("third connection read %q, %v; want the refusal", line, err)
	}
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection still open after its refusal")
	}
	if l.Refused() != 1 || l.Open("127.0.0.1") != 2 {
		t.Fatalf("refused %d open %d, want 1 and 2", l.Refused(), l.Open("127.0.0.1"))
	}
	sa.Close()
	sa.Close() // a second Close gives nothing back twice
	if n := l.Open("127.0.0.1"); n != 1 {
		t.Fatalf("open %d after one close, want 1", n)
	}
	d := dial()
	defer d.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a connection within the limit again was not accepted")
	}
	sb.Close()
}

func TestRateAllowsNPerWindowPerKey(t *testing.T) {
	r := NewRate(3, time.Minute)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if !r.Take("a") {
			t.Fatalf("take %d refused", i)
		}
	}
	if r.Take("a") {
		t.Fatal("4th take in the window allowed")
	}
	if !r.Take("b") {
		t.Fatal("another key refused")
	}
	now = now.Add(time.Minute)
	if !r.Take("a") {
		t.Fatal("refused after the window")
	}
}
