package serverlet

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

// ManagerConfig configures a Manager; it is the `serverlets` section of a
// node's YAML file. DefaultManagerConfig gives the defaults named below.
type ManagerConfig struct {
	// Ladder maps rendition names to serverlet specs ("360p": "scale x360
	// 800k", "opus": "audio opus", "gray": "grayscale"). It is merged over
	// DefaultLadder; a spec "off" removes a default rung. Default empty:
	// DefaultLadder as it is.
	Ladder map[string]string `yaml:"ladder"`

	// Slots is the node's transcode capacity: how many serverlets may run
	// at once. Default runtime.NumCPU().
	Slots int `yaml:"slots"`

	// IdleStop stops a serverlet this long after its last reader left.
	// Default 10s.
	IdleStop time.Duration `yaml:"idle_stop"`

	// StartTimeout stops a serverlet that has produced nothing this long
	// after it started (its source sent no keyframe it could decode), so
	// that a request for a rendition cannot hold a transcode slot with
	// nothing to show for it. Default 15 s.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// MaxStartsPerClient is how many renditions that are not running yet
	// one client address may cause to start a minute (over WHEP, HLS or
	// RTSP); beyond, HTTP answers 429 and RTSP 403. The node enforces it
	// where the request comes in; loopback clients are exempt unless the
	// node's limit_loopback is set. Default 8; negative: no limit.
	MaxStartsPerClient int `yaml:"max_starts_per_client"`

	// SharedDecode makes the renditions of one source that transcode video
	// share one decoder: its pictures go by reference to each rung's
	// filters and encoder, as in one `ffmpeg -filter_complex split=N`
	// command. Off (false), every serverlet decodes its source itself.
	// Default true.
	SharedDecode *bool `yaml:"shared_decode"`
	// InlineRungs runs the rungs of a shared decode on the decoder's
	// thread, one after the other after each decoded frame, as one ffmpeg
	// command does (less CPU per ladder than a thread per rung: no queue,
	// no wake-up per rung and frame, no rung thread moving between CPUs
	// with its encoder's data); when that thread is busy more than 80 % of
	// the time, the rung using most of it moves to a thread of its own, so
	// a ladder needing more than a core gets it. The later rungs' frames
	// wait for the earlier rungs' encoders (a few ms at 1080p). False:
	// every rung on its own thread from the start. Default true.
	InlineRungs *bool `yaml:"inline_rungs"`
	// InlineBusyMax is the share of wall-clock time a decoder's thread may
	// be busy (decoding and running inline rungs), at two checks 0.5 s
	// apart, before it moves a rung to a thread of its own. Default 0.8;
	// (0, 1].
	InlineBusyMax float64 `yaml:"inline_busy_max"`
	// CascadeScale lets a rung on a decoder's thread whose pipeline begins
	// with a scale take, instead of the source's picture, the smallest
	// picture at least its size that a larger rung on that thread made of
	// the same frame by scaling alone: 480p from 720p's picture rather
	// than from 1080p's, as a cascade of scale filters in one ffmpeg
	// command does. The pictures match the source's scaled directly to
	// within rounding (PSNR > 50 dB on this project's 1080p test clip), at
	// a fraction of the scaling cost. A rung whose larger rung stops,
	// fails or moves off the thread scales the source again from the next
	// frame. False: every rung scales the source. Default true.
	CascadeScale *bool `yaml:"cascade_scale"`
	// InlineItemHook, for tests, is called after each item a decoder's
	// thread runs for a rung, with the rung's name.
	InlineItemHook func(rendition string) `yaml:"-"`

	// Encoder tunes libx264; its keys sit in the section itself (preset,
	// threads).
	Encoder EncoderConfig `yaml:",inline"`

	// PluginDir is the folder of operators' serverlet plugins (.so built
	// with go build -buildmode=plugin). Default empty: the working folder
	// (a node makes it "<data>/plugins").
	PluginDir string `yaml:"plugin_dir"`
	// Plugins lists the plugins loaded by Start: "gray" loads
	// <plugin_dir>/gray.so and registers it as serverlet "gray"; a name
	// ending in ".so" is used as it is (relative to plugin_dir). Default
	// none.
	Plugins []string `yaml:"plugins"`

	// NodeName is shown by "annotate node"; a node sets its own name.
	NodeName string `yaml:"-"`

	// Registry resolves serverlet names. Nil: NewRegistry() (the
	// built-ins), with the plugins loaded into it.
	Registry *Registry `yaml:"-"`

	// Registerer, when set, receives the manager's Prometheus metrics
	// (gradient_serverlet_…).
	Registerer prometheus.Registerer `yaml:"-"`
}

// EncoderConfig tunes the video encoder of every serverlet.
type EncoderConfig struct {
	// Preset is libx264's speed/quality preset, ultrafast … veryslow.
	// Default "veryfast".
	Preset string `yaml:"preset"`
	// Threads is how many threads one serverlet's encoder (and decoder)
	// use. Default 1: a node runs many serverlets, and one thread each
	// keeps their CPU accounting exact and adds no frame delay. With more,
	// the accounting (the serverlet thread's own CPU time) misses the
	// codec threads' share.
	Threads int `yaml:"threads"`
}

// DefaultManagerConfig returns the configuration of a Manager that is
// given none: the default ladder, one slot per CPU, a 10 s idle stop, a
// 15 s start timeout, libx264 "veryfast" on one thread and shared decode.
func DefaultManagerConfig() ManagerConfig {
	return ManagerConfig{
		Slots:              runtime.NumCPU(),
		IdleStop:           10 * time.Second,
		StartTimeout:       15 * time.Second,
		MaxStartsPerClient: 8,
		Encoder:            EncoderConfig{Preset: "veryfast", Threads: 1},
		SharedDecode:       func() *bool { b := true; return &b }(),
		InlineRungs:        func() *bool { b := true; return &b }(),
		CascadeScale:       func() *bool { b := true; return &b }(),
		InlineBusyMax:      0.8,
	}
}

// withDefaults fills the zero fields of a hand-built config from
// DefaultManagerConfig.
func (c ManagerConfig) withDefaults() ManagerConfig {
	defaults.Fill(&c, DefaultManagerConfig())
	return c
}

// Validate checks every field and names the bad one by its YAML key
// ("slots: out of range"). Specs are parsed by Manager.Start, once the
// plugins they may name are loaded.
func (c ManagerConfig) Validate() error {
	if c.Slots <= 0 {
		return fmt.Errorf("slots: %d is out of range (> 0)", c.Slots)
	}
	if c.IdleStop <= 0 {
		return fmt.Errorf("idle_stop: %v is out of range (> 0)", c.IdleStop)
	}
	if c.StartTimeout <= 0 {
		return fmt.Errorf("start_timeout: %v is out of range (> 0)", c.StartTimeout)
	}
	for name, spec := range c.Ladder {
		if err := checkRenditionName(name); err != nil {
			return fmt.Errorf("ladder: %w", err)
		}
		if strings.TrimSpace(spec) == "" {
			return fmt.Errorf("ladder.%s: empty spec (use \"off\" to remove a rung)", name)
		}
	}
	switch c.Encoder.Preset {
	case "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow":
	default:
		return fmt.Errorf("preset: %q is not a libx264 preset (ultrafast … veryslow)", c.Encoder.Preset)
	}
	if c.InlineBusyMax <= 0 || c.InlineBusyMax > 1 {
		return fmt.Errorf("inline_busy_max: %g is out of range (0, 1]", c.InlineBusyMax)
	}
	if c.Encoder.Threads <= 0 {
		return fmt.Errorf("threads: %d is out of range (> 0)", c.Encoder.Threads)
	}
	for i, p := range c.Plugins {
		if p == "" || strings.ContainsAny(p, " \t") {
			return fmt.Errorf("plugins[%d]: %q is not a plugin name", i, p)
		}
	}
	return nil
}

// checkRenditionName tells whether name can follow '@' in a path.
func checkRenditionName(name string) error {
	if _, _, err := media.ParsePath("x@" + name); err != nil || name == "" {
		return fmt.Errorf("rendition name %q: not a valid rendition name", name)
	}
	return nil
}
