package vod

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chunkServer serves s at /vod/chunks/<hex>, as the node will.
func chunkServer(t testing.TB, s *ChunkStore) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := ParseDigest(strings.TrimPrefix(r.URL.Path, "/vod/chunks/"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		s.ServeChunk(w, r, d, "video/mp4")
	}))
	t.Cleanup(srv.Close)
	return srv
}

type chunkResponse struct {
	status int
	header http.Header
	body   []byte
}

func fetchChunk(t testing.TB, client *http.Client, method, url string, header map[string]string) chunkResponse {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return chunkResponse{resp.StatusCode, resp.Header, body}
}

// httpStores: a chunk served from the memory cache and one served from
// its file (bigger than a cache entry).
var httpStores = []struct {
	name   string
	memory int64
	size   int
}{
	{"from memory", 8 << 20, 333_333},
	{"from file", 1 << 20, 555_555},
}

func TestServeChunkFullGet(t *testing.T) {
	for _, st := range httpStores {
		t.Run(st.name, func(t *testing.T) {
			s, _ := newTestStore(t, t.TempDir(), st.memory)
			data := randomBytes(20, st.size)
			c, err := s.Put(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			srv := chunkServer(t, s)
			url := srv.URL + "/vod/chunks/" + c.Digest.String()
			for range 2 { // miss, then hit
				r := fetchChunk(t, srv.Client(), http.MethodGet, url, nil)
				if r.status != http.StatusOK {
					t.Fatalf("status %d", r.status)
				}
				if !bytes.Equal(r.body, data) {
					t.Fatalf("body (%d bytes) differs from the chunk (%d bytes)", len(r.body), len(data))
				}
				sum := sha256.Sum256(r.body)
				if want := "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"; r.header.Get("Repr-Digest") != want {
					t.Fatalf("Repr-Digest %q, sha256 of the body %q", r.header.Get("Repr-Digest"), want)
				}
				for k, want := range map[string]string{
					"ETag":           `"` + c.Digest.String() + `"`,
					"Cache-Control":  "public, max-age=31536000, immutable",
					"Accept-Ranges":  "bytes",
					"Content-Type":   "video/mp4",
					"Content-Length": fmt.Sprint(len(data)),
				} {
					if got := r.header.Get(k); got != want {
						t.Errorf("%s: %q, want %q", k, got, want)
					}
				}
			}
		})
	}
}

func TestServeChunkRange(t *testing.T) {
	for _, st := range httpStores {
		t.Run(st.name, func(t *testing.T) {
			s, _ := newTestStore(t, t.TempDir(), st.memory)
			data := randomBytes(21, st.size)
			c, err := s.Put(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			srv := chunkServer(t, s)
			url := srv.URL + "/vod/chunks/" + c.Digest.String()
			full := fetchChunk(t, srv.Client(), http.MethodGet, url, nil).body
			n := len(data)
			for _, tc := range []struct {
				rng        string
				start, end int // inclusive
			}{
				{"bytes=0-0", 0, 0},
				{"bytes=100-199", 100, 199},
				{"bytes=1000-", 1000, n - 1},
				{"bytes=-4096", n - 4096, n - 1},
				{fmt.Sprintf("bytes=%d-%d", n-10, n+500), n - 10, n - 1}, // end past the end is clipped
			} {
				r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"Range": tc.rng})
				if r.status != http.StatusPartialContent {
					t.Fatalf("%s: status %d, want 206", tc.rng, r.status)
				}
				if want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, n); r.header.Get("Content-Range") != want {
					t.Fatalf("%s: Content-Range %q, want %q", tc.rng, r.header.Get("Content-Range"), want)
				}
				if !bytes.Equal(r.body, full[tc.start:tc.end+1]) {
					t.Fatalf("%s: body is not that slice of the full chunk", tc.rng)
				}
				if r.header.Get("ETag") == "" || r.header.Get("Repr-Digest") != c.Digest.ReprDigest() {
					t.Fatalf("%s: 206 without ETag/Repr-Digest: %v", tc.rng, r.header)
				}
			}
			// If-Range with the chunk's ETag keeps the range; another ETag gets the whole chunk.
			r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"Range": "bytes=10-19", "If-Range": `"` + c.Digest.String() + `"`})
			if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[10:20]) {
				t.Fatalf("If-Range matching: status %d", r.status)
			}
			r = fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"Range": "bytes=10-19", "If-Range": `"other"`})
			if r.status != http.StatusOK || !bytes.Equal(r.body, data) {
				t.Fatalf("If-Range not matching: status %d", r.status)
			}
		})
	}
}

func TestServeChunkRangePastEnd(t *testing.T) {
	s, _ := newTestStore(t, t.TempDir(), 0)
	data := randomBytes(22, 5000)
	c, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	srv := chunkServer(t, s)
	url := srv.URL + "/vod/chunks/" + c.Digest.String()
	for _, rng := range []string{"bytes=5000-", "bytes=9000-9999"} {
		r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"Range": rng})
		if r.status != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("%s: status %d, want 416", rng, r.status)
		}
		if got := r.header.Get("Content-Range"); got != "bytes */5000" {
			t.Fatalf("%s: Content-Range %q, want bytes */5000", rng, got)
		}
		if bytes.Contains(r.body, data[:64]) {
			t.Fatalf("%s: 416 carries chunk bytes", rng)
		}
	}
}

func TestServeChunkIfNoneMatch(t *testing.T) {
	s, _ := newTestStore(t, t.TempDir(), 0)
	c, err := s.Put(bytes.NewReader(randomBytes(23, 9000)))
	if err != nil {
		t.Fatal(err)
	}
	srv := chunkServer(t, s)
	url := srv.URL + "/vod/chunks/" + c.Digest.String()
	etag := `"` + c.Digest.String() + `"`
	for _, inm := range []string{etag, `"aaaa", ` + etag, "*"} {
		r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"If-None-Match": inm})
		if r.status != http.StatusNotModified || len(r.body) != 0 {
			t.Fatalf("If-None-Match %s: status %d, %d body bytes; want 304, none", inm, r.status, len(r.body))
		}
		if r.header.Get("ETag") != etag {
			t.Fatalf("304 without the ETag: %v", r.header)
		}
	}
	r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"If-None-Match": `"` + strings.Repeat("0", 64) + `"`})
	if r.status != http.StatusOK || len(r.body) != 9000 {
		t.Fatalf("If-None-Match with another ETag: status %d, %d bytes", r.status, len(r.body))
	}
	// If-Match: the chunk's own ETag passes, another fails with 412.
	if r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"If-Match": etag}); r.status != http.StatusOK || len(r.body) != 9000 {
		t.Fatalf("If-Match with the ETag: status %d", r.status)
	}
	if r := fetchChunk(t, srv.Client(), http.MethodGet, url, map[string]string{"If-Match": `"other"`}); r.status != http.StatusPreconditionFailed {
		t.Fatalf("If-Match with another ETag: status %d, want 412", r.status)
	}
}

func TestServeChunkHead(t *testing.T) {
	s, _ := newTestStore(t, t.TempDir(), 0)
	c, err := s.Put(bytes.NewReader(randomBytes(24, 7777)))
	if err != nil {
		t.Fatal(err)
	}
	srv := chunkServer(t, s)
	resp, err := srv.Client().Head(srv.URL + "/vod/chunks/" + c.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD: status %d, %d body bytes", resp.StatusCode, len(body))
	}
	if resp.ContentLength != 7777 || resp.Header.Get("Repr-Digest") != c.Digest.ReprDigest() ||
		resp.Header.Get("ETag") == "" || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("HEAD headers: length %d, %v", resp.ContentLength, resp.Header)
	}
}

func TestServeChunkUnknownAndBadMethod(t *testing.T) {
	s, _ := newTestStore(t, t.TempDir(), 0)
	c, err := s.Put(bytes.NewReader([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	srv := chunkServer(t, s)
	unknown := Digest(sha256.Sum256([]byte("never stored")))
	if r := fetchChunk(t, srv.Client(), http.MethodGet, srv.URL+"/vod/chunks/"+unknown.String(), nil); r.status != http.StatusNotFound {
		t.Fatalf("unknown digest: status %d", r.status)
	}
	if r := fetchChunk(t, srv.Client(), http.MethodHead, srv.URL+"/vod/chunks/"+unknown.String(), nil); r.status != http.StatusNotFound {
		t.Fatalf("HEAD unknown digest: status %d", r.status)
	}
	r := fetchChunk(t, srv.Client(), http.MethodPost, srv.URL+"/vod/chunks/"+c.Digest.String(), nil)
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: status %d, Allow %q", r.status, r.header.Get("Allow"))
	}
}

func TestServeChunkCorruptIsNeverSent(t *testing.T) {
	for _, st := range httpStores {
		t.Run(st.name, func(t *testing.T) {
			dir := t.TempDir()
			s1, _ := newTestStore(t, dir, st.memory)
			data := randomBytes(25, st.size)
			c, err := s1.Put(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			flipByte(t, s1, c.Digest, int64(st.size-3))
			damaged, err := os.ReadFile(s1.path(c.Digest))
			if err != nil {
				t.Fatal(err)
			}

			s, log := newTestStore(t, dir, st.memory)
			var reported atomic.Int32
			s.OnCorrupt = func(d Digest) {
				if d == c.Digest {
					reported.Add(1)
				}
			}
			srv := chunkServer(t, s)
			url := srv.URL + "/vod/chunks/" + c.Digest.String()
			// A range far from the damage, then the whole chunk, then HEAD:
			// none may answer with the chunk.
			for _, h := range []map[string]string{{"Range": "bytes=0-99"}, nil} {
				r := fetchChunk(t, srv.Client(), http.MethodGet, url, h)
				if r.status != http.StatusNotFound {
					t.Fatalf("corrupt chunk (%v): status %d, want 404", h, r.status)
				}
				if bytes.Contains(r.body, damaged[:100]) || bytes.Contains(r.body, data[:100]) {
					t.Fatal("the corrupt chunk's bytes were sent")
				}
			}
			if r := fetchChunk(t, srv.Client(), http.MethodHead, url, nil); r.status != http.StatusNotFound {
				t.Fatalf("HEAD corrupt chunk: status %d", r.status)
			}
			if reported.Load() != 1 {
				t.Fatalf("OnCorrupt called %d times, want once", reported.Load())
			}
			if !strings.Contains(log.String(), "corrupt") {
				t.Fatalf("no log line: %q", log.String())
			}
			if s.Has(c.Digest) {
				t.Fatal("store still has the corrupt chunk")
			}
		})
	}
}

// BenchmarkChunkStoreServeHot measures hot-chunk GETs (all chunks in the
// memory cache) over HTTP/1.1 keep-alive on loopback with 64 concurrent
// clients: requests/s, MB/s and the p99 latency of a request: 16 chunks of
// 256 KiB, requests spread round-robin over them.
func BenchmarkChunkStoreServeHot(b *testing.B) {
	const (
		clients   = 64
		nChunks   = 16
		chunkSize = 256 << 10
	)
	// VOD_BENCH_CHUNK_DIR keeps the chunk files (<dir>/<hh>/<hex>) for a
	// side-by-side server such as nginx; by default they go with the run.
	dir := os.Getenv("VOD_BENCH_CHUNK_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	s, _ := newTestStore(b, dir, 64<<20)
	var urls []string
	srv := chunkServer(b, s)
	for i := range nChunks {
		c, err := s.Put(bytes.NewReader(randomBytes(uint64(500+i), chunkSize)))
		if err != nil {
			b.Fatal(err)
		}
		urls = append(urls, srv.URL+"/vod/chunks/"+c.Digest.String())
	}
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(url string) error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || n != chunkSize {
			return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return nil
	}
	// Warm: every chunk verified into memory, connections open.
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			if err := get(urls[i%nChunks]); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()

	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := get(urls[int(i)%nChunks]); err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(b.N)*chunkSize/1e6/elapsed.Seconds(), "MB/s")
}
