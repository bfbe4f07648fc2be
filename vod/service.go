package vod

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gradient-cdn/gradient/internal/defaults"
)

// Config is the `vod` section of a node's configuration.
type Config struct {
	// SegmentDuration is the target length of a segment; segments are cut
	// at the first keyframe at or after it. Default 4s.
	SegmentDuration time.Duration `yaml:"segment_duration"`
	// MaxJobs is how many titles are packaged at once. Default 1.
	MaxJobs int `yaml:"max_jobs"`
	// MaxUpload refuses an upload larger than this many bytes (413).
	// Default 16 GiB.
	MaxUpload int64 `yaml:"max_upload"`
	// MemoryCache is how many bytes of verified hot chunks are kept in
	// memory for serving. Default 256 MiB.
	MemoryCache int64 `yaml:"memory_cache"`
	// Nice is the scheduling priority packaging runs at (0 … 19), below
	// live serverlets so that a node packaging a title still serves its
	// live viewers at full rate. Default 10.
	Nice int `yaml:"nice"`
	// Ladder are the renditions encoded besides the source (H.264 at
	// each rung's height and bitrate, keyframes aligned with the
	// source's segments); a rung as tall as the source or taller is
	// skipped. Default 720p at 2500 kbps and 360p at 800 kbps; an empty
	// list ([]) encodes none.
	Ladder []LadderRung `yaml:"ladder"`
	// Record lists stream-name patterns (path.Match: "live/*") whose
	// streams are recorded into a title from the moment they are
	// published until they end; the node does the wiring. Default none.
	Record []string `yaml:"record"`
	// RecordGrace is how long a recorded stream may be gone before its
	// recording ends: a publisher that comes back within it with the same
	// tracks continues the same title. Default 10s; negative: none.
	RecordGrace time.Duration `yaml:"record_grace"`

	// The chunk cache of a node in a cluster (cluster_chunks.go): chunks
	// of other nodes' titles fetched for this node's viewers.
	//
	// CacheDir is its folder. Default "<data>/vod/cache".
	CacheDir string `yaml:"cache_dir"`
	// CacheSize bounds its bytes on disk. Default 10 GiB.
	CacheSize int64 `yaml:"cache_size"`
	// Replicas is how many nodes hold every chunk of a ready title: its
	// origin and the Replicas-1 next rendezvous owners of each chunk,
	// which pin it (never evicted), so that no title depends on one
	// machine. Default 2; 1 pins nothing.
	Replicas int `yaml:"replicas"`
	// Parent is the HTTP base URL of another node of the cluster (e.g.
	// http://10.0.0.2:8080) through which this node fetches every chunk it
	// does not hold: signed like any peer fetch, asking the parent to fill
	// (it reads the chunk's pinned owners, then its origin, and keeps it in
	// its own cache), before this node's usual sources, which remain the
	// fall-back. A tier of edges behind a regional node. Default empty.
	Parent string `yaml:"parent"`
	// PrefetchSegments is how many segments of a rendition the node
	// fetches ahead of a viewer that asks for one it does not hold.
	// Default 3; negative: none.
	PrefetchSegments int `yaml:"prefetch_segments"`
	// AllowNetworks lists the viewer networks (CIDRs) whose requests may
	// fill the cache from other nodes; others get only what the node
	// already holds. Default empty: every viewer.
	AllowNetworks []string `yaml:"allow_networks"`

	// Origin is where the titles packaged here are kept for the cluster:
	// "dir" (the default: this node's data dir) or "s3://bucket/prefix",
	// an S3-compatible bucket (S3 below) that every ready title's chunks
	// are written to and that a chunk no node holds is fetched from.
	Origin string `yaml:"origin"`
	// S3 is the bucket's endpoint and credentials, for an s3:// Origin.
	S3 S3Config `yaml:"s3"`

	// Popularity-aware fill (fill.go): between viewers' requests, a node
	// fills its cache with the first minutes of the other nodes' titles
	// most likely to be asked for here.
	//
	// FillMbps bounds the fill's fetches, in Mbit/s over any span (plus
	// one second's burst). Default 20; negative: no fill (0 takes the
	// default, as every zero field does).
	FillMbps float64 `yaml:"fill_mbps"`
	// FillInterval is how often the fill is planned, and how often a
	// title's changed view count is announced to the cluster at most.
	// Default 30s.
	FillInterval time.Duration `yaml:"fill_interval"`
	// FillPrefix is how much of each title's start the fill holds.
	// Default 2m.
	FillPrefix time.Duration `yaml:"fill_prefix"`
	// FillCacheShare is the fraction of cache_size the fill may use, so
	// that viewer-driven chunks keep the rest. Default 0.5.
	FillCacheShare float64 `yaml:"fill_cache_share"`
}

// DefaultConfig returns the VoD defaults.
func DefaultConfig() Config {
	return Config{SegmentDuration: 4 * time.Second, MaxJobs: 1, MaxUpload: 16 << 30, MemoryCache: 256 << 20, Nice: 10,
		Ladder: DefaultLadder(), RecordGrace: 10 * time.Second,
		CacheSize: DefaultCacheBytes, Replicas: 2, PrefetchSegments: 3, Origin: "dir", S3: DefaultS3Config(),
		FillMbps: 20, FillInterval: 30 * time.Second, FillPrefix: 2 * time.Minute, FillCacheShare: 0.5}
}

// Validate names a bad field by its YAML key.
func (c Config) Validate() error {
	switch {
	case c.SegmentDuration < time.Second || c.SegmentDuration > time.Minute:
		return fmt.Errorf("segment_duration: %v is outside 1s … 1m", c.SegmentDuration)
	case c.MaxJobs < 1:
		return errors.New("max_jobs: must be at least 1")
	case c.MaxUpload < 1:
		return errors.New("max_upload: must be positive")
	case c.Parent != "" && !validParentURL(c.Parent):
		return fmt.Errorf("parent: %q is not an http(s)://host[:port] URL", c.Parent)
	case c.MemoryCache < 0:
		return errors.New("memory_cache: must not be negative")
	case c.Nice < 0 || c.Nice > 19:
		return fmt.Errorf("nice: %d is outside 0 … 19", c.Nice)
	case c.CacheSize < 1<<20:
		return fmt.Errorf("cache_size: %d must be at least 1 MiB", c.CacheSize)
	case c.Replicas < 1:
		return fmt.Errorf("replicas: %d must be at least 1", c.Replicas)
	case c.FillInterval < 100*time.Millisecond || c.FillInterval > time.Hour:
		return fmt.Errorf("fill_interval: %v is outside 100ms … 1h", c.FillInterval)
	case c.FillPrefix <= 0:
		return fmt.Errorf("fill_prefix: %v must be positive", c.FillPrefix)
	case c.FillCacheShare <= 0 || c.FillCacheShare > 1:
		return fmt.Errorf("fill_cache_share: %v is outside (0, 1]", c.FillCacheShare)
	}
	if _, err := parseNetworks(c.AllowNetworks); err != nil {
		return fmt.Errorf("allow_networks: %w", err)
	}
	bucket, prefix, err := ParseOrigin(c.Origin)
	if err != nil {
		return err
	}
	if bucket != "" {
		s3 := c.S3
		s3.Bucket, s3.Prefix = bucket, prefix
		if err := s3.Validate(); err != nil {
			return err
		}
	}
	return validateLadder(c.Ladder)
}

// Errors the HTTP layer maps to status codes.
var (
	ErrTooLarge  = errors.New("upload larger than vod.max_upload")
	ErrEmpty     = errors.New("empty upload")
	ErrBadTitle  = errors.New("bad title")
	ErrNotReady  = errors.New("title is not ready")
	errUnknownID = errors.New("unknown id")
)

// Service owns a node's titles: the uploads, the packaging jobs, the chunk
// store and the catalog, all under one folder.
type Service struct {
	// OnTitleChange, OnTitleRemoved and FetchManifest connect the service
	// to the cluster (cluster.go); the node sets them before Start, or
	// leaves them nil on a node alone.
	//
	// OnTitleChange is given the catalog entry of a local title after it
	// was created, advanced by 10 % or more, made ready or failed, and for
	// every local title at Start (a restarted origin announces again). It
	// is called from one goroutine of the service, in order per title.
	OnTitleChange func(TitleEntry)
	// OnTitleRemoved is told the id of a title removed here (Delete), local
	// or not, so that it is removed everywhere.
	OnTitleRemoved func(id string)
	// FetchManifest fetches the manifest chunk d of a title from the
	// cluster (origin is the node that packaged it). The bytes are
	// verified against d before they are used.
	FetchManifest func(ctx context.Context, d Digest, origin string) ([]byte, error)
	// Peers, when set before Start, makes the node a chunk cache of the
	// cluster (cluster_chunks.go): the alive members it fetches chunks
	// from. Secret is the cluster secret that signs those requests.
	Peers  Peers
	Secret string
	// PeerTLS verifies peers that serve HTTPS (overlay.peer_ca); nil: the
	// system pool.
	PeerTLS *tls.Config

	cfg Config
	dir string
	log *slog.Logger

	store *ChunkStore
	cat   *Catalog

	ctx    context.Context
	cancel context.CancelFunc
	jobs   chan string
	wg     sync.WaitGroup

	mu      sync.Mutex
	running map[string]context.CancelFunc // title id → its packaging job
	putting map[*recordingPutter]bool     // the chunks running jobs stored, not yet in the catalog
	views   *viewCounter
	started bool
	// recordings are the live recordings running (record.go).
	recordings map[string]*Recording
	// cl is the cluster bookkeeping (cluster.go).
	cl cluster
	// fl is the fill planner's and the views' bookkeeping (fill.go).
	fl filler

	// In a cluster (cluster_chunks.go): the cache of other nodes' chunks,
	// the fetcher that fills it, the viewer networks that may fill it, the
	// titles of recently asked chunks, and the pinner's wake-up.
	cache     *DiskCache
	fetch     *Fetcher
	allow     []netip.Prefix
	manifests *manifestCache
	pinWake   chan struct{}
	// repairing: chunks of local titles found corrupt, being fetched
	// again from the cluster (repairOwn).
	repairMu  sync.Mutex
	repairing map[Digest]bool

	// origin is the S3 origin store (origin_sync.go), nil for "dir";
	// originQ the local titles whose chunks are to be written to it.
	origin  OriginStore
	originQ chan string
}

// NewService builds the service for the folder dir (the node's
// <data>/vod); it does no I/O.
func NewService(cfg Config, dir string, log *slog.Logger) (*Service, error) {
	defaults.Fill(&cfg, DefaultConfig())
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{cfg: cfg, dir: dir, log: log.With("component", "vod"), ctx: ctx, cancel: cancel,
		jobs: make(chan string, 1024), running: map[string]context.CancelFunc{}, putting: map[*recordingPutter]bool{}, views: newViewCounter(),
		cl: newCluster(), fl: newFiller()}, nil
}

func (s *Service) uploads() string { return filepath.Join(s.dir, "uploads") }

func (s *Service) upload(id string) string { return filepath.Join(s.uploads(), id) }

// Start opens the store and the catalog, takes up the titles a previous
// run left processing, and starts the packaging workers.
func (s *Service) Start() (err error) {
	if err := os.MkdirAll(s.uploads(), 0o755); err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	// Partial uploads of a previous run have no catalog entry: nothing
	// refers to them.
	if parts, _ := filepath.Glob(filepath.Join(s.uploads(), "*.part")); len(parts) > 0 {
		for _, p := range parts {
			os.Remove(p)
		}
	}
	if s.store, err = NewChunkStore(filepath.Join(s.dir, "chunks"), s.cfg.MemoryCache, s.log); err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	if s.cat, err = OpenCatalog(filepath.Join(s.dir, "catalog.db"), s.log); err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	s.store.OnCorrupt = s.markDamaged
	if err := s.startCluster(); err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	if err := s.startOrigin(); err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	if err := s.startChunks(); err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	unfinished, err := s.cat.Unfinished()
	if err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	for _, t := range unfinished {
		if s.finishRecording(t) {
			continue
		}
		if _, err := os.Stat(s.upload(t.ID)); err != nil {
			s.cat.SetFailed(t.ID, "the node stopped while packaging and the upload is gone")
			continue
		}
		s.log.Info("packaging again a title left unfinished", "id", t.ID)
		s.jobs <- t.ID
	}
	for range s.cfg.MaxJobs {
		s.wg.Add(1)
		go s.worker()
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	return nil
}

// Close stops the workers (a title being packaged stays processing and is
// taken up again at the next Start) and closes the catalog.
func (s *Service) Close() error {
	s.cancel()
	s.wg.Wait()
	errs := s.closeChunks()
	if s.cat != nil {
		errs = append(errs, s.cat.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}

// markDamaged fails every title that references a chunk found corrupt on
// disk: on one node the bytes are gone, and a viewer would stall at that
// chunk. The title keeps its manifest, so rm still drops its chunks.
func (s *Service) markDamaged(d Digest) {
	ids, err := s.cat.TitlesWithChunk(d)
	if err != nil {
		s.log.Error("titles of a corrupt chunk unknown", "digest", d.String(), "err", err)
		return
	}
	for _, id := range ids {
		if s.replicaDamaged(id, d) {
			continue
		}
		if s.repairOwn(id, d) {
			continue
		}
		s.log.Error("title damaged: one of its chunks no longer matches its digest", "id", id, "digest", d.String())
		if err := s.cat.SetFailed(id, "damaged: chunk "+d.String()+" no longer matches its digest on disk"); err != nil {
			s.log.Error("damaged title not marked", "id", id, "err", err)
		}
	}
}

// Store is the chunk store (nil before Start).
func (s *Service) Store() *ChunkStore { return s.store }

func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// CheckTitle refuses a title a catalog page could not show.
func CheckTitle(title, description string) error {
	switch {
	case strings.TrimSpace(title) == "":
		return fmt.Errorf("%w: empty", ErrBadTitle)
	case len(title) > 200 || len(description) > 5000:
		return fmt.Errorf("%w: title over 200 or description over 5000 bytes", ErrBadTitle)
	case !utf8.ValidString(title) || !utf8.ValidString(description):
		return fmt.Errorf("%w: not UTF-8", ErrBadTitle)
	case strings.ContainsFunc(title, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: control characters", ErrBadTitle)
	}
	return nil
}

// Add stores an upload and queues it for packaging. body is streamed to
// a temporary file, never held in memory; it is probed before Add returns,
// so a file that is not media is refused at once (ErrNotMedia) and leaves
// nothing behind.
func (s *Service) Add(title, description string, body io.Reader) (Title, error) {
	if err := CheckTitle(title, description); err != nil {
		return Title{}, err
	}
	id := newID()
	part := s.upload(id) + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return Title{}, fmt.Errorf("upload: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
			os.Remove(part)
		}
	}()
	n, err := io.Copy(f, io.LimitReader(body, s.cfg.MaxUpload+1))
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return Title{}, fmt.Errorf("upload: no space left on the node: %w", err)
		}
		return Title{}, fmt.Errorf("upload: %w", err)
	}
	switch {
	case n > s.cfg.MaxUpload:
		return Title{}, fmt.Errorf("%w (%d bytes)", ErrTooLarge, s.cfg.MaxUpload)
	case n == 0:
		return Title{}, ErrEmpty
	}
	if err := f.Sync(); err != nil {
		return Title{}, fmt.Errorf("upload: %w", err)
	}
	if err := f.Close(); err != nil {
		return Title{}, fmt.Errorf("upload: %w", err)
	}
	if _, err := Probe(part); err != nil {
		return Title{}, fmt.Errorf("upload: %w", err)
	}
	if err := os.Rename(part, s.upload(id)); err != nil {
		return Title{}, fmt.Errorf("upload: %w", err)
	}
	keep = true
	t := Title{ID: id, Title: title, Description: description, State: StateProcessing, Created: time.Now().UTC()}
	if err := s.cat.Create(t); err != nil {
		os.Remove(s.upload(id))
		return Title{}, err
	}
	s.log.Info("title added", "id", id, "title", title, "bytes", n)
	select {
	case s.jobs <- id:
	default:
		s.cat.SetFailed(id, "too many titles waiting to be packaged")
		os.Remove(s.upload(id))
		t.State, t.Error = StateFailed, "too many titles waiting to be packaged"
	}
	return t, nil
}

// Get returns a title with its manifest when ready.
func (s *Service) Get(id string) (Title, error) {
	t, err := s.cat.Get(id)
	return s.present(t), err
}

// List returns every title, or those matching query (full text).
func (s *Service) List(query string) ([]Title, error) {
	ts, err := s.cat.List(query)
	for i := range ts {
		ts[i] = s.present(ts[i])
	}
	return ts, err
}

// Delete removes a title: a job packaging it stops, its chunks that no
// other title shares are dropped. A title of another node is removed here
// and, through OnTitleRemoved, everywhere; its id is remembered so that
// it never comes back.
func (s *Service) Delete(id string) error {
	t, err := s.remove(id, false)
	if err != nil {
		return err
	}
	if s.OnTitleRemoved != nil {
		s.OnTitleRemoved(id)
	}
	s.log.Info("title removed", "id", id, "title", t.Title, "origin", t.Origin)
	return nil
}

// remove deletes a title from the catalog and remembers the removal (see
// Catalog.Remove); a title packaged here also loses its job, its upload
// and the chunks no other title shares.
func (s *Service) remove(id string, recordMissing bool) (Title, error) {
	s.mu.Lock()
	if cancel, ok := s.running[id]; ok {
		cancel()
	}
	s.mu.Unlock()
	t, err := s.cat.Remove(id, recordMissing)
	if err == nil || recordMissing {
		s.forgetTitle(id)
	}
	if err != nil {
		return t, err
	}
	if t.Origin == "" {
		os.Remove(s.upload(id))
	}
	if t.Manifest != nil {
		// Ours, or another node's pinned here as a replica or cached.
		ds := manifestDigests(t.Manifest, t.Poster)
		if t.ManifestDigest != (Digest{}) {
			ds = append(ds, t.ManifestDigest)
		}
		s.dropChunks(ds)
		s.dropCached(ds)
	}
	if s.manifests != nil {
		s.manifests.drop(id)
	}
	return t, nil
}

// dropChunks removes the chunks no remaining title references and no
// running job has just stored (a chunk two titles share may be the one a
// job is packaging right now, before the catalog knows it).
func (s *Service) dropChunks(ds []Digest) {
	s.mu.Lock()
	inUse := map[Digest]bool{}
	for p := range s.putting {
		p.mu.Lock()
		for _, d := range p.put {
			inUse[d] = true
		}
		p.mu.Unlock()
	}
	s.mu.Unlock()
	ref, err := s.cat.Referenced()
	if err != nil {
		s.log.Warn("chunks of a removed title kept: catalog unreadable", "err", err)
		return
	}
	for _, d := range ds {
		if ref[d] == 0 && !inUse[d] {
			if err := s.store.Remove(d); err != nil && !errors.Is(err, ErrChunkNotFound) {
				s.log.Warn("chunk not removed", "digest", d.String(), "err", err)
			}
		}
	}
}

// worker packages queued titles one at a time, at a lower CPU priority
// than the node's live work.
func (s *Service) worker() {
	defer s.wg.Done()
	// FFmpeg's own threads inherit the nice value of the thread that
	// starts them: this one, locked for the worker's life.
	runtime.LockOSThread()
	if s.cfg.Nice > 0 {
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), s.cfg.Nice); err != nil {
			s.log.Debug("packaging runs at normal priority", "err", err)
		}
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case id := <-s.jobs:
			s.packageTitle(id)
		}
	}
}

// recordingPutter remembers the chunks a job stored, to drop them again
// when the job fails.
type recordingPutter struct {
	out ChunkPutter
	mu  sync.Mutex
	put []Digest
}

func (p *recordingPutter) Put(r io.Reader) (Chunk, error) {
	c, err := p.out.Put(r)
	if err == nil {
		p.mu.Lock()
		p.put = append(p.put, c.Digest)
		p.mu.Unlock()
	}
	return c, err
}

func (s *Service) packageTitle(id string) {
	ctx, cancel := context.WithCancel(s.ctx)
	rec := &recordingPutter{out: s.store}
	s.mu.Lock()
	s.running[id] = cancel
	s.putting[rec] = true
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		delete(s.running, id)
		delete(s.putting, rec)
		s.mu.Unlock()
	}
	defer func() {
		cancel()
		done()
	}()
	src := s.upload(id)
	log := s.log.With("id", id)
	start := time.Now()
	last := -1
	progress := func(pct int) {
		if pct != last {
			last = pct
			s.cat.SetProgress(id, pct)
		}
	}
	pc := DefaultPackageConfig()
	pc.SegmentDuration = s.cfg.SegmentDuration
	pc.Ladder = s.cfg.Ladder
	m, err := Package(ctx, src, pc, rec, progress, log)
	var poster Digest
	if err == nil {
		if jpg, perr := Poster(src, m.Duration/10); perr != nil {
			log.Info("no poster for the title", "err", perr)
		} else if c, perr := rec.Put(strings.NewReader(string(jpg))); perr == nil {
			poster = c.Digest
		}
		err = s.cat.SetReady(id, m, poster)
	}
	switch {
	case err == nil:
		os.Remove(src)
		log.Info("title ready", "renditions", len(m.Renditions), "duration", m.Duration, "bytes", m.Bytes(), "took", time.Since(start).Round(time.Millisecond))
	case s.ctx.Err() != nil:
		// The node stops: the title stays processing and is packaged
		// again at the next start. Its chunks may serve that run.
		log.Info("packaging interrupted by shutdown")
	case ctx.Err() != nil:
		// Deleted while packaging.
		done()
		s.dropChunks(rec.put)
	default:
		reason := err.Error()
		if errors.Is(err, syscall.ENOSPC) {
			reason = "no space left on the node: " + reason
		}
		log.Warn("packaging failed", "err", err)
		s.cat.SetFailed(id, reason)
		os.Remove(src)
		done()
		s.dropChunks(rec.put)
	}
}

// validParentURL reports whether u is an http(s) URL with a host and no
// query: the base of a node's HTTP server.
func validParentURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != "" && p.RawQuery == "" && p.Fragment == ""
}
