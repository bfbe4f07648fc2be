package ingest

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func tcpPair(t *testing.T) (server, client net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestCoalescingConnGathersFramesInOrderAndSendsResponsesAtOnce(t *testing.T) {
	server, client := tcpPair(t)
	inner := &countingConn{Conn: server}
	f := &coalesceFlusher{interval: 5 * time.Millisecond, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	defer f.close()
	c := &coalescingConn{Conn: inner, f: f}

	var want bytes.Buffer
	for i := 0; i < 100; i++ {
		frame := append([]byte{'$', 0, 0, 4}, byte(i), byte(i), byte(i), byte(i))
		want.Write(frame)
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	resp := []byte("RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n")
	want.Write(resp)
	if _, err := c.Write(resp); err != nil {
		t.Fatal(err)
	}
	// The response forced out everything before it, in order, at once.
	got := make([]byte, want.Len())
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("bytes reordered or lost")
	}
	if n := inner.writes.Load(); n > 3 {
		t.Fatalf("%d writes for 100 frames and a response, want them gathered", n)
	}

	// Frames alone go out on the flusher's tick.
	c.Write([]byte{'$', 0, 0, 1, 9})
	one := make([]byte, 5)
	if _, err := io.ReadFull(client, one); err != nil || one[4] != 9 {
		t.Fatalf("gathered frame not flushed: %v", err)
	}
}

func TestCoalescingConnCutsOffAStalledReader(t *testing.T) {
	server, _ := tcpPair(t) // the client never reads
	f := &coalesceFlusher{interval: time.Millisecond, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	defer f.close()
	c := &coalescingConn{Conn: server, f: f}
	c.SetWriteDeadline(time.Now().Add(2 * time.Second)) // the server's write timeout
	frame := append([]byte{'$', 0, 0x03, 0xfc}, make([]byte, 1020)...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.Write(frame); err != nil {
			return // cut off: the write passed the server's deadline
		}
		if time.Now().After(deadline) {
			t.Fatal("a reader that never reads was not cut off")
		}
	}
}
