package vod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// S3Config is an S3-compatible origin store: the bucket and key prefix of
// vod.origin ("s3://bucket/prefix") and the vod.s3 section.
type S3Config struct {
	// Endpoint is host[:port] of the S3 API (vod.s3.endpoint), e.g.
	// "s3.eu-west-1.amazonaws.com" or "10.0.0.5:8333"; no scheme (see
	// UseTLS).
	Endpoint string `yaml:"endpoint"`
	// Bucket and Prefix come from vod.origin (ParseOrigin).
	Bucket string `yaml:"-"`
	Prefix string `yaml:"-"`
	// AccessKey and SecretKey sign every request (vod.s3.access_key,
	// vod.s3.secret_key).
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	// Region is the bucket's region (vod.s3.region). Empty: asked of the
	// server once (GetBucketLocation), which S3-compatible servers answer;
	// set it for AWS to save that request.
	Region string `yaml:"region"`
	// UseTLS speaks HTTPS to the endpoint (vod.s3.tls). Default true: the
	// credentials sign requests, but the chunks and any error bodies would
	// otherwise cross the network in clear; turn it off only for a store
	// on a trusted network (or in tests).
	UseTLS bool `yaml:"tls"`
}

// DefaultS3Config returns the vod.s3 defaults.
func DefaultS3Config() S3Config { return S3Config{UseTLS: true} }

// originScheme is the vod.origin form of an S3 bucket.
const originScheme = "s3://"

// ParseOrigin reads vod.origin. "" and "dir" name the node's data dir
// (bucket ""), the default; "s3://bucket/prefix" names an S3 bucket and
// the key prefix under which chunks are stored (slashes around the prefix
// are dropped; it may be empty). Errors name the key.
func ParseOrigin(origin string) (bucket, prefix string, err error) {
	switch {
	case origin == "" || origin == "dir":
		return "", "", nil
	case !strings.HasPrefix(origin, originScheme):
		return "", "", fmt.Errorf(`origin: %q is neither "dir" nor s3://bucket/prefix`, origin)
	}
	bucket, prefix, _ = strings.Cut(strings.TrimPrefix(origin, originScheme), "/")
	prefix = strings.Trim(prefix, "/")
	if err := validBucketPrefix(bucket, prefix); err != nil {
		return "", "", fmt.Errorf("origin: %q: %w", origin, err)
	}
	return bucket, prefix, nil
}

func validBucketPrefix(bucket, prefix string) error {
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return fmt.Errorf("bucket %q: %w", bucket, err)
	}
	if prefix == "" {
		return nil
	}
	for _, seg := range strings.Split(prefix, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key prefix %q: empty, . or .. path segment", prefix)
		}
	}
	if strings.ContainsAny(prefix, "\\?#") {
		return fmt.Errorf(`key prefix %q: contains \, ? or #`, prefix)
	}
	return nil
}

// Validate names a bad field by its key under vod (origin, s3.endpoint, …).
func (c S3Config) Validate() error {
	if err := validBucketPrefix(c.Bucket, c.Prefix); err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	switch {
	case c.Endpoint == "":
		return errors.New("s3.endpoint: required for an s3:// origin")
	case strings.Contains(c.Endpoint, "://"):
		return fmt.Errorf("s3.endpoint: %q: give host[:port] without a scheme; s3.tls chooses HTTPS", c.Endpoint)
	case strings.ContainsAny(c.Endpoint, "/?# "):
		return fmt.Errorf("s3.endpoint: %q: give host[:port] only", c.Endpoint)
	case c.AccessKey == "" || c.SecretKey == "":
		return errors.New("s3.access_key, s3.secret_key: both required for an s3:// origin")
	}
	if _, err := url.Parse("http://" + c.Endpoint); err != nil {
		return fmt.Errorf("s3.endpoint: %q: %w", c.Endpoint, err)
	}
	return nil
}

// OpenOrigin makes the OriginStore vod.origin names: the node's data dir
// (local) for "" or "dir", else an S3Origin on the bucket with s3's
// endpoint and credentials (s3.Bucket and s3.Prefix are taken from origin).
func OpenOrigin(origin string, s3 S3Config, local *ChunkStore, log *slog.Logger) (OriginStore, error) {
	bucket, prefix, err := ParseOrigin(origin)
	if err != nil {
		return nil, err
	}
	if bucket == "" {
		if local == nil {
			return nil, errors.New("origin: the data dir origin needs the node's chunk store")
		}
		return NewDirOrigin(local), nil
	}
	s3.Bucket, s3.Prefix = bucket, prefix
	return NewS3Origin(s3, log)
}

// s3MaxRetries bounds minio-go's retries of one request (it retries 5xx,
// throttling and network errors with backoff; an upload, whose reader
// cannot be rewound, is never retried). Few: a fetch that waits long on
// one store gains nothing over failing, and the Fetcher's stall timer
// cancels a silent one anyway.
const s3MaxRetries = 3

// S3Origin keeps chunks in an S3-compatible bucket as
// <prefix>/<hex[:2]>/<hex> (the ChunkStore's layout, so a data dir can be
// copied there as is). Uploads are checked against the digest as they
// stream (the request is cut before its last bytes when they do not
// match, so the server never completes the object), and reads are hashed
// as they stream (see OriginStore.Open): an object altered in the bucket
// is reported and never served. It is not removed: the bucket holds the
// only durable copy, and an operator (or a re-Put from a node that still
// holds the chunk) repairs it.
type S3Origin struct {
	cfg  S3Config
	core *minio.Core
	log  *slog.Logger

	mu      sync.Mutex
	corrupt map[Digest]bool // reported once each
}

var _ OriginStore = (*S3Origin)(nil)

// NewS3Origin validates cfg and makes the client; it does not contact the
// server (CheckBucket does).
func NewS3Origin(cfg S3Config, log *slog.Logger) (*S3Origin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	tr, err := minio.DefaultTransport(cfg.UseTLS)
	if err != nil {
		return nil, fmt.Errorf("s3 origin %s: transport: %w", cfg.Endpoint, err)
	}
	// Chunks are compressed media; the exact bytes and length count.
	tr.DisableCompression = true
	core, err := minio.NewCore(cfg.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     cfg.UseTLS,
		Region:     cfg.Region,
		Transport:  tr,
		MaxRetries: s3MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 origin %s: %w", cfg.Endpoint, err)
	}
	o := &S3Origin{cfg: cfg, core: core, corrupt: map[Digest]bool{}}
	o.log = log.With("component", "vod-origin", "origin", o.Name())
	return o, nil
}

// Name is s3://bucket/prefix.
func (o *S3Origin) Name() string {
	if o.cfg.Prefix == "" {
		return originScheme + o.cfg.Bucket
	}
	return originScheme + o.cfg.Bucket + "/" + o.cfg.Prefix
}

// Key is the object key of chunk d: <prefix>/<hex[:2]>/<hex>.
func (o *S3Origin) Key(d Digest) string {
	h := d.String()
	k := h[:2] + "/" + h
	if o.cfg.Prefix != "" {
		k = o.cfg.Prefix + "/" + k
	}
	return k
}

// CheckBucket reports whether the bucket exists and the credentials may
// see it: a node calls it at start so that a wrong endpoint, bucket or
// key is an error there rather than at the first chunk.
func (o *S3Origin) CheckBucket(ctx context.Context) error {
	ok, err := o.core.BucketExists(ctx, o.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("origin %s at %s: %w", o.Name(), o.cfg.Endpoint, err)
	}
	if !ok {
		return fmt.Errorf("origin %s at %s: no such bucket", o.Name(), o.cfg.Endpoint)
	}
	return nil
}

// Put uploads the chunk in one request (or a multipart upload over 16
// MiB), hashing it as it goes: bytes that do not hash to d fail the
// upload before its last bytes are sent, so the object is never created
// or overwritten with them. Storing a chunk already stored rewrites the
// same bytes, which repairs a damaged copy.
func (o *S3Origin) Put(ctx context.Context, d Digest, r io.Reader, n int64) error {
	if n < 0 {
		return fmt.Errorf("origin %s: put %s: negative size %d", o.Name(), d, n)
	}
	key := o.Key(d)
	vr := newVerifyingReader(r, d, n, 0)
	// A type with only Read: minio-go must not see a Seeker (it would seek
	// to re-send, around the verification) and streams what it reads.
	_, err := o.core.Client.PutObject(ctx, o.cfg.Bucket, key, struct{ io.Reader }{vr}, n, minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		CacheControl: chunkCacheControl,
	})
	if err != nil {
		// minio-go wraps the reader's error; say which it was.
		if vr.err != nil && vr.err != io.EOF {
			err = vr.err
		}
		return fmt.Errorf("origin %s: put %s (%s): %w", o.Name(), d, key, err)
	}
	if !vr.ok {
		return fmt.Errorf("origin %s: put %s (%s): the upload ended after %d of %d bytes", o.Name(), d, key, vr.pos, n)
	}
	o.mu.Lock()
	delete(o.corrupt, d)
	o.mu.Unlock()
	return nil
}

// Open reads the object with one GET of the whole of it, hashing it as it
// streams; from an offset the bytes before it are read and hashed but not
// returned (they are needed to check the digest). ctx bounds the whole
// read, not only the call.
func (o *S3Origin) Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, int64, error) {
	if offset < 0 {
		return nil, 0, fmt.Errorf("origin %s: open %s: negative offset %d", o.Name(), d, offset)
	}
	key := o.Key(d)
	body, info, _, err := o.core.GetObject(ctx, o.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		if isNoSuchKey(err) {
			return nil, 0, fmt.Errorf("chunk %s: not in %s: %w", d, o.Name(), ErrChunkNotFound)
		}
		return nil, 0, fmt.Errorf("origin %s: get %s: %w", o.Name(), key, err)
	}
	if info.Size < 0 || offset > info.Size {
		body.Close()
		return nil, 0, fmt.Errorf("origin %s: get %s: offset %d outside the object's %d bytes", o.Name(), key, offset, info.Size)
	}
	return &s3Object{verifyingReader: newVerifyingReader(body, d, info.Size, offset), body: body, o: o}, info.Size, nil
}

// s3Object is an object being read and verified.
type s3Object struct {
	*verifyingReader
	body io.ReadCloser
	o    *S3Origin
}

func (s *s3Object) Read(p []byte) (int, error) {
	n, err := s.verifyingReader.Read(p)
	if errors.Is(err, ErrChunkCorrupt) {
		s.o.reportCorrupt(s.d, s.size, err)
	}
	return n, err
}

func (s *s3Object) Close() error { return s.body.Close() }

// reportCorrupt logs an altered object once per chunk (every read of it
// fails the same way until it is put again).
func (o *S3Origin) reportCorrupt(d Digest, size int64, err error) {
	o.mu.Lock()
	seen := o.corrupt[d]
	if !seen && len(o.corrupt) < 4096 {
		o.corrupt[d] = true
	}
	o.mu.Unlock()
	lvl := slog.LevelError
	if seen {
		lvl = slog.LevelDebug
	}
	o.log.Log(context.Background(), lvl, "chunk corrupt in the origin store: not served; put it again to repair it",
		"digest", d.String(), "key", o.Key(d), "bytes", size, "err", err)
}

// Has asks for the object's metadata.
func (o *S3Origin) Has(ctx context.Context, d Digest) (bool, error) {
	_, err := o.core.StatObject(ctx, o.cfg.Bucket, o.Key(d), minio.StatObjectOptions{})
	switch {
	case err == nil:
		return true, nil
	case isNoSuchKey(err):
		return false, nil
	}
	return false, fmt.Errorf("origin %s: stat %s: %w", o.Name(), o.Key(d), err)
}

// Remove deletes the object; S3 answers a delete of an absent key with
// success too.
func (o *S3Origin) Remove(ctx context.Context, d Digest) error {
	if err := o.core.RemoveObject(ctx, o.cfg.Bucket, o.Key(d), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("origin %s: remove %s: %w", o.Name(), o.Key(d), err)
	}
	return nil
}

// isNoSuchKey tells an absent object from every other failure (an absent
// bucket is a configuration error, not a missing chunk).
func isNoSuchKey(err error) bool {
	resp := minio.ToErrorResponse(err)
	return resp.Code == minio.NoSuchKey || (resp.Code == "" && resp.StatusCode == http.StatusNotFound)
}
