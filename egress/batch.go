package egress

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv6"
)

// batchConn is the ICE mux's UDP socket. While a feed fans a unit out
// (between begin and end) it queues outgoing datagrams and sends them with
// one sendmmsg call per batch: on a node with hundreds of viewers the
// per-packet system call is most of the egress CPU. Outside a fan-out
// (handshakes, STUN, reports) datagrams go out at once.
//
// With GSO (Linux, with WebRTCConfig.GSO), each run of queued
// datagrams to one address that gsoGroupEnd accepts is one message of the
// batch, with a UDP_SEGMENT control message: the kernel walks its send
// path once per run instead of once per datagram.
type batchConn struct {
	*net.UDPConn
	pc  *ipv6.PacketConn // works for IPv4 sockets too: Linux sendmmsg takes any sockaddr
	log *slog.Logger

	mu       sync.Mutex
	batching int
	n        int                             // queued datagrams
	bufs     [][]byte                        // queued datagrams' bytes
	dsts     []net.Addr                      // and destinations
	keys     []netip.AddrPort                // and destinations to compare (zero if not a UDP address)
	msgs     []ipv6.Message                  // the messages of one sendmmsg, built by pack
	first    []int                           // first datagram of each message; first[len] = n
	oob      [][]byte                        // each message's room for a UDP_SEGMENT cmsg
	addrs    map[netip.AddrPort]*net.UDPAddr // viewers' addresses, to not allocate one per datagram
	dropped  atomic.Uint64

	gso                    bool // under mu: send runs as GSO messages
	mGSOMessages, mGSOPkts prometheus.Counter
}

// batchSize is how many datagrams are queued before a flush. A GSO run cut
// by a flush leaves as two messages; in the WHEP fan-out bench a queue of
// 256 made no fewer messages per datagram nor less CPU than 64.
const batchSize = 64

// newBatchConn wraps c; gso asks for GSO, which is used if the socket
// takes UDP_SEGMENT. The counters may be nil.
func newBatchConn(c *net.UDPConn, gso bool, log *slog.Logger, gsoMessages, gsoPackets prometheus.Counter) *batchConn {
	if log == nil {
		log = slog.Default()
	}
	if gso {
		if err := gsoProbe(c); err != nil {
			log.Info("webrtc: UDP GSO not available, sending datagrams one by one", "error", err)
			gso = false
		}
	}
	if gsoMessages == nil {
		gsoMessages = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
	}
	if gsoPackets == nil {
		gsoPackets = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
	}
	b := &batchConn{UDPConn: c, pc: ipv6.NewPacketConn(c), log: log,
		bufs: make([][]byte, batchSize), dsts: make([]net.Addr, batchSize), keys: make([]netip.AddrPort, batchSize),
		msgs: make([]ipv6.Message, batchSize), first: make([]int, batchSize+1), oob: make([][]byte, batchSize),
		addrs: map[netip.AddrPort]*net.UDPAddr{}, gso: gso, mGSOMessages: gsoMessages, mGSOPkts: gsoPackets}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, 0, 1500)
		if gso {
			b.oob[i] = make([]byte, 0, gsoCmsgSpace)
		}
	}
	return b
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.batching++
	c.mu.Unlock()
}

func (c *batchConn) end() {
	c.mu.Lock()
	c.batching--
	c.flushLocked()
	c.mu.Unlock()
}

func (c *batchConn) queue(b []byte, addr net.Addr, ap netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching == 0 {
		return false
	}
	if addr == nil {
		ua, ok := c.addrs[ap]
		if !ok {
			if len(c.addrs) >= 1<<14 {
				clear(c.addrs)
			}
			ua = net.UDPAddrFromAddrPort(ap)
			c.addrs[ap] = ua
		}
		addr = ua
	} else if ua, ok := addr.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
	}
	if c.n == len(c.bufs) {
		c.flushLocked()
	}
	c.bufs[c.n] = append(c.bufs[c.n][:0], b...)
	c.dsts[c.n] = addr
	c.keys[c.n] = ap
	c.n++
	return true
}

// pack fills c.msgs with the queued datagrams from p on, each run that
// gsoGroupEnd accepts as one GSO message, except the datagrams before
// single, sent alone. It returns the number of messages.
func (c *batchConn) pack(p, single int) int {
	m := 0
	for ; p < c.n; m++ {
		end := p + 1
		if c.gso && p >= single {
			end = gsoGroupEnd(c.bufs, c.keys, p, c.n)
		}
		msg := &c.msgs[m]
		msg.Buffers = c.bufs[p:end]
		msg.Addr = c.dsts[p]
		msg.OOB = nil
		if end-p > 1 {
			msg.OOB = putGSOCmsg(c.oob[m], len(c.bufs[p]))
		}
		c.first[m] = p
		p = end
	}
	c.first[m] = c.n
	return m
}

func (c *batchConn) flushLocked() {
	var gsoMsgs, gsoPkts, used int
	// p is the first datagram not sent yet; the ones before single are
	// sent alone (the rest of a GSO message the kernel refused).
	for p, single := 0, 0; p < c.n; {
		nm := c.pack(p, single)
		used = max(used, nm)
		k, err := c.pc.WriteBatch(c.msgs[:nm], 0)
		k = max(k, 0)
		for _, m := range c.msgs[:k] {
			if len(m.Buffers) > 1 {
				gsoMsgs++
				gsoPkts += len(m.Buffers)
			}
		}
		p = c.first[k]
		if err == nil {
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			c.dropped.Add(uint64(c.n - p))
			break
		}
		if k >= nm {
			continue
		}
		if m := c.msgs[k]; len(m.Buffers) > 1 {
			// Never lose packets to GSO: send this run's datagrams one
			// by one, and stop using GSO if the kernel refuses it.
			if gsoRefused(err) {
				c.gso = false
				c.log.Warn("webrtc: the kernel refused a UDP GSO message; sending datagrams one by one from now on", "error", err)
			}
			single = p + len(m.Buffers)
			continue
		}
		// Skip the datagram the kernel refused (e.g. unreachable
		// destination) and send the rest.
		p++
		c.dropped.Add(1)
	}
	for i := 0; i < c.n; i++ {
		c.dsts[i] = nil
	}
	for i := range c.msgs[:used] {
		c.msgs[i].Addr = nil
	}
	c.n = 0
	if gsoMsgs > 0 {
		c.mGSOMessages.Add(float64(gsoMsgs))
		c.mGSOPkts.Add(float64(gsoPkts))
	}
}

// WriteTo implements net.PacketConn.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.queue(b, addr, netip.AddrPort{}) {
		return len(b), nil
	}
	return c.UDPConn.WriteTo(b, addr)
}

// WriteToAddrPort is what the ICE mux uses to write.
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.queue(b, nil, addr) {
		return len(b), nil
	}
	return c.UDPConn.WriteToUDPAddrPort(b, addr)
}

// ReadFromAddrPort is what the ICE mux uses to read.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.UDPConn.ReadFromUDPAddrPort(b)
}
