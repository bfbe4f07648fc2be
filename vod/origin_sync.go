package vod

import (
	"context"
	"errors"
	"time"
)

// With vod.origin an S3 bucket, every ready title packaged here is written
// there chunk by chunk (a chunk the bucket has already is skipped), and
// the cluster's fetchers read a chunk no node holds from the bucket
// (FetcherConfig.Origin). The node keeps its own copies too: they are
// what it serves its viewers and peers from first.

// originRetry is how long a title whose upload failed waits before the
// next attempt.
const originRetry = 30 * time.Second

// startOrigin opens an S3 origin and queues the local ready titles (an
// upload a previous run did not finish is done now).
func (s *Service) startOrigin() error {
	bucket, prefix, _ := ParseOrigin(s.cfg.Origin) // checked by Validate
	if bucket == "" {
		return nil
	}
	cfg := s.cfg.S3
	cfg.Bucket, cfg.Prefix = bucket, prefix
	o, err := NewS3Origin(cfg, s.log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	if err := o.CheckBucket(ctx); err != nil {
		// The node serves on; uploads retry until the bucket answers.
		s.log.Error("vod origin bucket unreachable: uploads wait for it", "origin", o.Name(), "err", err)
	}
	cancel()
	s.origin, s.originQ = o, make(chan string, 4096)
	ts, err := s.cat.List("")
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.Origin == "" && t.State == StateReady {
			s.queueOrigin(t.ID)
		}
	}
	s.wg.Add(1)
	go s.originUploader()
	return nil
}

// queueOrigin asks for title id to be written to the origin store.
func (s *Service) queueOrigin(id string) {
	if s.originQ == nil {
		return
	}
	select {
	case s.originQ <- id:
	default:
		s.log.Warn("vod origin upload queue full: the title is written at the next start", "id", id)
	}
}

func (s *Service) originUploader() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case id := <-s.originQ:
			if err := s.uploadTitle(id); err != nil && s.ctx.Err() == nil {
				s.log.Warn("title not written to the origin store: trying again", "id", id, "origin", s.origin.Name(),
					"in", originRetry, "err", err)
				time.AfterFunc(originRetry, func() {
					if s.ctx.Err() == nil {
						s.queueOrigin(id)
					}
				})
			}
		}
	}
}

// uploadTitle writes a ready local title's chunks (and its manifest and
// poster) to the origin store.
func (s *Service) uploadTitle(id string) error {
	t, err := s.cat.Get(id)
	if errors.Is(err, ErrTitleNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if t.Origin != "" || t.State != StateReady || t.Manifest == nil {
		return nil
	}
	ds := manifestDigests(t.Manifest, t.Poster)
	if t.ManifestDigest != (Digest{}) {
		ds = append(ds, t.ManifestDigest)
	}
	n := 0
	for _, d := range ds {
		if has, err := s.origin.Has(s.ctx, d); err != nil {
			return err
		} else if has {
			continue
		}
		rs, size, err := s.store.Open(d)
		if err != nil {
			return err
		}
		err = s.origin.Put(s.ctx, d, rs, size)
		rs.Close()
		if err != nil {
			return err
		}
		n++
	}
	if n > 0 {
		s.log.Info("title written to the origin store", "id", id, "origin", s.origin.Name(), "chunks", n)
	}
	return nil
}
