package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// s3Request is one request that reached the S3 server through s3Proxy.
type s3Request struct {
	method, path, rng string
}

// s3Proxy stands between the code under test and a real S3 server on
// loopback and records every request, so that tests count the GETs that
// reach the server. The Host header is passed on as the client sent it:
// it is part of the request's signature.
type s3Proxy struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []s3Request
}

func newS3Proxy(t *testing.T, endpoint string) *s3Proxy {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: endpoint}
	p := &s3Proxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, s3Request{r.Method, r.URL.Path, r.Header.Get("Range")})
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// endpoint is the proxy's host:port.
func (p *s3Proxy) endpoint() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// gets lists the GETs of the object key (path /bucket/key).
func (p *s3Proxy) gets(bucket, key string) []s3Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []s3Request
	for _, r := range p.reqs {
		if r.method == http.MethodGet && r.path == "/"+bucket+"/"+key {
			out = append(out, r)
		}
	}
	return out
}

// testS3 is a real SeaweedFS S3 server, a raw client on it (to alter
// objects behind the origin's back) and its config.
type testS3 struct {
	cfg    S3Config
	client *minio.Client
}

func startTestS3(t *testing.T, prefix string) testS3 {
	t.Helper()
	endpoint, ak, sk, bucket := testutil.StartS3(t)
	cfg := DefaultS3Config()
	cfg.Endpoint, cfg.AccessKey, cfg.SecretKey = endpoint, ak, sk
	cfg.Bucket, cfg.Prefix, cfg.UseTLS = bucket, prefix, false
	client, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(ak, sk, "")})
	if err != nil {
		t.Fatal(err)
	}
	return testS3{cfg: cfg, client: client}
}

func newTestS3Origin(t *testing.T, cfg S3Config) (*S3Origin, *lockedBuffer) {
	t.Helper()
	log, buf := bufferedLogger(t)
	o, err := NewS3Origin(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.CheckBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return o, buf
}

// readOrigin reads d from offset to the end.
func readOrigin(o OriginStore, d Digest, offset int64) ([]byte, int64, error) {
	rc, size, err := o.Open(context.Background(), d, offset)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, size, err
}

// TestS3OriginRoundTrip: chunks of 1-2 MB put in a real S3 server are
// stored as <prefix>/<hex[:2]>/<hex>, read back whole and from an offset
// (size always the whole chunk's), reported by Has, and removed; a chunk
// never stored (or removed) is ErrChunkNotFound, and removing it again
// is not an error.
func TestS3OriginRoundTrip(t *testing.T) {
	t.Parallel() // each has its own server; their ~10 s starts overlap
	s3 := startTestS3(t, "titles/v1")
	o, _ := newTestS3Origin(t, s3.cfg)
	ctx := context.Background()
	if got := o.Name(); got != "s3://"+s3.cfg.Bucket+"/titles/v1" {
		t.Fatalf("Name %q", got)
	}
	chunks := [][]byte{randomBytes(101, 1<<20), randomBytes(102, 2<<20+12345)}
	for _, data := range chunks {
		d := Digest(sha256.Sum256(data))
		if err := o.Put(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put: %v", err)
		}
		key := "titles/v1/" + d.String()[:2] + "/" + d.String()
		if o.Key(d) != key {
			t.Fatalf("Key %q, want %q", o.Key(d), key)
		}
		info, err := s3.client.StatObject(ctx, s3.cfg.Bucket, key, minio.StatObjectOptions{})
		if err != nil || info.Size != int64(len(data)) || info.ContentType != "application/octet-stream" {
			t.Fatalf("object %s: %+v, %v", key, info, err)
		}
		if ok, err := o.Has(ctx, d); !ok || err != nil {
			t.Fatalf("Has: %v, %v", ok, err)
		}
		got, size, err := readOrigin(o, d, 0)
		if err != nil || size != int64(len(data)) || !bytes.Equal(got, data) {
			t.Fatalf("Open: %d bytes (size %d), %v", len(got), size, err)
		}
		for _, off := range []int64{1, 777777, int64(len(data)) - 1, int64(len(data))} {
			got, size, err := readOrigin(o, d, off)
			if err != nil || size != int64(len(data)) || !bytes.Equal(got, data[off:]) {
				t.Fatalf("Open at %d: %d bytes (size %d), %v", off, len(got), size, err)
			}
		}
		if _, _, err := o.Open(ctx, d, int64(len(data))+1); err == nil {
			t.Fatal("Open past the end: no error")
		}
	}
	d0 := Digest(sha256.Sum256(chunks[0]))
	if err := o.Remove(ctx, d0); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if ok, err := o.Has(ctx, d0); ok || err != nil {
		t.Fatalf("Has after Remove: %v, %v", ok, err)
	}
	if _, _, err := o.Open(ctx, d0, 0); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open after Remove: %v, want ErrChunkNotFound", err)
	}
	if err := o.Remove(ctx, d0); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	missing := digestOf("never stored")
	if _, _, err := o.Open(ctx, missing, 0); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open of a missing key: %v, want ErrChunkNotFound", err)
	}
	if ok, err := o.Has(ctx, missing); ok || err != nil {
		t.Fatalf("Has of a missing key: %v, %v", ok, err)
	}
	// The other chunk is untouched.
	if got, _, err := readOrigin(o, Digest(sha256.Sum256(chunks[1])), 0); err != nil || !bytes.Equal(got, chunks[1]) {
		t.Fatalf("other chunk: %d bytes, %v", len(got), err)
	}

	// The packager's ChunkPutter over the origin: the digest is learnt
	// from the bytes, and the chunk is in the bucket when Put returns.
	seg := randomBytes(103, 700<<10)
	c, err := OriginPutter{Origin: o}.Put(io.MultiReader(bytes.NewReader(seg[:1000]), bytes.NewReader(seg[1000:])))
	if err != nil || c.Digest != Digest(sha256.Sum256(seg)) || c.Size != int64(len(seg)) {
		t.Fatalf("OriginPutter: %+v, %v", c, err)
	}
	if got, _, err := readOrigin(o, c.Digest, 0); err != nil || !bytes.Equal(got, seg) {
		t.Fatalf("chunk put by OriginPutter: %d bytes, %v", len(got), err)
	}
}

// TestS3OriginPutRefusesWrongBytes: bytes that do not hash to the digest,
// or fewer than announced, fail Put, and the server never completes the
// object: a new key is not created, and a good copy is not overwritten.
func TestS3OriginPutRefusesWrongBytes(t *testing.T) {
	t.Parallel() // each has its own server; their ~10 s starts overlap
	s3 := startTestS3(t, "")
	o, _ := newTestS3Origin(t, s3.cfg)
	ctx := context.Background()
	good := randomBytes(111, 1<<20)
	d := Digest(sha256.Sum256(good))
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0xff

	err := o.Put(ctx, d, bytes.NewReader(bad), int64(len(bad)))
	if !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("Put of wrong bytes: %v, want ErrChunkCorrupt", err)
	}
	if ok, err := o.Has(ctx, d); ok || err != nil {
		t.Fatalf("after a refused Put: Has %v, %v", ok, err)
	}
	if err := o.Put(ctx, d, bytes.NewReader(good[:1000]), int64(len(good))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Put of a short reader: %v, want io.ErrUnexpectedEOF", err)
	}
	if ok, _ := o.Has(ctx, d); ok {
		t.Fatal("a short Put created the object")
	}

	if err := o.Put(ctx, d, bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	if err := o.Put(ctx, d, bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("Put of wrong bytes over a good copy: %v", err)
	}
	if got, _, err := readOrigin(o, d, 0); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("the good copy after a refused overwrite: %d bytes, %v", len(got), err)
	}
	if o.Name() != "s3://"+s3.cfg.Bucket || o.Key(d) != d.String()[:2]+"/"+d.String() {
		t.Fatalf("without a prefix: Name %q, Key %q", o.Name(), o.Key(d))
	}

	// Over 16 MiB minio-go uploads in parts: a bad last part aborts the
	// whole upload, a good one completes it.
	big := randomBytes(112, 17<<20+3)
	bd := Digest(sha256.Sum256(big))
	badBig := bytes.Clone(big)
	badBig[len(badBig)-2] ^= 1
	if err := o.Put(ctx, bd, bytes.NewReader(badBig), int64(len(badBig))); !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("multipart Put of wrong bytes: %v", err)
	}
	if ok, _ := o.Has(ctx, bd); ok {
		t.Fatal("a refused multipart Put created the object")
	}
	if err := o.Put(ctx, bd, bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatalf("multipart Put: %v", err)
	}
	if got, _, err := readOrigin(o, bd, 5<<20); err != nil || !bytes.Equal(got, big[5<<20:]) {
		t.Fatalf("multipart chunk from 5 MiB: %d bytes, %v", len(got), err)
	}
}

// TestS3OriginDetectsAlteredObject: an object overwritten in the bucket
// behind the origin's back (same length with one byte changed, or another
// length) is refused on read with ErrChunkCorrupt, from the start or from
// an offset, before the reader has delivered all of it; it is reported
// once in the log, and a Put of the right bytes repairs it.
func TestS3OriginDetectsAlteredObject(t *testing.T) {
	t.Parallel() // each has its own server; their ~10 s starts overlap
	s3 := startTestS3(t, "p")
	o, logs := newTestS3Origin(t, s3.cfg)
	ctx := context.Background()
	good := randomBytes(121, 1500<<10)
	d := Digest(sha256.Sum256(good))
	if err := o.Put(ctx, d, bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[700000] ^= 0x01
	for name, altered := range map[string][]byte{
		"byte flipped": flipped,
		"truncated":    good[:len(good)-10],
		"appended":     append(bytes.Clone(good), 1, 2, 3),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s3.client.PutObject(ctx, s3.cfg.Bucket, o.Key(d), bytes.NewReader(altered), int64(len(altered)), minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, off := range []int64{0, 1 << 20} {
				got, size, err := readOrigin(o, d, off)
				if !errors.Is(err, ErrChunkCorrupt) {
					t.Fatalf("read at %d: %d bytes, %v; want ErrChunkCorrupt", off, len(got), err)
				}
				if int64(len(got)) >= size-off {
					t.Fatalf("read at %d: delivered %d bytes of a %d-byte object before failing", off, len(got), size)
				}
			}
		})
	}
	if n := strings.Count(logs.String(), `level=ERROR msg="chunk corrupt in the origin store`); n != 1 {
		t.Fatalf("%d corrupt reports logged as errors, want 1 (later ones at debug):\n%s", n, logs)
	}
	if err := o.Put(ctx, d, bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	if got, _, err := readOrigin(o, d, 0); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("after the repairing Put: %d bytes, %v", len(got), err)
	}
}

// TestS3OriginConfig: vod.origin and vod.s3 are parsed and checked, each
// error naming its key; OpenOrigin gives the data dir or an S3Origin.
func TestS3OriginConfig(t *testing.T) {
	for _, c := range []struct {
		in, bucket, prefix, err string
	}{
		{in: ""},
		{in: "dir"},
		{in: "s3://media", bucket: "media"},
		{in: "s3://media/", bucket: "media"},
		{in: "s3://media/vod/titles/", bucket: "media", prefix: "vod/titles"},
		{in: "/var/lib/x", err: "origin:"},
		{in: "s3://", err: "origin:"},
		{in: "s3://Bad_Bucket/x", err: "origin:"},
		{in: "s3://media/a//b", err: "origin:"},
		{in: "s3://media/a/../b", err: "origin:"},
		{in: "gs://media", err: "origin:"},
	} {
		b, p, err := ParseOrigin(c.in)
		if c.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), c.err) {
				t.Errorf("ParseOrigin(%q): %v, want an error starting %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseOrigin(%q) = %q, %q, %v", c.in, b, p, err)
		}
	}

	good := DefaultS3Config()
	if !good.UseTLS {
		t.Fatal("TLS is not the default")
	}
	good.Endpoint, good.Bucket, good.AccessKey, good.SecretKey = "s3.example.net:9000", "media", "ak", "sk"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for key, mod := range map[string]func(*S3Config){
		"s3.endpoint:":    func(c *S3Config) { c.Endpoint = "" },
		"s3.endpoint: \"": func(c *S3Config) { c.Endpoint = "https://s3.example.net" },
		"s3.access_key":   func(c *S3Config) { c.SecretKey = "" },
		"origin:":         func(c *S3Config) { c.Bucket = "" },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), key) {
			t.Errorf("%s: Validate: %v", key, err)
		}
		if _, err := NewS3Origin(c, nil); err == nil {
			t.Errorf("%s: NewS3Origin accepted the config", key)
		}
	}

	local, _ := newTestStore(t, t.TempDir(), 0)
	o, err := OpenOrigin("", good, local, nil)
	if _, ok := o.(*DirOrigin); !ok || err != nil {
		t.Fatalf("OpenOrigin(\"\"): %T, %v", o, err)
	}
	o, err = OpenOrigin("s3://media/vod", good, local, nil)
	if s, ok := o.(*S3Origin); !ok || err != nil || s.Name() != "s3://media/vod" {
		t.Fatalf("OpenOrigin(s3://media/vod): %T, %v", o, err)
	}
	if _, err := OpenOrigin("s3://media/vod", S3Config{}, local, nil); err == nil || !strings.HasPrefix(err.Error(), "s3.endpoint") {
		t.Fatalf("OpenOrigin without vod.s3: %v", err)
	}
}

// TestDirOriginRoundTrip: the data-dir origin stores through the node's
// ChunkStore, refuses bytes that do not hash to the digest without
// leaving anything behind, reads from an offset, and removes idempotently.
func TestDirOriginRoundTrip(t *testing.T) {
	dir := t.TempDir()
	store, _ := newTestStore(t, dir, -1)
	o := NewDirOrigin(store)
	ctx := context.Background()
	data := randomBytes(131, 300<<10)
	d := Digest(sha256.Sum256(data))
	bad := bytes.Clone(data)
	bad[5] ^= 1
	if err := o.Put(ctx, d, bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("Put of wrong bytes: %v", err)
	}
	if files := listFiles(t, dir); len(files) != 0 {
		t.Fatalf("a refused Put left %v", files)
	}
	if err := o.Put(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if ok, _ := o.Has(ctx, d); !ok {
		t.Fatal("Has: false")
	}
	got, size, err := readOrigin(o, d, 1000)
	if err != nil || size != int64(len(data)) || !bytes.Equal(got, data[1000:]) {
		t.Fatalf("Open at 1000: %d bytes (size %d), %v", len(got), size, err)
	}
	if !strings.HasPrefix(o.Name(), "file:///") {
		t.Fatalf("Name %q", o.Name())
	}
	if err := o.Remove(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := o.Remove(ctx, d); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, _, err := o.Open(ctx, d, 0); !errors.Is(err, ErrChunkNotFound) {
		t.Fatalf("Open after Remove: %v", err)
	}
	c, err := OriginPutter{Origin: o}.Put(bytes.NewReader(data))
	if err != nil || c.Digest != d || !store.Has(d) {
		t.Fatalf("OriginPutter: %+v, %v", c, err)
	}
	if _, err := (OriginPutter{Origin: o}).Put(&failingReader{r: bytes.NewReader(data[:10]), err: errors.New("link down")}); err == nil {
		t.Fatal("OriginPutter: a failing reader gave no error")
	}
	// An empty chunk verifies too.
	e := Digest(sha256.Sum256(nil))
	if err := o.Put(ctx, e, bytes.NewReader(nil), 0); err != nil {
		t.Fatalf("empty chunk: %v", err)
	}
	if err := o.Put(ctx, d, bytes.NewReader(nil), 0); !errors.Is(err, ErrChunkCorrupt) {
		t.Fatalf("empty bytes for a non-empty digest: %v", err)
	}
}
