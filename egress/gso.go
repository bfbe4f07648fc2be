package egress

import "net/netip"

// UDP generic segmentation offload (GSO): a run of datagrams to one address
// whose sizes are all equal except a smaller last one leaves in one
// sendmsg with a UDP_SEGMENT control message carrying that size; the kernel
// (or the NIC) cuts it back into the datagrams late in the send path. The
// RTP packets of one access unit to one session are exactly such a run:
// FU-A fragments of PayloadMaxSize bytes, the same SRTP overhead each, and
// a shorter tail.
const (
	// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS (64 before Linux
	// 6.9, 128 after); the lower value works everywhere.
	gsoMaxSegments = 64
	// gsoMaxBytes is the largest UDP payload of one message (IPv4).
	gsoMaxBytes = 65507
)

// gsoGroupEnd returns the end (exclusive) of the send group that starts at
// datagram i of bufs[:n], whose destinations are keys[:n]: the datagrams
// i, i+1, … to the same valid destination as i, each no larger than
// bufs[i] and only the last one smaller, at most gsoMaxSegments of them
// and gsoMaxBytes in all. A group of one is sent as a plain datagram.
func gsoGroupEnd(bufs [][]byte, keys []netip.AddrPort, i, n int) int {
	seg := len(bufs[i])
	if seg == 0 || !keys[i].IsValid() {
		return i + 1
	}
	total := seg
	j := i + 1
	for j < n && j-i < gsoMaxSegments && keys[j] == keys[i] {
		l := len(bufs[j])
		if l == 0 || l > seg || total+l > gsoMaxBytes {
			break
		}
		total += l
		j++
		if l < seg { // a smaller datagram ends the group
			break
		}
	}
	return j
}
