package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// storeStall is long: no test here stalls a source on purpose, and a
// fail-over caused by a loaded machine would be a second GET at S3.
const storeStall = 10 * time.Second

// storeOrigin starts a real S3 server behind a counting proxy and an
// S3Origin that goes through the proxy.
func storeOrigin(t *testing.T) (testS3, *s3Proxy, *S3Origin) {
	t.Helper()
	s3 := startTestS3(t, "vod")
	proxy := newS3Proxy(t, s3.cfg.Endpoint)
	cfg := s3.cfg
	cfg.Endpoint = proxy.endpoint()
	o, _ := newTestS3Origin(t, cfg)
	return s3, proxy, o
}

func putOrigin(t *testing.T, o OriginStore, data []byte) Digest {
	t.Helper()
	d := Digest(sha256.Sum256(data))
	if err := o.Put(context.Background(), d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	return d
}

// counterValue reads one labelled counter from a collector.
func counterValue(t *testing.T, c prometheus.Collector, name, label, value string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, label, value) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestFetchFromOriginStoreThroughOwner: two real nodes, an edge and the
// chunk's owner, and a title whose origin node is gone (or unknown): the
// chunk is only in the S3 origin store. A viewer on the edge gets it
// through the owner, which fills from the store: exactly one GET reaches
// S3 (a whole-object GET), the counters of both nodes say where the bytes
// came from, and later viewers on either node are cache hits that do not
// touch S3.
func TestFetchFromOriginStoreThroughOwner(t *testing.T) {
	s3, proxy, o := storeOrigin(t)
	c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "owner")
	edge, owner := c.nodes["edge"], c.nodes["owner"]
	client := testClient()

	for i, origin := range []string{"gone", ""} {
		data := randomBytes(uint64(201+i), 1500<<10+i)
		d := putOrigin(t, o, data)
		res := viewerGet(client, viewerURL(edge, d, origin), nil)
		if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
			t.Fatalf("origin %q: GET: status %d, err %v, %d bytes\nedge log:\n%s\nowner log:\n%s", origin, res.status, res.err, len(res.body), edge.logs, owner.logs)
		}
		if gets := proxy.gets(s3.cfg.Bucket, o.Key(d)); len(gets) != 1 || gets[0].rng != "" {
			t.Fatalf("origin %q: GETs at S3: %+v, want one of the whole object", origin, gets)
		}
		waitFor(t, "the chunk in both caches", func() bool {
			return owner.cache.Has(d) && edge.cache.Has(d) && edge.f.Stats().FlightsInFlight == 0 && owner.f.Stats().FlightsInFlight == 0
		})
		for _, n := range []*testNode{edge, owner, edge} {
			if res := viewerGet(client, viewerURL(n, d, origin), nil); res.status != 200 || !bytes.Equal(res.body, data) {
				t.Fatalf("origin %q: later GET on %s: %d, %d bytes", origin, n.name, res.status, len(res.body))
			}
		}
		if gets := proxy.gets(s3.cfg.Bucket, o.Key(d)); len(gets) != 1 {
			t.Fatalf("origin %q: %d GETs at S3 after cache hits, want 1", origin, len(gets))
		}
	}
	total := uint64(1500<<10 + 1500<<10 + 1)
	es, ows := edge.f.Stats(), owner.f.Stats()
	if es.UpstreamFetches["peer"] != 2 || es.UpstreamFetches["store"] != 0 || es.UpstreamFetches["origin"] != 0 ||
		es.BytesServed["peer"] != total || es.BytesServed["store"] != 0 {
		t.Fatalf("edge stats: %+v", es)
	}
	if ows.UpstreamFetches["store"] != 2 || ows.UpstreamFetches["origin"] != 0 || ows.BytesServed["store"] != total {
		t.Fatalf("owner stats: %+v", ows)
	}
	if _, ok := ows.Peers[o.Name()]; ok {
		t.Fatalf("the store is ranked among the peers: %+v", ows.Peers)
	}
	if n := owner.peerReqs.Load(); n != 2 {
		t.Fatalf("%d requests at the owner, want 2", n)
	}
	if v := counterValue(t, owner.f.Collector(), "gradient_vod_upstream_fetches_total", "from", "store"); v != 2 {
		t.Fatalf("gradient_vod_upstream_fetches_total{from=store} = %v", v)
	}
	if v := counterValue(t, owner.f.Collector(), "gradient_vod_bytes_served_total", "source", "store"); v != float64(total) {
		t.Fatalf("gradient_vod_bytes_served_total{source=store} = %v", v)
	}
}

// TestFetchFromOriginStoreWhenNodesFail: the origin store is the flight's
// last source. When the owner refuses, the edge reads the store itself;
// when the owner is cut off mid-chunk, the store sends the rest (read
// from the object's start, which its reader verifies whole); an object
// altered in the bucket is caught, counted against the store and never
// cached; a chunk no node and no store holds is a 404.
func TestFetchFromOriginStoreWhenNodesFail(t *testing.T) {
	s3, proxy, o := storeOrigin(t)

	t.Run("origin node without the chunk", func(t *testing.T) {
		// The origin node is alive but kept nothing (or lost it): the
		// filling owner asks it, then reads the store.
		c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "n1", "n2")
		data := randomBytes(210, 1<<20)
		d := putOrigin(t, o, data)
		r := c.roles(d, "edge")
		owner, originNode, edge := r[0], r[1], c.nodes["edge"]
		res := viewerGet(testClient(), viewerURL(edge, d, originNode.name), nil)
		if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
			t.Fatalf("GET: %d, %v, %d bytes\n%s", res.status, res.err, len(res.body), owner.logs)
		}
		if gets := proxy.gets(s3.cfg.Bucket, o.Key(d)); len(gets) != 1 {
			t.Fatalf("GETs at S3: %+v", gets)
		}
		os := owner.f.Stats()
		if os.UpstreamFetches["origin"] != 1 || os.UpstreamFetches["store"] != 1 || os.BytesServed["store"] != uint64(len(data)) {
			t.Fatalf("owner stats: %+v", os)
		}
		if n := originNode.peerReqs.Load(); n != 1 {
			t.Fatalf("%d requests at the origin node, want 1 (the owner's)", n)
		}
		if st := edge.f.Stats(); st.UpstreamFetches["peer"] != 1 || st.UpstreamFetches["store"] != 0 {
			t.Fatalf("edge stats: %+v", st)
		}
	})

	t.Run("owner refuses", func(t *testing.T) {
		c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "owner")
		edge, owner := c.nodes["edge"], c.nodes["owner"]
		owner.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}
		data := randomBytes(211, 1<<20)
		d := putOrigin(t, o, data)
		res := viewerGet(testClient(), viewerURL(edge, d, "gone"), nil)
		if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
			t.Fatalf("GET: %d, %v, %d bytes\n%s", res.status, res.err, len(res.body), edge.logs)
		}
		if gets := proxy.gets(s3.cfg.Bucket, o.Key(d)); len(gets) != 1 {
			t.Fatalf("GETs at S3: %+v", gets)
		}
		st := edge.f.Stats()
		if st.UpstreamFetches["peer"] != 1 || st.UpstreamFetches["store"] != 1 || st.BytesServed["store"] != uint64(len(data)) ||
			st.Peers["owner"].Failures != 1 {
			t.Fatalf("edge stats: %+v", st)
		}
		waitFor(t, "the chunk in the edge's cache", func() bool { return edge.cache.Has(d) })
	})

	t.Run("owner cut mid-chunk", func(t *testing.T) {
		c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "owner")
		edge, owner := c.nodes["edge"], c.nodes["owner"]
		data := randomBytes(212, 2<<20)
		d := putOrigin(t, o, data)
		half := len(data)/2 + 4321
		owner.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
			setChunkHeaders(w.Header(), d, "")
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(200)
			w.Write(data[:half])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
		res := viewerGet(testClient(), viewerURL(edge, d, "gone"), nil)
		if res.err != nil || res.status != 200 || !bytes.Equal(res.body, data) {
			t.Fatalf("GET: %d, %v, %d bytes\n%s", res.status, res.err, len(res.body), edge.logs)
		}
		if gets := proxy.gets(s3.cfg.Bucket, o.Key(d)); len(gets) != 1 || gets[0].rng != "" {
			t.Fatalf("GETs at S3: %+v, want one of the whole object", gets)
		}
		if st := edge.f.Stats(); st.UpstreamFetches["store"] != 1 || len(st.IntegrityFailures) != 0 {
			t.Fatalf("edge stats: %+v", st)
		}
	})

	t.Run("owner sends a bad half", func(t *testing.T) {
		// The owner's half is corrupt and the store sends the rest: the
		// copy fails its digest, and only the owner is charged (the
		// store's reader verified its whole object).
		c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "owner")
		edge, owner := c.nodes["edge"], c.nodes["owner"]
		data := randomBytes(214, 1<<20)
		d := putOrigin(t, o, data)
		bad := bytes.Clone(data[:len(data)/2])
		bad[100] ^= 0x10
		owner.wrap = func(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
			setChunkHeaders(w.Header(), d, "")
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(200)
			w.Write(bad)
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
		res := viewerGet(testClient(), viewerURL(edge, d, "gone"), nil)
		if res.status == 200 && res.err == nil {
			t.Fatalf("viewer got a whole response of %d bytes from a corrupt copy", len(res.body))
		}
		waitFor(t, "the flight to end", func() bool { return edge.f.Stats().FlightsInFlight == 0 })
		if st := edge.f.Stats(); st.IntegrityFailures["owner"] != 1 || st.IntegrityFailures[o.Name()] != 0 || st.UpstreamFetches["store"] != 1 {
			t.Fatalf("edge stats: %+v", st)
		}
		if edge.cache.Has(d) {
			t.Fatal("a corrupt copy was cached")
		}
	})

	t.Run("altered in the bucket", func(t *testing.T) {
		c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "owner")
		edge, owner := c.nodes["edge"], c.nodes["owner"]
		data := randomBytes(213, 1<<20)
		d := putOrigin(t, o, data)
		bad := bytes.Clone(data)
		bad[len(bad)/3] ^= 0x80
		if _, err := s3.client.PutObject(context.Background(), s3.cfg.Bucket, o.Key(d), bytes.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		res := viewerGet(testClient(), viewerURL(edge, d, "gone"), nil)
		switch {
		case res.status == 200 && res.err != nil && len(res.body) < len(data):
		case res.status == http.StatusNotFound || res.status == http.StatusBadGateway:
		default:
			t.Fatalf("viewer: status %d, err %v, %d bytes", res.status, res.err, len(res.body))
		}
		waitFor(t, "the flights to end", func() bool {
			return edge.f.Stats().FlightsInFlight == 0 && owner.f.Stats().FlightsInFlight == 0
		})
		// Both nodes are the chunk's filling owners: the first reads the
		// store itself, the second asks the first to fill (and, refused,
		// reads the store too). The first counts the store's bad copy.
		first := owner
		if Owners(d, []string{"edge", "owner"})[0] == "edge" {
			first = edge
		}
		if st := first.f.Stats(); st.IntegrityFailures[o.Name()] != 1 {
			t.Fatalf("%s (first owner) stats: %+v", first.name, st)
		}
		if edge.cache.Has(d) || owner.cache.Has(d) {
			t.Fatal("a corrupt copy was cached")
		}
		t.Logf("viewer: status %d, %d bytes, err %v; edge integrity failures %v", res.status, len(res.body), res.err, edge.f.Stats().IntegrityFailures)
	})

	t.Run("held nowhere", func(t *testing.T) {
		c := newTestCluster(t, FetcherConfig{Origin: o, StallTimeout: storeStall}, "edge", "owner")
		res := viewerGet(testClient(), viewerURL(c.nodes["edge"], digestOf("held nowhere"), "gone"), nil)
		if res.status != http.StatusNotFound {
			t.Fatalf("status %d, want 404", res.status)
		}
	})
}

// vod.parent must be the base URL of a node's HTTP server.
func TestConfigParentURL(t *testing.T) {
	for _, p := range []string{"", "http://10.0.0.2:8080", "https://edge.example/", "http://[::1]:8080"} {
		c := DefaultConfig()
		c.Parent = p
		if err := c.Validate(); err != nil {
			t.Errorf("parent %q: %v", p, err)
		}
	}
	for _, p := range []string{"10.0.0.2:8080", "ftp://x", "http://", "http://x/?a=1", "::"} {
		c := DefaultConfig()
		c.Parent = p
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "parent") {
			t.Errorf("parent %q: %v, want a parent error", p, err)
		}
	}
}
