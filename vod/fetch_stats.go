package vod

import (
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ewmaAlpha weighs a new sample in a peer's estimates: about the last
// five fetches count.
const ewmaAlpha = 0.3

// rankBytes is the chunk size peers are compared for: a typical segment.
const rankBytes = 1 << 20

// PeerEstimate is what the fetcher has learnt of a peer as a source.
type PeerEstimate struct {
	// Throughput is an EWMA of bytes per second once the body flows.
	Throughput float64 `json:"throughput_bytes_per_second"`
	// TTFB is an EWMA of the time to the response headers.
	TTFB time.Duration `json:"ttfb"`
	// Samples counts fetches that sent bytes; Failures those that
	// failed (refused, stalled, cut off, corrupt).
	Samples  uint64 `json:"samples"`
	Failures uint64 `json:"failures"`
}

type peerEstimate struct{ PeerEstimate }

// fail penalises a failed fetch: the throughput estimate halves, so a
// failing peer drops behind the others without being banned (it is
// tried again when it is the only one left, or after good fetches).
func (e *peerEstimate) fail() {
	e.Failures++
	e.Throughput /= 2
}

// estimate is the peer's record; f.mu is held.
func (f *Fetcher) estimate(name string) *peerEstimate {
	e := f.est[name]
	if e == nil {
		e = &peerEstimate{}
		f.est[name] = e
	}
	return e
}

// observe records one fetch from a peer: its time to first byte, and the
// bytes it sent in how long.
func (f *Fetcher) observe(name string, ttfb time.Duration, n int64, body time.Duration, failed bool) {
	if f.ctx.Err() != nil {
		return // cut off by Close, not by the peer
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.estimate(name)
	if n > 0 {
		tput := float64(n) / max(body.Seconds(), 1e-4)
		if e.Samples == 0 {
			e.Throughput, e.TTFB = tput, ttfb
		} else {
			e.Throughput = ewmaAlpha*tput + (1-ewmaAlpha)*e.Throughput
			e.TTFB = time.Duration(ewmaAlpha*float64(ttfb) + (1-ewmaAlpha)*float64(e.TTFB))
		}
		e.Samples++
	}
	if failed {
		e.fail()
	}
}

func (f *Fetcher) observeFailure(name string) {
	if f.ctx.Err() != nil {
		return
	}
	f.mu.Lock()
	f.estimate(name).fail()
	f.mu.Unlock()
}

// rank orders owner sources by expected fetch time (TTFB + a typical
// chunk at the peer's throughput). Only peers with an estimate move, and
// only among the places such peers hold: a peer never measured keeps its
// rendezvous place, so a fresh cluster follows rendezvous order exactly.
func (f *Fetcher) rank(srcs []source) {
	f.mu.Lock()
	var slots []int
	cost := map[string]float64{}
	for i, s := range srcs {
		e := f.est[s.peer.Name]
		if e == nil || (e.Samples == 0 && e.Failures == 0) {
			continue
		}
		c := e.TTFB.Seconds() + rankBytes/max(e.Throughput, 1)
		cost[s.peer.Name] = c
		slots = append(slots, i)
	}
	f.mu.Unlock()
	if len(slots) < 2 {
		return
	}
	known := make([]source, len(slots))
	for j, i := range slots {
		known[j] = srcs[i]
	}
	slices.SortStableFunc(known, func(a, b source) int {
		ca, cb := cost[a.peer.Name], cost[b.peer.Name]
		switch {
		case ca < cb:
			return -1
		case ca > cb:
			return 1
		}
		return 0
	})
	for j, i := range slots {
		srcs[i] = known[j]
	}
}

// FetchStats is a snapshot of a Fetcher's counters.
type FetchStats struct {
	// BytesServed counts body bytes sent to viewers and peers by where
	// they came from: "local" (the node's own store), "cache", "peer",
	// "origin" (the origin node), "store" (the origin store; these three
	// through a flight).
	BytesServed map[string]uint64 `json:"bytes_served"`
	// UpstreamFetches counts requests to other nodes by whom they asked:
	// "peer" (an owner), "origin" (the origin node), and reads of the
	// origin store, "store" (one per GET of an S3 origin).
	UpstreamFetches map[string]uint64 `json:"upstream_fetches"`
	// Hits are requests served from the store or cache; Misses the ones
	// that needed a flight (started or joined).
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
	// IntegrityFailures counts, by peer, fetched copies that did not hash
	// to their digest and that the peer contributed bytes to; the origin
	// store is counted under its Name ("s3://bucket/prefix").
	IntegrityFailures map[string]uint64       `json:"integrity_failures"`
	FlightsInFlight   int                     `json:"flights_in_flight"`
	Peers             map[string]PeerEstimate `json:"peers"`
}

// Stats returns the fetcher's counters.
func (f *Fetcher) Stats() FetchStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := FetchStats{
		BytesServed:       maps.Clone(f.served),
		UpstreamFetches:   maps.Clone(f.upstream),
		Hits:              f.hits,
		Misses:            f.misses,
		IntegrityFailures: maps.Clone(f.integrity),
		FlightsInFlight:   len(f.flights),
		Peers:             make(map[string]PeerEstimate, len(f.est)),
	}
	for n, e := range f.est {
		st.Peers[n] = e.PeerEstimate
	}
	return st
}

// Collector exports the fetcher's Stats as Prometheus metrics.
func (f *Fetcher) Collector() prometheus.Collector { return newFetchCollector(f) }

type fetchCollector struct {
	f                                         *Fetcher
	served, upstream, hits, misses, integrity *prometheus.Desc
	inFlight                                  *prometheus.Desc
}

func newFetchCollector(f *Fetcher) *fetchCollector {
	return &fetchCollector{f: f,
		served:    prometheus.NewDesc("gradient_vod_bytes_served_total", "Chunk bytes served, by where they came from (local, cache, peer, origin, store).", []string{"source"}, nil),
		upstream:  prometheus.NewDesc("gradient_vod_upstream_fetches_total", "Chunk requests made to other nodes (peer, origin) and to the origin store (store).", []string{"from"}, nil),
		hits:      prometheus.NewDesc("gradient_vod_hits_total", "Chunk requests served from the node's store or cache.", nil, nil),
		misses:    prometheus.NewDesc("gradient_vod_misses_total", "Chunk requests that needed a fetch from the cluster.", nil, nil),
		integrity: prometheus.NewDesc("gradient_vod_integrity_failures_total", "Fetched chunk copies that did not match their digest, by contributing peer.", []string{"peer"}, nil),
		inFlight:  prometheus.NewDesc("gradient_vod_fills_in_flight", "Chunk fetches in progress.", nil, nil),
	}
}

func (c *fetchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.served, c.upstream, c.hits, c.misses, c.integrity, c.inFlight} {
		ch <- d
	}
}

func (c *fetchCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f.Stats()
	for _, src := range []string{"local", "cache", "peer", "origin", "store"} {
		ch <- prometheus.MustNewConstMetric(c.served, prometheus.CounterValue, float64(st.BytesServed[src]), src)
	}
	for _, from := range []string{"peer", "origin", "store"} {
		ch <- prometheus.MustNewConstMetric(c.upstream, prometheus.CounterValue, float64(st.UpstreamFetches[from]), from)
	}
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(st.Misses))
	for p, n := range st.IntegrityFailures {
		ch <- prometheus.MustNewConstMetric(c.integrity, prometheus.CounterValue, float64(n), p)
	}
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.FlightsInFlight))
}
