package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const testSecret = "test cluster secret"

// testNode is a real node for the fetcher: its own store, a cache, a
// Fetcher and a loopback HTTP server routing the internal chunk route to
// ServePeer and the viewer route to ServeChunk.
type testNode struct {
	name         string
	local, cache *ChunkStore
	f            *Fetcher
	srv          *httptest.Server
	logs         *lockedBuffer

	// wrap, when set before requests, stands between the server and
	// ServePeer (to misbehave as a source).
	wrap func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc)

	peerReqs atomic.Int64 // requests on the internal route
	mu       sync.Mutex
	ranges   []string // Range headers of those requests
}

func (n *testNode) rangesSeen() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.ranges)
}

type testCluster struct {
	nodes map[string]*testNode
	order []*testNode
}

type staticPeers struct {
	self string
	c    *testCluster
}

func (p staticPeers) Self() string { return p.self }

func (p staticPeers) Alive() []Peer {
	out := make([]Peer, 0, len(p.c.order))
	for _, n := range p.c.order {
		out = append(out, Peer{Name: n.name, HTTPBase: n.srv.URL})
	}
	return out
}

func newTestCluster(t *testing.T, cfg FetcherConfig, names ...string) *testCluster {
	t.Helper()
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	c := &testCluster{nodes: map[string]*testNode{}}
	for _, name := range names {
		n := &testNode{name: name}
		n.local, _ = newTestStore(t, t.TempDir(), 0)
		n.cache, _ = newTestStore(t, t.TempDir(), 0)
		var log *slog.Logger
		log, n.logs = bufferedLogger(t)
		n.f = NewFetcher(cfg, n.local, n.cache, staticPeers{name, c}, log.With("node", name))
		mux := http.NewServeMux()
		mux.HandleFunc("GET /internal/vod/chunks/{hex}", func(w http.ResponseWriter, r *http.Request) {
			n.peerReqs.Add(1)
			n.mu.Lock()
			n.ranges = append(n.ranges, r.Header.Get("Range"))
			n.mu.Unlock()
			if n.wrap != nil {
				n.wrap(w, r, n.f.ServePeer)
				return
			}
			n.f.ServePeer(w, r)
		})
		mux.HandleFunc("GET /vod/chunks/{name}", func(w http.ResponseWriter, r *http.Request) {
			hex, _, _ := strings.Cut(r.PathValue("name"), ".")
			d, err := ParseDigest(hex)
			if err != nil {
				http.Error(w, "bad chunk name", http.StatusNotFound)
				return
			}
			n.f.ServeChunk(w, r, d, "video/mp4", r.URL.Query().Get("origin"))
		})
		n.srv = httptest.NewServer(mux)
		c.nodes[name] = n
		c.order = append(c.order, n)
	}
	t.Cleanup(func() {
		// Fetchers first: their flights end, so no handler waits on one.
		for _, n := range c.order {
			n.f.Close()
		}
		for _, n := range c.order {
			n.srv.Close()
		}
	})
	return c
}

// roles puts a chunk in the cluster and names, for a viewer on edge, the
// other nodes in the order edge asks them (rendezvous order: no node has
// an estimate yet).
func (c *testCluster) roles(d Digest, edge string) []*testNode {
	var names []string
	for _, n := range c.order {
		names = append(names, n.name)
	}
	var out []*testNode
	for _, n := range Owners(d, names) {
		if n != edge {
			out = append(out, c.nodes[n])
		}
	}
	return out
}

func putChunk(t *testing.T, s *ChunkStore, b []byte) Digest {
	t.Helper()
	c, err := s.Put(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return c.Digest
}

func viewerURL(n *testNode, d Digest, origin string) string {
	return n.srv.URL + "/vod/chunks/" + d.String() + ".m4s?origin=" + origin
}

type viewerResult struct {
	status    int
	header    http.Header
	body      []byte
	err       error // reading the body
	firstByte time.Time
}

func viewerGet(client *http.Client, url string, header map[string]string) viewerResult {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return viewerResult{err: err}
	}
	defer resp.Body.Close()
	res := viewerResult{status: resp.StatusCode, header: resp.Header}
	var buf bytes.Buffer
	p := make([]byte, 32<<10)
	for {
		m, err := resp.Body.Read(p)
		if m > 0 {
			if res.firstByte.IsZero() {
				res.firstByte = time.Now()
			}
			buf.Write(p[:m])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	res.body = buf.Bytes()
	return res
}

func testClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200, DisableCompression: true}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFetchThroughOwnerFromOrigin: a viewer on a node holding nothing gets
// the chunk from its rendezvous owner, which fills it from the origin; the
// bytes, headers and counters of every node say so, and the chunk is then
// a cache hit on the edge (whole and Range).
func TestFetchThroughOwnerFromOrigin(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{}, "edge", "n1", "n2")
	data := randomBytes(1, 1500<<10)
	d := Digest(sha256.Sum256(data))
	r := c.roles(d, "edge")
	owner, origin := r[0], r[1]
	putChunk(t, origin.local, data)
	edge := c.nodes["edge"]
	client := testClient()

	res := viewerGet(client, viewerURL(edge, d, origin.name), nil)
	if res.err != nil || res.status != 200 {
		t.Fatalf("GET: status %d, err %v", res.status, res.err)
	}
	if Digest(sha256.Sum256(res.body)) != d {
		t.Fatalf("body of %d bytes does not hash to the digest", len(res.body))
	}
	h := res.header
	if h.Get("ETag") != `"`+d.String()+`"` || h.Get("Repr-Digest") != d.ReprDigest() ||
		h.Get("Cache-Control") != chunkCacheControl || h.Get("Content-Type") != "video/mp4" ||
		h.Get("Content-Length") != fmt.Sprint(len(data)) {
		t.Fatalf("headers: %v", h)
	}
	es, os, ors := edge.f.Stats(), owner.f.Stats(), origin.f.Stats()
	if es.UpstreamFetches["peer"] != 1 || es.UpstreamFetches["origin"] != 0 || es.Misses != 1 || es.BytesServed["peer"] != uint64(len(data)) {
		t.Fatalf("edge stats: %+v", es)
	}
	if os.UpstreamFetches["origin"] != 1 || os.BytesServed["origin"] != uint64(len(data)) {
		t.Fatalf("owner stats: %+v", os)
	}
	if ors.BytesServed["local"] != uint64(len(data)) || origin.peerReqs.Load() != 1 {
		t.Fatalf("origin stats: %+v, %d requests", ors, origin.peerReqs.Load())
	}
	waitFor(t, "the chunk in the owner's and the edge's cache", func() bool {
		return owner.cache.Has(d) && edge.cache.Has(d) && edge.f.Stats().FlightsInFlight == 0
	})
	if e, ok := es.Peers[owner.name]; !ok || e.Samples != 1 || e.Throughput <= 0 {
		t.Fatalf("edge's estimate of the owner: %+v", es.Peers)
	}

	// Now a hit, whole and ranged.
	res = viewerGet(client, viewerURL(edge, d, origin.name), nil)
	if res.status != 200 || !bytes.Equal(res.body, data) {
		t.Fatalf("second GET: %d, %d bytes", res.status, len(res.body))
	}
	res = viewerGet(client, viewerURL(edge, d, origin.name), map[string]string{"Range": "bytes=1000-1999"})
	if res.status != 206 || !bytes.Equal(res.body, data[1000:2000]) {
		t.Fatalf("Range GET: %d, %d bytes", res.status, len(res.body))
	}
	es = edge.f.Stats()
	if es.Hits != 2 || es.BytesServed["cache"] != uint64(len(data)+1000) || origin.peerReqs.Load() != 1 || owner.peerReqs.Load() != 1 {
		t.Fatalf("after hits: %+v; requests owner %d origin %d", es, owner.peerReqs.Load(), origin.peerReqs.Load())
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(edge.f.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{"gradient_vod_bytes_served_total", "gradient_vod_upstream_fetches_total",
		"gradient_vod_hits_total", "gradient_vod_misses_total", "gradient_vod_fills_in_flight"} {
		if !got[name] {
			t.Errorf("metric %s not exported (have %v)", name, got)
		}
	}
}

// pausingWriter writes the first at bytes, flushes, sleeps, then the rest.
type pausingWriter struct {
	http.ResponseWriter
	at     int
	pause  time.Duration
	n      int
	paused bool
}

func (p *pausingWriter) Write(b []byte) (int, error) {
	if !p.paused && p.n+len(b) >= p.at {
		k := p.at - p.n
		m, err := p.ResponseWriter.Write(b[:k])
		p.n += m
		if err != nil {
			return m, err
		}
		http.NewResponseController(p.ResponseWriter).Flush()
		time.Sleep(p.pause)
		p.paused = true
		m2, err := p.ResponseWriter.Write(b[k:])
		p.n += m2
		return m + m2, err
	}
	m, err := p.ResponseWriter.Write(b)
	p.n += m
	return m, err
}

func (p *pausingWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// TestFetchFlashCrowdOneUpstreamReadWhileWrite: 100 concurrent viewers of
// one cold chunk make one request at the owner and one at the origin, all
// get the right bytes, and they get the first half while the origin is
// still pausing before the second: bytes stream through both hops as they
// arrive. One viewer leaves early; the flight still completes into the
// cache.
func TestFetchFlashCrowdOneUpstreamReadWhileWrite(t *testing.T) {
	// A long stall timeout: 100 viewers under the race detector on a
	// loaded machine can starve a node's goroutines for seconds, and a
	// fail-over here (tested elsewhere) would be a second origin request.
	c := newTestCluster(t, FetcherConfig{StallTimeout: 20 * time.Second}, "edge", "n1", "n2")
	data := randomBytes(2, 2<<20)
	d := Digest(sha256.Sum256(data))
	r := c.roles(d, "edge")
	owner, origin := r[0], r[1]
	putChunk(t, origin.local, data)
	edge := c.nodes["edge"]
	const pause = 300 * time.Millisecond
	var originDone atomic.Int64
	origin.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
		next(&pausingWriter{ResponseWriter: w, at: len(data) / 2, pause: pause}, r)
		originDone.Store(time.Now().UnixNano())
	}

	client := testClient()
	const viewers = 100
	results := make([]viewerResult, viewers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range viewers {
		wg.Go(func() { results[i] = viewerGet(client, viewerURL(edge, d, origin.name), nil) })
	}
	// One more viewer reads a little and leaves.
	leaver := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, viewerURL(edge, d, origin.name), nil)
		resp, err := client.Do(req)
		if err != nil {
			leaver <- err
			return
		}
		_, err = io.ReadFull(resp.Body, make([]byte, 1000))
		cancel()
		resp.Body.Close()
		leaver <- err
	}()
	wg.Wait()
	if err := <-leaver; err != nil {
		t.Fatalf("leaving viewer: %v", err)
	}
	done := time.Unix(0, originDone.Load())
	early := 0
	var firstByte time.Time
	for i, res := range results {
		if res.err != nil || res.status != 200 || Digest(sha256.Sum256(res.body)) != d {
			t.Fatalf("viewer %d: status %d, err %v, %d bytes", i, res.status, res.err, len(res.body))
		}
		if res.firstByte.Before(done) {
			early++
		}
		if firstByte.IsZero() || res.firstByte.Before(firstByte) {
			firstByte = res.firstByte
		}
	}
	if n := origin.peerReqs.Load(); n != 1 {
		t.Fatalf("origin got %d requests, want 1\nedge log:\n%s\nowner log:\n%s", n, edge.logs, owner.logs)
	}
	if n := owner.peerReqs.Load(); n != 1 {
		t.Fatalf("owner got %d requests, want 1", n)
	}
	if st := edge.f.Stats(); st.UpstreamFetches["peer"] != 1 || st.Misses != viewers+1 {
		t.Fatalf("edge stats: %+v", st)
	}
	// Read-while-write: the first bytes reached a viewer before the
	// origin sent its second half.
	if !firstByte.Before(done.Add(-pause / 2)) {
		t.Fatalf("first byte at a viewer %s after start, origin done at %s: no streaming",
			firstByte.Sub(start), done.Sub(start))
	}
	t.Logf("%d viewers: first byte at %s, origin done at %s, %d of %d viewers had bytes before the origin finished",
		viewers, firstByte.Sub(start).Round(time.Millisecond), done.Sub(start).Round(time.Millisecond), early, viewers)
	waitFor(t, "the chunk in the edge's cache", func() bool { return edge.cache.Has(d) })
}

// TestFetchFailsOverMidChunk: the first source sends half the chunk and
// then closes the connection, or stalls; the viewer's response completes
// with the right bytes from the next source, which was asked for the rest
// with a Range request, within the stall timeout and a second.
func TestFetchFailsOverMidChunk(t *testing.T) {
	for _, mode := range []string{"close", "stall"} {
		t.Run(mode, func(t *testing.T) {
			const stall = 500 * time.Millisecond
			c := newTestCluster(t, FetcherConfig{StallTimeout: stall}, "edge", "n1", "n2")
			data := randomBytes(3, 1<<20)
			d := Digest(sha256.Sum256(data))
			r := c.roles(d, "edge")
			bad, good := r[0], r[1]
			putChunk(t, bad.local, data)
			putChunk(t, good.local, data)
			half := len(data)/2 + 12345
			bad.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
				setChunkHeaders(w.Header(), d, "")
				w.Header().Set("Content-Length", fmt.Sprint(len(data)))
				w.WriteHeader(200)
				w.Write(data[:half])
				http.NewResponseController(w).Flush()
				if mode == "close" {
					panic(http.ErrAbortHandler)
				}
				<-r.Context().Done()
			}
			edge := c.nodes["edge"]
			start := time.Now()
			res := viewerGet(testClient(), viewerURL(edge, d, good.name), nil)
			took := time.Since(start)
			if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
				t.Fatalf("status %d, err %v, %d bytes (equal %v)", res.status, res.err, len(res.body), bytes.Equal(res.body, data))
			}
			if limit := stall + time.Second; took > limit {
				t.Fatalf("took %s, want under %s", took, limit)
			}
			if got := good.rangesSeen(); len(got) != 1 || got[0] != fmt.Sprintf("bytes=%d-", half) {
				t.Fatalf("next source saw Range %q, want bytes=%d-", got, half)
			}
			st := edge.f.Stats()
			if st.UpstreamFetches["peer"] != 1 || st.UpstreamFetches["origin"] != 1 || st.Peers[bad.name].Failures != 1 {
				t.Fatalf("edge stats: %+v", st)
			}
			t.Logf("%s: complete in %s after the first source failed at byte %d", mode, took.Round(time.Millisecond), half)
		})
	}
}

// flippingWriter flips the byte at offset at of the body.
type flippingWriter struct {
	http.ResponseWriter
	at, n int
}

func (f *flippingWriter) Write(b []byte) (int, error) {
	if f.at >= f.n && f.at < f.n+len(b) {
		b = slices.Clone(b)
		b[f.at-f.n] ^= 0x01
	}
	m, err := f.ResponseWriter.Write(b)
	f.n += m
	return m, err
}

func (f *flippingWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// TestFetchCorruptSourceIsDetected: an owner that flips one byte (first,
// middle, last …) is caught every time and charged with it; the chunk is
// fetched again from the next source; no viewer gets a complete 200 body
// that does not hash to the digest (the ones that had bytes are cut
// off), a Range viewer waiting meanwhile gets the good bytes, and a later
// request gets the right chunk.
func TestFetchCorruptSourceIsDetected(t *testing.T) {
	const size = 1 << 20
	for i, at := range []int{0, 1, 4096, size / 2, size - 2, size - 1} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			c := newTestCluster(t, FetcherConfig{}, "edge", "n1", "n2")
			data := randomBytes(uint64(100+i), size)
			d := Digest(sha256.Sum256(data))
			r := c.roles(d, "edge")
			bad, good := r[0], r[1]
			putChunk(t, bad.local, data)
			putChunk(t, good.local, data)
			bad.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
				next(&flippingWriter{ResponseWriter: w, at: at}, r)
			}
			edge := c.nodes["edge"]
			client := testClient()
			url := viewerURL(edge, d, good.name)

			var wg sync.WaitGroup
			results := make([]viewerResult, 8)
			for j := range results {
				hdr := map[string]string(nil)
				if j == 0 {
					hdr = map[string]string{"Range": "bytes=100-199"}
				}
				wg.Go(func() { results[j] = viewerGet(client, url, hdr) })
			}
			wg.Wait()
			cut := 0
			for j, res := range results {
				if j == 0 {
					if res.status != 206 || !bytes.Equal(res.body, data[100:200]) {
						t.Fatalf("Range viewer: status %d, err %v, %d bytes", res.status, res.err, len(res.body))
					}
					continue
				}
				switch {
				case res.err == nil && res.status == 200:
					if Digest(sha256.Sum256(res.body)) != d {
						t.Fatalf("viewer %d got a complete 200 body of %d bytes that does not hash to the digest", j, len(res.body))
					}
				case res.status == 200 && len(res.body) < size:
					cut++ // cut off: the player retries
				default:
					t.Fatalf("viewer %d: status %d, err %v, %d bytes", j, res.status, res.err, len(res.body))
				}
			}
			st := edge.f.Stats()
			if st.IntegrityFailures[bad.name] != 1 || len(st.IntegrityFailures) != 1 {
				t.Fatalf("integrity failures %v, want 1 against %s", st.IntegrityFailures, bad.name)
			}
			res := viewerGet(client, url, nil)
			if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
				t.Fatalf("later viewer: status %d, err %v, %d bytes", res.status, res.err, len(res.body))
			}
			waitFor(t, "the good chunk in the edge's cache", func() bool { return edge.cache.Has(d) })
			if !strings.Contains(edge.logs.String(), "fetched chunk corrupt") {
				t.Fatalf("corruption not logged:\n%s", edge.logs.String())
			}
			t.Logf("byte %d flipped: caught; %d of %d whole viewers cut off, the others got the good copy", at, cut, len(results)-1)
		})
	}
}

// TestFetchPeerAuth: ServePeer refuses unsigned and wrongly signed
// requests with 401 (logged once per peer), serves a signed request for a
// chunk it holds, answers a miss without fill=1 with a fast 404 and no
// upstream request, and fills a miss from the origin with fill=1.
func TestFetchPeerAuth(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{}, "n1", "n2", "n3")
	n1, n2, n3 := c.nodes["n1"], c.nodes["n2"], c.nodes["n3"]
	held := randomBytes(4, 100<<10)
	dh := putChunk(t, n1.local, held)
	missing := randomBytes(5, 100<<10)
	dm := putChunk(t, n2.local, missing)
	client := testClient()
	get := func(d Digest, query, secret string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, n1.srv.URL+peerChunkPath+d.String()+query, nil)
		if secret != "" {
			SignPeerRequest(req, secret, "n2")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(dh, "", ""); code != 401 {
		t.Fatalf("unsigned: %d, want 401", code)
	}
	if code, _ := get(dh, "", ""); code != 401 {
		t.Fatalf("unsigned again: %d, want 401", code)
	}
	if code, _ := get(dh, "", "wrong secret"); code != 401 {
		t.Fatalf("wrong secret: %d, want 401", code)
	}
	if n := strings.Count(n1.logs.String(), "peer chunk request refused (logged once"); n != 1 {
		t.Fatalf("refusals logged %d times, want once per peer:\n%s", n, n1.logs.String())
	}
	if code, b := get(dh, "", testSecret); code != 200 || !bytes.Equal(b, held) {
		t.Fatalf("signed: %d, %d bytes", code, len(b))
	}
	start := time.Now()
	if code, _ := get(dm, "?origin=n2", testSecret); code != 404 {
		t.Fatalf("miss without fill: %d, want 404", code)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("miss without fill took %s", took)
	}
	if n := n2.peerReqs.Load(); n != 0 || len(n1.f.Stats().UpstreamFetches) != 0 {
		t.Fatalf("miss without fill made upstream requests: %d at n2, stats %+v", n, n1.f.Stats())
	}
	if code, b := get(dm, "?fill=1&origin=n2", testSecret); code != 200 || !bytes.Equal(b, missing) {
		t.Fatalf("fill: %d, %d bytes", code, len(b))
	}
	if n := n2.peerReqs.Load(); n != 1 || n1.f.Stats().UpstreamFetches["origin"] != 1 {
		t.Fatalf("fill: %d requests at the origin, stats %+v", n, n1.f.Stats())
	}
	// A fill asks the origin only, never another node: n2 holds the
	// chunk, but the named origin n3 does not, so the fill fails.
	other := randomBytes(7, 10<<10)
	do := putChunk(t, n2.local, other)
	if code, _ := get(do, "?fill=1&origin=n3", testSecret); code != http.StatusNotFound {
		t.Fatalf("fill from an origin without the chunk: %d, want 404", code)
	}
	if n2.peerReqs.Load() != 1 || n3.peerReqs.Load() != 1 {
		t.Fatalf("fill asked another node: %d requests at n2, %d at the origin n3", n2.peerReqs.Load(), n3.peerReqs.Load())
	}
	// A fill for an origin that is not alive is a fast 404.
	if code, _ := get(Digest(sha256.Sum256([]byte("nowhere"))), "?fill=1&origin=n9", testSecret); code != 404 {
		t.Fatalf("fill from an unknown origin: %d, want 404", code)
	}
}

// TestFetchPrefetchFillsTheCacheWithoutAViewer: Prefetch returns at once,
// the chunk lands in the cache, and a second Prefetch of a held chunk
// makes no request.
func TestFetchPrefetchFillsTheCacheWithoutAViewer(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{}, "edge", "n1")
	data := randomBytes(6, 300<<10)
	n1, edge := c.nodes["n1"], c.nodes["edge"]
	d := putChunk(t, n1.local, data)
	edge.f.Prefetch(d, "n1")
	waitFor(t, "the prefetched chunk in the cache", func() bool { return edge.cache.Has(d) && edge.f.Stats().FlightsInFlight == 0 })
	edge.f.Prefetch(d, "n1")
	if n := n1.peerReqs.Load(); n != 1 {
		t.Fatalf("%d requests at the origin, want 1", n)
	}
}

// TestFetchFlightOutlivesItsViewer: the only viewer of a chunk leaves
// after its first bytes; the flight still completes into the cache, and
// the next viewer is a hit.
func TestFetchFlightOutlivesItsViewer(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{}, "edge", "n1")
	data := randomBytes(8, 1<<20)
	n1, edge := c.nodes["n1"], c.nodes["edge"]
	d := putChunk(t, n1.local, data)
	n1.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
		next(&pausingWriter{ResponseWriter: w, at: len(data) / 2, pause: 300 * time.Millisecond}, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, viewerURL(edge, d, "n1"), nil)
	resp, err := testClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	if edge.cache.Has(d) {
		t.Fatal("cached before the origin sent its second half")
	}
	waitFor(t, "the chunk in the cache", func() bool { return edge.cache.Has(d) })
	res := viewerGet(testClient(), viewerURL(edge, d, "n1"), nil)
	if res.status != 200 || !bytes.Equal(res.body, data) || n1.peerReqs.Load() != 1 || edge.f.Stats().Hits != 1 {
		t.Fatalf("next viewer: %d, %d bytes; %d origin requests; %+v", res.status, len(res.body), n1.peerReqs.Load(), edge.f.Stats())
	}
}

// TestFetchOwnersAskingEachOtherDoNotWait: viewers on both owners of a
// cold chunk and on an edge at once. The second owner asks the first to
// fill, the first asks nobody (it reads the origin), and the edge asks the
// owners: every fill waits only on an owner ranked before the asker, so
// nobody waits on a circle until the stall timeout, and the origin uploads
// the chunk exactly once.
func TestFetchOwnersAskingEachOtherDoNotWait(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{StallTimeout: 3 * time.Second}, "a", "b", "c", "e")
	data := randomBytes(9, 512<<10)
	d := Digest(sha256.Sum256(data))
	r := c.roles(d, "")
	o1, o2, origin, edge := r[0], r[1], r[2], r[3]
	putChunk(t, origin.local, data)
	origin.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
		time.Sleep(200 * time.Millisecond) // every flight starts before any gets bytes
		next(w, r)
	}
	var wg sync.WaitGroup
	viewers := []*testNode{o1, o2, edge}
	results := make([]viewerResult, len(viewers))
	took := make([]time.Duration, len(viewers))
	for i, n := range viewers {
		wg.Go(func() {
			start := time.Now()
			results[i] = viewerGet(testClient(), viewerURL(n, d, origin.name), nil)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i, res := range results {
		if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
			t.Fatalf("viewer %d: %d, %v, %d bytes", i, res.status, res.err, len(res.body))
		}
		if took[i] > 1500*time.Millisecond {
			t.Fatalf("viewer %d took %s: the owners waited on each other", i, took[i])
		}
	}
	if n := origin.peerReqs.Load(); n != 1 {
		t.Fatalf("%d requests at the origin, want 1\no1 log:\n%s\no2 log:\n%s", n, o1.logs, o2.logs)
	}
	t.Logf("viewers served in %v; %d request at the origin", took, origin.peerReqs.Load())
}

// TestFetchCloseEndsFlights: Close cancels a flight stuck on a source
// that sends nothing, returns promptly, and the viewer is answered.
func TestFetchCloseEndsFlights(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{StallTimeout: time.Minute}, "edge", "n1")
	n1, edge := c.nodes["n1"], c.nodes["edge"]
	d := putChunk(t, n1.local, randomBytes(10, 64<<10))
	entered := make(chan struct{})
	n1.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
		close(entered)
		<-r.Context().Done()
	}
	done := make(chan viewerResult, 1)
	go func() { done <- viewerGet(testClient(), viewerURL(edge, d, "n1"), nil) }()
	<-entered
	if st := edge.f.Stats(); st.FlightsInFlight != 1 {
		t.Fatalf("flights in flight: %d", st.FlightsInFlight)
	}
	start := time.Now()
	edge.f.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %s", took)
	}
	res := <-done
	if res.status != http.StatusServiceUnavailable {
		t.Fatalf("viewer: %d, %v", res.status, res.err)
	}
	if st := edge.f.Stats(); st.FlightsInFlight != 0 || st.Peers["n1"].Failures != 0 {
		t.Fatalf("after Close: %+v", st)
	}
}

// TestFetchSourceOrder: a viewer's flight asks the chunk's owners (the
// first cfg.Owners of the whole rendezvous order may fill, as many more
// may not), never itself, then the origin. Peers never measured keep
// their rendezvous place; measured ones are ranked by expected time among
// the places they hold; the origin stays last however fast it is.
func TestFetchSourceOrder(t *testing.T) {
	names := []string{"self", "p1", "p2", "p3", "p4", "p5"}
	c := &testCluster{nodes: map[string]*testNode{}}
	for _, n := range names {
		tn := &testNode{name: n, srv: &httptest.Server{URL: "http://" + n + ".invalid"}}
		c.nodes[n] = tn
		c.order = append(c.order, tn)
	}
	f := NewFetcher(FetcherConfig{Secret: testSecret}, nil, nil, staticPeers{"self", c}, nil)
	defer f.Close()
	d := digestOf("order")
	all := Owners(d, names)
	var others []string
	for _, n := range all {
		if n != "self" {
			others = append(others, n)
		}
	}
	origin := others[4] // not among the 4 owners asked
	list := func() (out []string) {
		for _, s := range f.sources(d, origin, false) {
			out = append(out, s.peer.Name)
		}
		return out
	}
	want := append(slices.Clone(others[:4]), origin)
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("fresh order %v, want rendezvous order %v", got, want)
	}
	selfRank := slices.Index(all[:2], "self")
	for _, s := range f.sources(d, origin, false) {
		i := slices.Index(all, s.peer.Name)
		wantFill := !s.origin && i < 2 && (selfRank < 0 || i < selfRank)
		if s.fill != wantFill || s.origin != (s.peer.Name == origin) {
			t.Fatalf("source %+v: fill should be %v", s, wantFill)
		}
		if u := s.url(d, origin); s.fill != strings.Contains(u, "fill=1&origin="+origin) {
			t.Fatalf("source %s: URL %s", s.peer.Name, u)
		}
	}
	// others[3] fast, others[1] slow, origin fastest: the two measured
	// peers swap places; others[0] and others[2] stay; the origin stays last.
	f.observe(others[3], 5*time.Millisecond, 1<<20, 10*time.Millisecond, false)
	f.observe(others[1], 50*time.Millisecond, 1<<20, time.Second, false)
	f.observe(origin, time.Millisecond, 1<<20, time.Millisecond, false)
	want = []string{others[0], others[3], others[2], others[1], origin}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("ranked order %v, want %v", got, want)
	}
	// Failures push a peer back: others[3] fails until slower than others[1].
	for range 12 {
		f.observeFailure(others[3])
	}
	want = []string{others[0], others[1], others[2], others[3], origin}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after failures %v, want %v", got, want)
	}
	// A node that is itself a filling owner of a chunk asks to fill only
	// the owners ranked before it: the first owner nobody, the second the
	// first. The origin comes last.
	for _, rank := range []int{0, 1} {
		for i := 0; ; i++ {
			d2 := digestOf(fmt.Sprintf("self-owner-%d-%d", rank, i))
			others2 := slices.DeleteFunc(Owners(d2, names), func(n string) bool { return n == "p5" })
			if slices.Index(others2, "self") != rank {
				continue
			}
			srcs := f.sources(d2, "p5", false)
			var fills []string
			for _, s := range srcs {
				if s.fill {
					fills = append(fills, s.peer.Name)
				}
			}
			if want := others2[:rank]; !slices.Equal(fills, want) {
				t.Fatalf("self is owner %d of %s (owners %v): asks %v to fill, want %v", rank, d2, others2, fills, want)
			}
			if last := srcs[len(srcs)-1]; !last.origin || last.peer.Name != "p5" {
				t.Fatalf("self-owner sources %+v: the origin must come last", srcs)
			}
			break
		}
	}
	// A peer's fill asks the origin only.
	if got := f.sources(d, origin, true); len(got) != 1 || got[0].peer.Name != origin {
		t.Fatalf("fill sources %+v", got)
	}
	st := f.Stats()
	if st.Peers[others[3]].Failures != 12 || st.Peers[others[1]].Samples != 1 {
		t.Fatalf("estimates %+v", st.Peers)
	}

	// With replicas 3 (2 pinned owners), a peer's fill asks the pinned
	// owners (not filling, this node left out) before the origin.
	fp := NewFetcher(FetcherConfig{Secret: testSecret, Pinned: 2}, nil, nil, staticPeers{"self", c}, nil)
	defer fp.Close()
	nonOrigin := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == origin })
	var wantFill []string
	for _, n := range Owners(d, nonOrigin)[:2] {
		if n != "self" {
			wantFill = append(wantFill, n)
		}
	}
	wantFill = append(wantFill, origin)
	var gotFill []string
	for _, s := range fp.sources(d, origin, true) {
		if s.fill {
			t.Fatalf("a peer's fill asks %s to fill", s.peer.Name)
		}
		gotFill = append(gotFill, s.peer.Name)
	}
	if !slices.Equal(gotFill, wantFill) {
		t.Fatalf("fill sources with 2 pinned owners %v, want %v", gotFill, wantFill)
	}
}

// TestFetchNoGoodSource: when the only source sends a corrupt copy the
// viewer is cut off or refused, never sent the whole bad chunk, and
// nothing is cached; a chunk no source holds is a 404.
func TestFetchNoGoodSource(t *testing.T) {
	c := newTestCluster(t, FetcherConfig{}, "edge", "n1")
	n1, edge := c.nodes["n1"], c.nodes["edge"]
	data := randomBytes(11, 256<<10)
	d := putChunk(t, n1.local, data)
	n1.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
		next(&flippingWriter{ResponseWriter: w, at: 1234}, r)
	}
	res := viewerGet(testClient(), viewerURL(edge, d, "n1"), nil)
	switch {
	case res.status == 200 && res.err != nil && len(res.body) < len(data):
	case res.status == http.StatusBadGateway:
	default:
		t.Fatalf("viewer: status %d, err %v, %d bytes", res.status, res.err, len(res.body))
	}
	if st := edge.f.Stats(); st.IntegrityFailures["n1"] != 1 {
		t.Fatalf("stats %+v", st)
	}
	waitFor(t, "the flight to end", func() bool { return edge.f.Stats().FlightsInFlight == 0 })
	if edge.cache.Has(d) {
		t.Fatal("a corrupt copy was cached")
	}
	res = viewerGet(testClient(), viewerURL(edge, digestOf("nowhere"), "n1"), nil)
	if res.status != http.StatusNotFound {
		t.Fatalf("unknown chunk: %d", res.status)
	}
}

// TestFetchANonOwnerKeepsOnlyWhatIsHotThere: a node that is not one of a
// chunk's filling owners serves it from the owner and keeps no copy of
// its own until the chunk has been asked for there hotCopyRequests times
// (the owner holds it, one hop away); then it keeps it and serves it
// itself. A prefetch is kept at once (it is fetched for the viewer's next
// request here).
func TestFetchANonOwnerKeepsOnlyWhatIsHotThere(t *testing.T) {
	cfg := FetcherConfig{Owners: 1, Secret: testSecret}
	c := newTestCluster(t, cfg, "n1", "n2", "n3")
	data := randomBytes(31, 200<<10)
	d := Digest(sha256.Sum256(data))
	r := c.roles(d, "")
	owner, origin := r[0], r[1]
	putChunk(t, origin.local, data)
	// The viewer's node: in the cluster's view (its Alive list) but not
	// an owner of d, with a DiskCache as in a node.
	var self string
	for _, n := range r[1:] {
		if n != origin {
			self = n.name
		}
	}
	cache := newTestDiskCache(t, DiskCacheConfig{Dir: t.TempDir(), MaxBytes: 64 << 20})
	log, _ := bufferedLogger(t)
	edge := NewFetcher(cfg, nil, cache, staticPeers{self, c}, log)
	t.Cleanup(func() { edge.Close() })
	get := func() {
		t.Helper()
		rec := httptest.NewRecorder()
		edge.ServeChunk(rec, httptest.NewRequest("GET", "/vod/chunks/"+d.String()+".m4s", nil), d, "video/mp4", origin.name)
		if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), data) {
			t.Fatalf("GET: %d, %d bytes", rec.Code, rec.Body.Len())
		}
		waitFor(t, "the flight to end", func() bool { return edge.Stats().FlightsInFlight == 0 })
	}
	for i := 1; i < hotCopyRequests; i++ {
		get()
		if cache.Has(d) {
			t.Fatalf("request %d: a non-owner kept a copy of a chunk asked for %d times", i, i)
		}
		if n := owner.peerReqs.Load(); n != int64(i) {
			t.Fatalf("request %d: the owner was asked %d times", i, n)
		}
	}
	get()
	if !cache.Has(d) {
		t.Fatalf("a chunk asked for %d times here was not kept", hotCopyRequests)
	}
	get()
	if n, st := owner.peerReqs.Load(), edge.Stats(); n != hotCopyRequests || st.Hits != 1 {
		t.Fatalf("after the copy: owner asked %d times (want %d), edge hits %d (want 1)", n, hotCopyRequests, st.Hits)
	}
	if origin.peerReqs.Load() != 1 {
		t.Fatalf("the origin was asked %d times, want once (by the owner)", origin.peerReqs.Load())
	}

	// A prefetch is kept at once.
	data2 := randomBytes(32, 100<<10)
	d2 := putChunk(t, origin.local, data2)
	edge.Prefetch(d2, origin.name)
	waitFor(t, "the prefetched chunk in the cache", func() bool { return cache.Has(d2) && edge.Stats().FlightsInFlight == 0 })
}
