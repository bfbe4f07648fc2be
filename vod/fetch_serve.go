package vod

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// serveFlight answers a request from a flight: a whole GET streams the
// bytes as they arrive; Range and HEAD wait for the verified chunk.
func (f *Fetcher) serveFlight(w http.ResponseWriter, r *http.Request, fl *flight, contentType string) {
	ctx := r.Context()
	stop := context.AfterFunc(ctx, func() {
		fl.mu.Lock()
		fl.cond.Broadcast()
		fl.mu.Unlock()
	})
	defer stop()

	if r.Method == http.MethodHead || r.Header.Get("Range") != "" {
		fl.mu.Lock()
		for !fl.verified && fl.err == nil && ctx.Err() == nil {
			fl.cond.Wait()
		}
		b, kind, verified, err := fl.buf, fl.kind, fl.verified, fl.err
		fl.mu.Unlock()
		if !verified {
			if ctx.Err() == nil {
				f.failResponse(w, fl.d, err)
			}
			return
		}
		setChunkHeaders(w.Header(), fl.d, contentType)
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(b))
		f.count(func() { f.served[kind] += uint64(cw.n) })
		return
	}

	rc := http.NewResponseController(w)
	var sent int
	wroteHeader := false
	kind := ""
	defer func() {
		if kind != "" {
			f.count(func() { f.served[kind] += uint64(sent) })
		}
	}()
	fl.mu.Lock()
	gen := fl.gen
	fl.mu.Unlock()
	for {
		fl.mu.Lock()
		for fl.gen == gen && fl.avail() <= sent && !fl.verified && fl.err == nil && ctx.Err() == nil {
			fl.cond.Wait()
		}
		if fl.gen != gen {
			if sent > 0 {
				fl.mu.Unlock()
				// See ServeChunk: the bytes sent were of a corrupt copy.
				f.log.Warn("viewer cut off: the chunk it was sent was corrupt", "digest", fl.d.String(), "sent", sent)
				panic(http.ErrAbortHandler)
			}
			gen = fl.gen
			fl.mu.Unlock()
			continue
		}
		piece := fl.buf[sent:fl.avail()]
		size, verified, ferr := fl.size, fl.verified, fl.err
		kind = fl.kind
		fl.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if len(piece) == 0 && !verified {
			// The flight failed (ferr != nil).
			if !wroteHeader {
				f.failResponse(w, fl.d, ferr)
				return
			}
			panic(http.ErrAbortHandler)
		}
		if !wroteHeader {
			setChunkHeaders(w.Header(), fl.d, contentType)
			if size >= 0 {
				w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			}
			w.WriteHeader(http.StatusOK)
			wroteHeader = true
		}
		if len(piece) > 0 {
			m, err := w.Write(piece)
			sent += m
			if err != nil {
				return // the viewer left; the flight goes on
			}
			rc.Flush()
		}
		if verified {
			return
		}
	}
}

// failResponse answers a request whose flight failed before any byte.
func (f *Fetcher) failResponse(w http.ResponseWriter, d Digest, err error) {
	if errors.Is(err, errClosed) || f.ctx.Err() != nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if errors.Is(err, ErrChunkNotFound) {
		http.Error(w, "chunk not found", http.StatusNotFound)
		return
	}
	http.Error(w, "chunk unavailable: no source could send it", http.StatusBadGateway)
}
