package vod

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// flight is the one upstream fetch of a chunk on this node, shared by
// every request for it. Its bytes grow in buf; waiters stream
// buf[sent:avail()] and sleep on cond between arrivals.
type flight struct {
	d       Digest
	origin  string
	peerHop bool // started by a peer's fill: reads the pinned owners and the origin only
	// keep: the chunk goes through the cache's window when it arrives
	// (this node is one of its filling owners, or a peer asked it to
	// fill — an owner as the peer sees it, or its vod.parent — or the
	// fetch is a prefetch); otherwise it is kept only if DiskCache.Admits says so: a
	// node does not hold a second copy of what the owners hold unless it
	// is asked for often here, so the caches of a cluster hold more
	// distinct chunks between them.
	keep bool
	// joinable: the flight asks to fill only owners ranked before this
	// node, so a peer's fill may wait on it without a circle.
	joinable bool

	mu   sync.Mutex
	cond sync.Cond
	// buf holds the bytes of the current copy. It only grows while gen
	// stays the same, and a reset allocates a new one, so a waiter may
	// read a slice of it outside the lock.
	buf  []byte
	size int64 // -1 until a source says
	// gen counts resets: a copy found corrupt is dropped and refetched.
	gen      int
	verified bool  // buf is the whole chunk and hashes to d
	err      error // the flight failed: no source gave the chunk
	// kind is where the current bytes come from ("peer", "origin",
	// "store"); atOrigin is set while the origin node or the origin store
	// is being read, which is when a peer's fill may join a viewer's
	// flight (see flightFor).
	kind     string
	atOrigin bool
}

// avail is how much of buf a waiter may have: all but the last byte
// until the whole chunk is verified.
func (fl *flight) avail() int {
	if fl.verified {
		return len(fl.buf)
	}
	return max(len(fl.buf)-1, 0)
}

// flightFor joins the flight for d or starts one. A peer's fill (peerHop)
// joins at once a viewer's flight that asks to fill only owners ranked
// before this node (a filling owner's own flight), and any other only
// while it reads the origin node or store (or is done):
// such a flight may be asking the very owner whose fill this is, and
// joining would make the two wait on each other until the stall timeout. It is refused with errBusy instead, and the
// asker goes on to its next source.
func (f *Fetcher) flightFor(d Digest, origin string, peerHop, prefetch bool) (*flight, error) {
	f.mu.Lock()
	fl := f.flights[d]
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if fl != nil {
		return fl.join(peerHop)
	}
	// Sources are listed outside the lock: Peers is the node's code.
	srcs, rank := f.sourcesAndRank(d, origin, peerHop)
	if len(srcs) == 0 {
		return nil, fmt.Errorf("chunk %s (origin %q): %w", d, origin, errNoSource)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errClosed
	}
	if other := f.flights[d]; other != nil {
		return other.join(peerHop) // started meanwhile
	}
	fl = &flight{d: d, origin: origin, peerHop: peerHop, size: -1, keep: prefetch || peerHop || rank >= 0,
		joinable: !slices.ContainsFunc(srcs, func(s source) bool { return s.fill && !s.below })}
	fl.cond.L = &fl.mu
	f.flights[d] = fl
	f.wg.Add(1)
	go f.runFlight(fl, srcs)
	return fl, nil
}

// join returns fl for a new request, unless the request is a peer's fill
// that must not wait on this flight (see flightFor).
func (fl *flight) join(peerHop bool) (*flight, error) {
	if !peerHop || fl.peerHop || fl.joinable {
		return fl, nil
	}
	fl.mu.Lock()
	ok := fl.atOrigin || fl.verified
	fl.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("chunk %s: %w", fl.d, errBusy)
	}
	return fl, nil
}

// runFlight fetches the chunk, puts it into the cache and retires the
// flight. Until it is retired, new requests join it (and read its
// verified bytes), so there is no moment where the chunk is neither in
// the cache nor in a flight.
func (f *Fetcher) runFlight(fl *flight, srcs []source) {
	defer f.wg.Done()
	err := f.fill(fl, srcs)
	if err != nil {
		// Retired first: a request arriving now starts a new flight
		// rather than joining this failed one.
		f.retire(fl)
		fl.mu.Lock()
		fl.err = err
		fl.cond.Broadcast()
		fl.mu.Unlock()
		switch {
		case f.ctx.Err() != nil:
		case errors.Is(err, ErrChunkNotFound):
			f.log.Info("chunk held by no source", "digest", fl.d.String(), "origin", fl.origin)
		default:
			f.log.Warn("chunk fetch failed", "digest", fl.d.String(), "origin", fl.origin, "err", err)
		}
		return
	}
	fl.mu.Lock()
	b := fl.buf
	fl.mu.Unlock()
	// A chunk not kept is held by its owners, and not asked for here often
	// enough to displace what the cache holds (Admits counted the access:
	// the next one may win).
	keep := fl.keep
	if a, ok := f.cache.(admitter); ok && !keep {
		keep = a.Admits(fl.d, int64(len(b)))
	} else if !ok {
		keep = true
	}
	if keep {
		if c, perr := f.cache.Put(bytes.NewReader(b)); perr != nil {
			// The viewers have their bytes; the next miss fetches again.
			f.log.Error("fetched chunk not cached", "digest", fl.d.String(), "err", perr)
		} else if c.Digest != fl.d {
			f.log.Error("cache stored fetched chunk under another digest", "digest", fl.d.String(), "stored", c.Digest.String())
		}
	}
	f.retire(fl)
}

// retire removes fl from the flights, so that the next miss starts anew.
func (f *Fetcher) retire(fl *flight) {
	f.mu.Lock()
	if f.flights[fl.d] == fl {
		delete(f.flights, fl.d)
	}
	f.mu.Unlock()
}

var errStalled = errors.New("stalled")

// fill reads the chunk from srcs in order until one copy hashes to d. A
// source that fails mid-chunk is followed by the next one from the byte
// where it stopped; a whole copy that does not hash to d is charged to
// every source that contributed to it and dropped, and the next source
// sends the chunk again from the start.
func (f *Fetcher) fill(fl *flight, srcs []source) error {
	h := sha256.New()
	var contributors []string
	var errs []error
	for _, src := range srcs {
		if f.ctx.Err() != nil {
			return fmt.Errorf("chunk %s: %w", fl.d, errClosed)
		}
		n, err := f.attempt(fl, src, h)
		// The origin store's reader verifies its whole object, so bytes it
		// sent to the end are good: a copy that still does not hash to d
		// was spoilt by the peers before it, and only they are charged.
		if n > 0 && !slices.Contains(contributors, src.peer.Name) && !(src.store && err == nil) {
			contributors = append(contributors, src.peer.Name)
		}
		if err != nil && src.store && errors.Is(err, ErrChunkCorrupt) {
			// The origin store's reader found its own copy bad (it hashes
			// the whole object) and held back its last bytes: what it sent
			// is dropped, and only the store is charged.
			f.dropCopy(fl, []string{src.peer.Name})
			f.log.Error("chunk corrupt in the origin store: dropped, trying the next source", "digest", fl.d.String(),
				"store", src.peer.Name, "err", err)
			errs = append(errs, err)
			h.Reset()
			contributors = nil
			continue
		}
		if err != nil {
			fl.mu.Lock()
			whole := fl.size >= 0 && int64(len(fl.buf)) == fl.size
			fl.mu.Unlock()
			if !whole {
				lvl := slog.LevelInfo
				if errors.Is(err, errUpstreamNotFound) {
					lvl = slog.LevelDebug // a non-filling owner without it: normal
				}
				f.log.Log(context.Background(), lvl, "chunk source failed: next source", "digest", fl.d.String(), "peer", src.peer.Name, "bytes", n, "err", err)
				errs = append(errs, err)
				continue
			}
			// Every byte is in and only the end of the response failed:
			// verify what we have rather than ask for zero bytes.
		}
		var got Digest
		h.Sum(got[:0])
		if got == fl.d {
			fl.mu.Lock()
			fl.verified = true
			fl.cond.Broadcast()
			fl.mu.Unlock()
			return nil
		}
		size := f.dropCopy(fl, contributors)
		err = fmt.Errorf("chunk %s from %v: %d bytes hash to %s", fl.d, contributors, size, got)
		f.log.Error("fetched chunk corrupt: dropped, fetching it again from the next source", "digest", fl.d.String(),
			"peers", contributors, "bytes", size, "sha256", got.String())
		errs = append(errs, err)
		h.Reset()
		contributors = nil
	}
	if len(errs) > 0 && !slices.ContainsFunc(errs, func(err error) bool { return !errors.Is(err, errUpstreamNotFound) }) {
		// Every source answered 404: the chunk is nowhere to be had.
		return fmt.Errorf("chunk %s: no source holds it: %w", fl.d, ErrChunkNotFound)
	}
	return fmt.Errorf("chunk %s: every source failed: %w", fl.d, errors.Join(errs...))
}

// dropCopy discards the flight's bytes (a corrupt copy: viewers that
// were sent some are cut off, see serveFlight) and charges the sources
// that contributed them; it returns how many bytes were dropped.
func (f *Fetcher) dropCopy(fl *flight, contributors []string) int {
	fl.mu.Lock()
	size := len(fl.buf)
	fl.buf, fl.size, fl.verified = nil, -1, false
	fl.gen++
	fl.cond.Broadcast()
	fl.mu.Unlock()
	f.mu.Lock()
	for _, p := range contributors {
		f.integrity[p]++
		if f.cfg.Origin == nil || p != f.cfg.Origin.Name() {
			f.estimate(p).fail()
		}
	}
	f.mu.Unlock()
	return size
}

// errUpstreamNotFound is a source's 404.
var errUpstreamNotFound = errors.New("source does not hold the chunk")

// attempt reads the rest of the chunk from one source into fl.buf,
// hashing it into h, and returns how many bytes it added. From a node it
// asks for bytes=<received>- when some are already in, and then requires
// a 206 of the same representation (Repr-Digest or ETag naming d). The
// origin store is read from the chunk's start even then: its reader
// verifies the whole object, and the bytes already in are skipped here
// (they keep the stall timer fed). The source is abandoned when it sends
// nothing for cfg.StallTimeout. A nil error means the source sent the
// chunk to its end (which fill then verifies).
func (f *Fetcher) attempt(fl *flight, src source, h hash.Hash) (int64, error) {
	name := src.peer.Name
	fl.mu.Lock()
	received := int64(len(fl.buf))
	fl.kind = src.kind()
	fl.atOrigin = src.origin || src.store
	fl.mu.Unlock()

	ctx, cancel := context.WithCancelCause(f.ctx)
	defer cancel(nil)
	stall := time.AfterFunc(f.cfg.StallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	wrap := func(err error) error {
		if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
			err = fmt.Errorf("%w (%w)", c, err)
		}
		return fmt.Errorf("chunk %s from %s: %w", fl.d, name, err)
	}
	// Estimates are of peers (they rank the owners); the store is always
	// last and is not ranked.
	observe := func(ttfb time.Duration, n int64, body time.Duration, failed bool) {
		if !src.store {
			f.observe(name, ttfb, n, body, failed)
		}
	}
	observeFailure := func() {
		if !src.store {
			f.observeFailure(name)
		}
	}

	start := time.Now()
	f.count(func() { f.upstream[src.kind()]++ })
	var body io.ReadCloser
	var size, skip int64
	if src.store {
		rc, n, err := f.cfg.Origin.Open(ctx, fl.d, 0)
		if err != nil {
			if errors.Is(err, ErrChunkNotFound) {
				err = fmt.Errorf("%w: %w", errUpstreamNotFound, err)
			}
			return 0, wrap(err)
		}
		body, size, skip = rc, n, received
	} else {
		resp, err := f.request(ctx, fl, src, received)
		if err != nil {
			observeFailure()
			return 0, wrap(err)
		}
		size, err = checkUpstream(resp, fl.d, received)
		if err != nil {
			if resp.StatusCode != http.StatusNotFound {
				observeFailure()
			}
			if resp.StatusCode >= 300 {
				// Read a short error body to the end so that the connection
				// is kept for the next request.
				io.CopyN(io.Discard, resp.Body, 4<<10)
			}
			resp.Body.Close()
			return 0, wrap(err)
		}
		body = resp.Body
	}
	defer body.Close()
	ttfb := time.Since(start)

	fl.mu.Lock()
	switch {
	case fl.size >= 0 && size >= 0 && size != fl.size:
		fl.mu.Unlock()
		observeFailure()
		return 0, wrap(fmt.Errorf("size %d, earlier sources said %d", size, fl.size))
	case size > maxFetchBytes:
		fl.mu.Unlock()
		observeFailure()
		return 0, wrap(fmt.Errorf("size %d is over the %d bytes a chunk may have", size, maxFetchBytes))
	case size >= 0:
		fl.size = size
		if fl.buf == nil {
			fl.buf = make([]byte, 0, size)
		}
	}
	fl.mu.Unlock()

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	p := (*bp)[:64<<10]
	var n int64
	bodyStart := time.Now()
	for {
		m, rerr := body.Read(p)
		if m > 0 {
			stall.Reset(f.cfg.StallTimeout)
		}
		if skip > 0 && m > 0 {
			k := int(min(int64(m), skip))
			skip -= int64(k)
			copy(p, p[k:m])
			m -= k
		}
		if m > 0 {
			fl.mu.Lock()
			total := int64(len(fl.buf)) + int64(m)
			if (fl.size >= 0 && total > fl.size) || total > maxFetchBytes {
				fl.mu.Unlock()
				observeFailure()
				return n, wrap(fmt.Errorf("sent more than the %d bytes announced", fl.size))
			}
			h.Write(p[:m])
			fl.buf = append(fl.buf, p[:m]...)
			fl.cond.Broadcast()
			fl.mu.Unlock()
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			observe(ttfb, n, time.Since(bodyStart), true)
			return n, wrap(fmt.Errorf("after %d bytes: %w", received+n, rerr))
		}
	}
	fl.mu.Lock()
	got, want := int64(len(fl.buf)), fl.size
	fl.mu.Unlock()
	if want >= 0 && got != want {
		observe(ttfb, n, time.Since(bodyStart), true)
		return n, wrap(fmt.Errorf("closed after %d of %d bytes", got, want))
	}
	observe(ttfb, n, time.Since(bodyStart), false)
	return n, nil
}

// request asks a node for the chunk from byte received on.
func (f *Fetcher) request(ctx context.Context, fl *flight, src source, received int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.url(fl.d, fl.origin), nil)
	if err != nil {
		return nil, err
	}
	SignPeerRequest(req, f.cfg.Secret, f.peers.Self())
	if received > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(received, 10)+"-")
	}
	return f.client.Do(req)
}

// checkUpstream validates a source's answer and returns the chunk's whole
// size (-1 when the source does not say).
func checkUpstream(resp *http.Response, d Digest, received int64) (int64, error) {
	if rd := resp.Header.Get("Repr-Digest"); rd != "" && rd != d.ReprDigest() {
		return 0, fmt.Errorf("answer is another representation: Repr-Digest %s", rd)
	}
	if resp.StatusCode == http.StatusNotFound {
		return 0, errUpstreamNotFound
	}
	if received == 0 {
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %s", resp.Status)
		}
		return resp.ContentLength, nil
	}
	if resp.StatusCode != http.StatusPartialContent {
		return 0, fmt.Errorf("asked bytes %d- and got status %s, want 206", received, resp.Status)
	}
	if resp.Header.Get("Repr-Digest") == "" && !etagMatches(resp.Header.Get("ETag"), d) {
		return 0, errors.New("206 without a Repr-Digest or ETag naming the chunk")
	}
	// Content-Range: bytes <first>-<last>/<size>
	cr := resp.Header.Get("Content-Range")
	rng, total, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "/")
	first, _, ok2 := strings.Cut(rng, "-")
	size, err := strconv.ParseInt(total, 10, 64)
	if !ok || !ok2 || err != nil || first != strconv.FormatInt(received, 10) {
		return 0, fmt.Errorf("asked bytes %d- and got Content-Range %q", received, cr)
	}
	return size, nil
}
