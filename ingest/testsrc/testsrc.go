// Package testsrc publishes a test pattern to a live-streaming server, as a
// broadcaster would: FFmpeg's testsrc2 pattern (with the wall clock drawn
// on it) encoded with libx264 for low latency, and a 440 Hz tone encoded
// as AAC, pushed over RTSP (ANNOUNCE/RECORD) or SRT (MPEG-TS).
//
// Every video access unit carries Gradient's capture-time SEI
// (media.CaptureSEI) with the wall-clock time the frame was produced, so
// that any viewer can measure glass-to-glass latency. It backs
// `gradient publish --testsrc`.
//
// The encoding is what a live ingest expects: no B-frames, one closed GOP
// per second, SPS/PPS in band before every IDR, constant bitrate.
package testsrc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

// Config describes the test stream and where to push it; DefaultConfig
// gives the defaults.
type Config struct {
	// URL is where to publish:
	//   rtsp://host:port/live/cam1                 (RTSP ANNOUNCE/RECORD, interleaved TCP)
	//   srt://host:port?streamid=publish:live/cam1 (SRT caller, MPEG-TS)
	//   srt://host:port/live/cam1                  (same; the streamid is built from the path)
	// Other SRT query options (latency, passphrase, …) are passed to the SRT
	// connection. Not used by NewSource. Default empty: New refuses it.
	URL string `yaml:"url"`

	// Width and Height of the picture, both even. Default 1280x720.
	Width  int `yaml:"width"`
	Height int `yaml:"height"`

	// FPS is the frame rate. Default 30. One IDR is sent every FPS frames.
	FPS int `yaml:"fps"`

	// Bitrate of the video in bits per second (see ParseBitrate). Default
	// 2 Mbit/s; the encoder keeps to it with a one-second buffer.
	Bitrate int `yaml:"bitrate"`

	// Audio adds a 440 Hz tone as AAC-LC, 48 kHz stereo, 128 kbit/s.
	// Default true (a hand-built Config's zero value has no audio).
	Audio bool `yaml:"audio"`

	// Preset is the libx264 preset. Default "veryfast".
	Preset string `yaml:"preset"`
}

// DefaultConfig returns the configuration of `gradient publish --testsrc`
// without a URL: 1280x720, 30 fps, 2 Mbit/s, with audio.
func DefaultConfig() Config {
	return Config{Width: 1280, Height: 720, FPS: 30, Bitrate: 2_000_000, Audio: true, Preset: "veryfast"}
}

// withDefaults fills the zero fields of a hand-built config (but Audio)
// from DefaultConfig.
func (c Config) withDefaults() Config {
	def := DefaultConfig()
	if c.Width != 0 || c.Height != 0 { // a size is given whole or not at all
		def.Width, def.Height = c.Width, c.Height
	}
	defaults.Fill(&c, def)
	return c
}

// Validate checks the media fields and names a bad one by its YAML key;
// the URL is checked by New.
func (c Config) Validate() error {
	switch {
	case c.Width < 16 || c.Height < 16 || c.Width > 7680 || c.Height > 4320:
		return fmt.Errorf("width, height: %dx%d out of range 16x16..7680x4320", c.Width, c.Height)
	case c.Width%2 != 0 || c.Height%2 != 0:
		return fmt.Errorf("width, height: %dx%d must be even for 4:2:0", c.Width, c.Height)
	case c.FPS < 1 || c.FPS > 120:
		return fmt.Errorf("fps: %d out of range 1..120", c.FPS)
	case c.Bitrate < 10_000:
		return fmt.Errorf("bitrate: %d bit/s is below 10k", c.Bitrate)
	}
	return nil
}

// Publisher pushes the test stream to Config.URL.
type Publisher struct {
	cfg Config
	url *url.URL
	log *slog.Logger
}

// New checks cfg (URL scheme and media parameters) and returns a
// Publisher; Run publishes. Zero fields of cfg take their defaults
// (DefaultConfig); a nil log is slog.Default().
func New(cfg Config, log *slog.Logger) (*Publisher, error) {
	cfg = cfg.withDefaults()
	u, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("testsrc: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{cfg: cfg, url: u, log: log.With("component", "testsrc")}, nil
}

// sink is one push transport.
type sink interface {
	// Write sends one access unit; an error ends the session.
	Write(u *media.Unit) error
	Close() error
}

// Run connects, publishes until ctx ends and returns nil then, or returns
// the first error (connection refused, the server refused the stream, the
// connection dropped), wrapped with the URL. It does not reconnect.
func (p *Publisher) Run(ctx context.Context) error {
	src, err := NewSource(p.cfg, p.log)
	if err != nil {
		return err
	}
	defer src.Close()

	where := p.url.Redacted()
	var s sink
	switch p.url.Scheme {
	case "rtsp":
		s, err = dialRTSP(ctx, p.url, src.Description())
	case "srt":
		s, err = dialSRT(ctx, p.url, src.Description())
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s publish %s: %w", p.url.Scheme, where, err)
	}
	defer s.Close()

	tracks := make([]string, 0, 2)
	for _, t := range src.Description().Tracks {
		tracks = append(tracks, t.String())
	}
	p.log.Info("publishing test pattern", "url", where, "tracks", strings.Join(tracks, ", "),
		"fps", p.cfg.FPS, "bitrate", p.cfg.Bitrate)

	for {
		u, err := src.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				p.log.Info("stopped publishing", "url", where)
				return nil
			}
			return fmt.Errorf("%s publish %s: %w", p.url.Scheme, where, err)
		}
		if err := s.Write(u); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s publish %s: %w", p.url.Scheme, where, err)
		}
	}
}

func parseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("testsrc: no URL to publish to")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("testsrc: publish URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "rtsp", "srt":
	default:
		return nil, fmt.Errorf("testsrc: publish URL %s: unsupported scheme %q (want rtsp:// or srt://)", u.Redacted(), u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("testsrc: publish URL %s: want host:port", u.Redacted())
	}
	return u, nil
}

// ParseBitrate parses a bitrate such as "2M", "2.5M", "800k" or "1500000"
// (bits per second, k = 1000, M = 1000000).
func ParseBitrate(s string) (int, error) {
	num, mult := s, 1.0
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			num, mult = s[:n-1], 1e3
		case 'm', 'M':
			num, mult = s[:n-1], 1e6
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*mult > 1e9 {
		return 0, fmt.Errorf("bitrate %q: want a positive number of bit/s such as 2M or 800k", s)
	}
	return int(f * mult), nil
}

// ParseSize parses a picture size such as "1280x720".
func ParseSize(s string) (width, height int, err error) {
	ws, hs, ok := strings.Cut(s, "x")
	if ok {
		width, err = strconv.Atoi(ws)
		if err == nil {
			height, err = strconv.Atoi(hs)
		}
	}
	if !ok || err != nil || width <= 0 || height <= 0 {
		return 0, 0, fmt.Errorf("size %q: want WIDTHxHEIGHT such as 1280x720", s)
	}
	return width, height, nil
}
