package overlay

import (
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// pingDelegate is memberlist's PingDelegate for a Membership: it samples
// the RTT of every probe.
type pingDelegate struct{ m *Membership }

var _ memberlist.PingDelegate = (*pingDelegate)(nil)

// AckPayload implements memberlist.PingDelegate.
func (d *pingDelegate) AckPayload() []byte { return nil }

// rttWindow is the number of recent probe RTTs a peer's estimate is the
// minimum of.
const rttWindow = 8

// NotifyPingComplete implements memberlist.PingDelegate: a peer's RTT
// estimate is the minimum of its last rttWindow probe RTTs. The link cost
// wants the path's length, not how busy the two nodes were: a probe
// answered late by a loaded node (or a GC pause) only adds, so the minimum
// is the path and the rest is noise, which would otherwise move plans. A
// path that gets longer for good shows after rttWindow probes of the peer;
// a shorter one at once.
func (d *pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.m.addRTTSample(other.Name, float64(rtt)/float64(time.Millisecond))
}

func (m *Membership) addRTTSample(peer string, ms float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastAck[peer] = time.Now()
	w := append(m.rttSamples[peer], ms)
	if len(w) > rttWindow {
		w = w[len(w)-rttWindow:]
	}
	m.rttSamples[peer] = w
	m.rtt[peer] = slices.Min(w)
}
