package ingest

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"time"
)

// The RTSP server writes every interleaved RTP packet of every reader with
// its own write call: about 200 syscalls a second per reader of a 2 Mbit/s
// stream. A coalescingListener wraps accepted connections so that
// interleaved packets ('$' frames) are gathered and written together every
// interval, one syscall per reader per interval instead of one per packet.
// RTSP responses (anything else) are written at once, behind what was
// gathered before them, so request/response latency does not change.
//
// A shared flusher writes with a short deadline and keeps what did not fit,
// so one stalled reader never delays the others. Gathered bytes past
// coalesceSyncAt (a keyframe's burst) are written at once by the session's
// own writer goroutine, as without coalescing, which bounds the memory a
// reader holds and lets the server drop a reader that stalls.
type coalescingListener struct {
	net.Listener
	f *coalesceFlusher
}

const (
	coalesceSyncAt = 8 << 10 // write at once past this
	coalesceSlice  = 2 * time.Millisecond
)

// coalesceBufs recycles the gathering buffers: a reader holds one only
// while it has bytes waiting, a few milliseconds at a time.
var coalesceBufs = sync.Pool{New: func() any { b := make([]byte, 0, coalesceSyncAt); return &b }}

func newCoalescingListener(ln net.Listener, interval time.Duration) *coalescingListener {
	f := &coalesceFlusher{interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	return &coalescingListener{Listener: ln, f: f}
}

func (l *coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &coalescingConn{Conn: c, f: l.f}, nil
}

func (l *coalescingListener) Close() error {
	err := l.Listener.Close()
	l.f.close()
	return err
}

type coalesceFlusher struct {
	interval time.Duration
	mu       sync.Mutex
	dirty    []*coalescingConn
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

func (f *coalesceFlusher) mark(c *coalescingConn) {
	f.mu.Lock()
	f.dirty = append(f.dirty, c)
	f.mu.Unlock()
}

func (f *coalesceFlusher) run() {
	defer close(f.done)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	workers := runtime.GOMAXPROCS(0)
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		f.mu.Lock()
		batch := f.dirty
		f.dirty = nil
		f.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if len(batch) < 64 || workers == 1 {
			for _, c := range batch {
				c.flushPending()
			}
			continue
		}
		var wg sync.WaitGroup
		per := (len(batch) + workers - 1) / workers
		for i := 0; i < len(batch); i += per {
			part := batch[i:min(i+per, len(batch))]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, c := range part {
					c.flushPending()
				}
			}()
		}
		wg.Wait()
	}
}

func (f *coalesceFlusher) close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

type coalescingConn struct {
	net.Conn
	f *coalesceFlusher

	mu       sync.Mutex
	buf      []byte
	marked   bool
	err      error
	deadline time.Time // the server's write deadline
}

// SetWriteDeadline records the server's deadline; it bounds how long
// gathered bytes may wait to be written.
func (c *coalescingConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

func (c *coalescingConn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(p) > 0 && p[0] != '$' || len(c.buf)+len(p) > coalesceSyncAt {
		// A response, or a burst: write what was gathered and p now, in
		// one call, with the server's deadline, on the server's own
		// goroutine, as without coalescing.
		c.Conn.SetWriteDeadline(c.deadline)
		bufs := net.Buffers{c.buf, p}
		_, err := bufs.WriteTo(c.Conn)
		c.release()
		if err != nil {
			c.err = err
			return 0, err
		}
		return len(p), nil
	}
	if c.buf == nil {
		c.buf = (*coalesceBufs.Get().(*[]byte))[:0]
	}
	c.buf = append(c.buf, p...)
	if !c.marked {
		c.marked = true
		c.f.mark(c)
	}
	return len(p), nil
}

// release gives the gathering buffer back to the pool.
func (c *coalescingConn) release() {
	if c.buf != nil && cap(c.buf) == coalesceSyncAt {
		b := c.buf[:0]
		coalesceBufs.Put(&b)
	}
	c.buf = nil
}

func (c *coalescingConn) fail(err error) {
	c.err = err
	c.release()
	c.Conn.Close() // the server's reader notices and ends the session
}

// flushPending writes what was gathered, for at most coalesceSlice, and
// keeps the rest for the next round.
func (c *coalescingConn) flushPending() {
	if !c.mu.TryLock() {
		// Busy writing a response: try again next round rather than hold
		// up every other reader.
		c.f.mark(c)
		return
	}
	defer c.mu.Unlock()
	c.marked = false
	if c.err != nil || len(c.buf) == 0 {
		return
	}
	c.Conn.SetWriteDeadline(time.Now().Add(coalesceSlice))
	n, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:copy(c.buf, c.buf[n:])]
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded):
		if !c.deadline.IsZero() && time.Now().After(c.deadline) {
			c.fail(err)
			return
		}
	default:
		c.fail(err)
		return
	}
	if len(c.buf) > 0 {
		c.marked = true
		c.f.mark(c)
		return
	}
	c.release()
}
