package vod

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// Digest is the SHA-256 of a chunk's bytes: its address.
type Digest [sha256.Size]byte

// String is the digest in lower-case hex, as it appears in chunk URLs
// (/vod/chunks/<hex>) and file names.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ReprDigest is the RFC 9530 Repr-Digest header value: "sha-256=:<base64>:".
func (d Digest) ReprDigest() string {
	return "sha-256=:" + base64.StdEncoding.EncodeToString(d[:]) + ":"
}

// ParseDigest reads the hex form.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*sha256.Size {
		// Not quoted: the text comes from URLs and peers, and a hostile
		// one must not become a megabyte of log line.
		return d, fmt.Errorf("digest of %d bytes: want %d hex characters", len(s), 2*sha256.Size)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// MarshalText and UnmarshalText give the hex form in JSON.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText: see MarshalText.
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Chunk is one stored piece of a rendition: its init section or one media
// segment.
type Chunk struct {
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"`
	// Start and Duration are the segment's media time (zero for an init
	// section).
	Start    time.Duration `json:"start"`
	Duration time.Duration `json:"duration"`
	// Discontinuity marks a segment that does not continue the one before
	// it in encoding (a recorded publisher that dropped and came back):
	// its playlist line follows an EXT-X-DISCONTINUITY. Absent is false.
	Discontinuity bool `json:"discontinuity,omitempty"`
}

// Rendition is one rung of a title's ladder: an fMP4 HLS media playlist.
type Rendition struct {
	// Name labels the rung ("source", "360p"); it names the playlist
	// (/vod/<id>/<name>.m3u8).
	Name   string `json:"name"`
	Width  int    `json:"width,omitempty"`
	Height int    `json:"height,omitempty"`
	// Kbps is the rung's average bitrate; PeakKbps its highest segment's
	// (HLS BANDWIDTH).
	Kbps     int `json:"kbps"`
	PeakKbps int `json:"peak_kbps"`
	// Codecs is the RFC 6381 list for HLS CODECS ("avc1.64001f,mp4a.40.2").
	Codecs string `json:"codecs"`
	// Init is the fMP4 initialisation section (EXT-X-MAP).
	Init Chunk `json:"init"`
	// Segments are the media segments in order; each starts at a keyframe.
	Segments []Chunk `json:"segments"`
}

// Manifest is what a packaged title is made of. Every chunk it names is in
// the ChunkStore before the manifest is stored.
type Manifest struct {
	// TargetDuration is the longest segment, rounded up (EXT-X-TARGETDURATION).
	TargetDuration time.Duration `json:"target_duration"`
	Duration       time.Duration `json:"duration"`
	Renditions     []Rendition   `json:"renditions"`
}

// Bytes is the stored size of every chunk of the manifest.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, r := range m.Renditions {
		n += r.Init.Size
		for _, s := range r.Segments {
			n += s.Size
		}
	}
	return n
}

// State is where a title stands.
type State string

const (
	StateProcessing State = "processing"
	StateReady      State = "ready"
	StateFailed     State = "failed"
)

// Title is a catalog entry.
type Title struct {
	ID          string `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description"`
	State       State  `json:"state"`
	// Progress is the packaging progress in percent while processing.
	Progress int `json:"progress"`
	// Error says why the title failed.
	Error    string        `json:"error,omitempty"`
	Created  time.Time     `json:"created"`
	Duration time.Duration `json:"duration"`
	Bytes    int64         `json:"bytes"`
	// Poster is the digest of a JPEG frame grabbed from the title (stored
	// in the ChunkStore like any chunk); zero when there is none.
	Poster Digest `json:"-"`
	Views  int64  `json:"views"`
	// Manifest is nil until the title is ready.
	Manifest *Manifest `json:"-"`
	// Origin is the node the title was packaged on, as the cluster's
	// gossip names it; empty for a title packaged here (cluster.go).
	Origin string `json:"origin,omitempty"`
	// ManifestDigest is the digest of the manifest's JSON stored as a
	// chunk, by which other nodes fetch and verify it; zero until the
	// title is ready and the chunk stored.
	ManifestDigest Digest `json:"-"`
}

// ChunkPutter stores a chunk under its digest (ChunkStore does); Put
// returns the chunk's digest and size with zero media time, which the
// caller sets.
type ChunkPutter interface {
	Put(r io.Reader) (Chunk, error)
}
