package serverlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gradient-cdn/gradient/media"
)

// Errors of the Manager. ErrNoSuchRendition also matches media.ErrNotFound
// so that every egress answers 404.
var (
	// ErrNoSuchRendition: the rendition is not in the ladder, or makes no
	// sense for this source (taller than it: no upscaling).
	ErrNoSuchRendition = fmt.Errorf("no such rendition: %w", media.ErrNotFound)
	// ErrNoCapacity: every transcode slot of the node is taken.
	ErrNoCapacity = fmt.Errorf("no transcode capacity left on this node: %w", media.ErrNoCapacity)
)

// Rung is one rendition of the default ladder.
type Rung struct {
	Name string // "360p"
	Spec string // "scale x360 800k"
}

// DefaultLadder is the ladder a node offers without configuration: 16:9
// heights from 1080p down to 180p, the width following the source's aspect
// ratio, with the bitrates common H.264 ladders use for them (these are
// the figures our issue lists: 4500/2500/1200/800/400/250 kbit/s).
var DefaultLadder = []Rung{
	{"1080p", "scale x1080 4500k"},
	{"720p", "scale x720 2500k"},
	{"480p", "scale x480 1200k"},
	{"360p", "scale x360 800k"},
	{"240p", "scale x240 400k"},
	{"180p", "scale x180 250k"},
	// WebRTC viewers of a stream published with AAC hear it through this.
	{"opus", "audio opus"},
}

// ManagerConfig configures a Manager. The zero value gives the default
// ladder, one slot per CPU and a 10 s idle stop.
type ManagerConfig struct {
	// Ladder maps rendition names to serverlet specs ("360p": "scale x360
	// 800k", "opus": "audio opus", "gray": "grayscale"). It is merged over
	// DefaultLadder; a spec "off" removes a default rung.
	Ladder map[string]string

	// Slots is the node's transcode capacity: how many serverlets may run
	// at once. Default runtime.NumCPU().
	Slots int

	// IdleStop stops a serverlet this long after its last reader left.
	// Default 10s.
	IdleStop time.Duration

	// NodeName is shown by "annotate node".
	NodeName string

	// Encoder tunes libx264.
	Encoder EncoderConfig

	// Registry resolves serverlet names. Default NewRegistry() (the
	// built-ins) with the plugins below loaded into it.
	Registry *Registry

	// PluginDir is where plugins are looked up; Plugins names them: "gray"
	// loads PluginDir/gray.so and registers it as serverlet "gray". A path
	// ending in ".so" is used as it is (relative to PluginDir).
	PluginDir string
	Plugins   []string

	// Registerer, when set, receives the manager's Prometheus metrics
	// (gradient_serverlet_…).
	Registerer prometheus.Registerer
}

// Manager runs serverlets on demand: it is the hub's RenditionProvider.
type Manager struct {
	cfg    ManagerConfig
	ladder map[string]Serverlet
	specs  map[string]string
	log    *slog.Logger

	mu      sync.Mutex
	hub     *media.Hub
	runs    map[string]*run
	closed  bool
	wg      sync.WaitGroup // run goroutines and their reapers
	failed  uint64
	refused uint64
}

// NewManager loads the plugins and parses the ladder; a bad spec or plugin
// is an error naming it. hub may be nil and set later with SetHub (the hub
// is usually built with the manager as its RenditionProvider).
func NewManager(cfg ManagerConfig, hub *media.Hub, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Slots <= 0 {
		cfg.Slots = runtime.NumCPU()
	}
	if cfg.IdleStop <= 0 {
		cfg.IdleStop = 10 * time.Second
	}
	if cfg.Encoder.Preset == "" {
		cfg.Encoder.Preset = "veryfast"
	}
	if cfg.Encoder.Threads <= 0 {
		cfg.Encoder.Threads = 1
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	m := &Manager{cfg: cfg, hub: hub, log: log.With("component", "serverlet"), runs: map[string]*run{},
		ladder: map[string]Serverlet{}, specs: map[string]string{}}
	for _, p := range cfg.Plugins {
		if err := cfg.Registry.LoadPlugin(cfg.PluginDir, p); err != nil {
			return nil, err
		}
		m.log.Info("plugin loaded", "plugin", p)
	}
	specs := map[string]string{}
	for _, r := range DefaultLadder {
		specs[r.Name] = r.Spec
	}
	for k, v := range cfg.Ladder {
		specs[k] = v
	}
	for name, spec := range specs {
		if strings.TrimSpace(spec) == "off" {
			continue
		}
		if _, _, err := media.ParsePath("x@" + name); err != nil || name == "" {
			return nil, fmt.Errorf("ladder: rendition name %q: %v", name, err)
		}
		s, err := cfg.Registry.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("ladder %s: %w", name, err)
		}
		m.ladder[name], m.specs[name] = s, spec
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(newCollector(m)); err != nil {
			return nil, fmt.Errorf("serverlet metrics: %w", err)
		}
	}
	return m, nil
}

// SetHub gives the manager the hub it reads sources from and publishes
// renditions into.
func (m *Manager) SetHub(h *media.Hub) {
	m.mu.Lock()
	m.hub = h
	m.mu.Unlock()
}

// Ladder returns the offered renditions and their specs.
func (m *Manager) Ladder() map[string]string {
	out := make(map[string]string, len(m.specs))
	for k, v := range m.specs {
		out[k] = v
	}
	return out
}

// Ensure starts the serverlet that makes path ("live/cam1@360p") unless
// it runs already, and returns once the rendition is published in the hub.
// It fails with ErrNoSuchRendition (a media.ErrNotFound) for a rendition
// the ladder lacks or the source cannot give, and with ErrNoCapacity when
// every slot is taken.
func (m *Manager) Ensure(ctx context.Context, path string) error {
	stream, rend, err := media.ParsePath(path)
	if err != nil {
		return err
	}
	if rend == "" {
		return fmt.Errorf("serverlet %s: %w", path, ErrNoSuchRendition)
	}
	s, ok := m.ladder[rend]
	if !ok {
		return fmt.Errorf("serverlet %s: %w: %q is not in the ladder", path, ErrNoSuchRendition, rend)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("serverlet %s: manager closed: %w", path, media.ErrNotFound)
	}
	hub := m.hub
	r := m.runs[path]
	if r == nil {
		if hub == nil {
			m.mu.Unlock()
			return fmt.Errorf("serverlet %s: no hub", path)
		}
		if r, err = m.start(hub, path, stream, rend, s); err != nil {
			m.mu.Unlock()
			return err
		}
	}
	r.touch()
	m.mu.Unlock()
	select {
	case <-r.published:
		return nil
	case <-r.done:
		return fmt.Errorf("serverlet %s: %w", path, r.err)
	case <-ctx.Done():
		return fmt.Errorf("serverlet %s: waiting for the first frame: %w", path, ctx.Err())
	}
}

// start builds the pipeline and starts the run; called with m.mu held.
func (m *Manager) start(hub *media.Hub, path, stream, rend string, s Serverlet) (*run, error) {
	srcStream, ok := hub.Lookup(stream)
	if !ok {
		return nil, fmt.Errorf("serverlet %s: source %s: %w", path, stream, media.ErrNotFound)
	}
	in, err := formatOf(srcStream.Description())
	if err != nil {
		return nil, fmt.Errorf("serverlet %s: source %s: %w", path, stream, err)
	}
	in.Stream, in.Rendition, in.Node = stream, rend, m.cfg.NodeName
	pipe := NewPipeline(in)
	if err := safeSetup(s, pipe); err != nil {
		return nil, fmt.Errorf("serverlet %s (%s): %w", path, m.specs[rend], err)
	}
	if len(m.runs) >= m.cfg.Slots {
		m.refused++
		m.log.Warn("serverlet refused: no capacity", "rendition", path, "slots", m.cfg.Slots)
		return nil, fmt.Errorf("serverlet %s: %w (%d of %d slots in use)", path, ErrNoCapacity, len(m.runs), m.cfg.Slots)
	}
	reader, err := hub.Subscribe(stream, "serverlet "+path)
	if err != nil {
		return nil, fmt.Errorf("serverlet %s: %w", path, err)
	}
	r := newRun(hub, reader, path, m.specs[rend], pipe, m.cfg.Encoder, m.cfg.IdleStop, m.log)
	m.runs[path] = r
	m.log.Info("serverlet started", "rendition", path, "spec", r.spec, "out", fmt.Sprintf("%dx%d", pipe.Width, pipe.Height))
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		r.loop()
	}()
	go func() {
		defer m.wg.Done()
		<-r.done
		m.mu.Lock()
		if m.runs[path] == r {
			delete(m.runs, path)
		}
		if r.err != nil && !errors.Is(r.err, context.Canceled) && !errors.Is(r.err, media.ErrStreamEnded) {
			m.failed++
		}
		m.mu.Unlock()
	}()
	return r, nil
}

// safeSetup runs s.Setup, turning a panic (an operator's plugin) into an
// error.
func safeSetup(s Serverlet, p *Pipeline) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("setup panicked: %v", r)
		}
	}()
	return s.Setup(p)
}

// formatOf reads the source's format from its description.
func formatOf(d media.Description) (Format, error) {
	var f Format
	v := d.VideoTrack()
	if v < 0 {
		return f, errors.New("no video track")
	}
	w, h, fps, err := d.Tracks[v].Video()
	if err != nil {
		return f, err
	}
	f.Width, f.Height, f.FPS = w, h, fps
	if a := d.AudioTrack(); a >= 0 {
		t := d.Tracks[a]
		f.Audio, f.AudioChannels, f.AudioSampleRate = t.Codec, t.Channels, t.SampleRate
	}
	return f, nil
}

// Stats is the manager's state for the API, metrics and the planner.
type Stats struct {
	// Slots is the transcode capacity; Used how many serverlets run.
	Slots int `json:"slots"`
	Used  int `json:"used"`
	// CPULoad sums the running serverlets' CPU load (1 = one core).
	CPULoad float64 `json:"cpu_load"`
	// Failed counts serverlets that stopped on an error; Refused the
	// renditions refused for lack of capacity.
	Failed     uint64     `json:"failed"`
	Refused    uint64     `json:"refused"`
	Serverlets []RunStats `json:"serverlets"`
}

// Stats returns a snapshot.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	runs := make([]*run, 0, len(m.runs))
	for _, r := range m.runs {
		runs = append(runs, r)
	}
	st := Stats{Slots: m.cfg.Slots, Used: len(m.runs), Failed: m.failed, Refused: m.refused}
	m.mu.Unlock()
	for _, r := range runs {
		rs := r.stats()
		// r.pub is set before published is closed: check the channel first.
		if isClosed(r.published) && r.pub != nil {
			rs.Readers = r.pub.Stream().Info().Readers
		}
		st.CPULoad += rs.CPULoad
		st.Serverlets = append(st.Serverlets, rs)
	}
	sort.Slice(st.Serverlets, func(i, j int) bool { return st.Serverlets[i].Rendition < st.Serverlets[j].Rendition })
	return st
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Stop ends the serverlet making path, if one runs; its readers get
// media.ErrStreamEnded.
func (m *Manager) Stop(path string) {
	m.mu.Lock()
	r := m.runs[path]
	m.mu.Unlock()
	if r != nil {
		r.stop()
	}
}

// Close stops every serverlet and refuses new ones. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	runs := make([]*run, 0, len(m.runs))
	for _, r := range m.runs {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	for _, r := range runs {
		r.stop()
	}
	m.wg.Wait()
	return nil
}
