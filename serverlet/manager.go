package serverlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

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
	// MPEG-TS HLS and RTSP viewers of a stream published with Opus (WHIP)
	// hear it through this.
	{"aac", "audio aac"},
}

// Manager runs serverlets on demand: it is the hub's RenditionProvider.
type Manager struct {
	cfg ManagerConfig
	hub *media.Hub
	log *slog.Logger

	mu     sync.Mutex
	ladder map[string]Serverlet // set by Start
	specs  map[string]string    // set by Start
	runs   map[string]*run
	// decoders are the shared decoders by source stream (shared_decode).
	decoders map[string]*decoder
	closed   bool
	wg       sync.WaitGroup // run goroutines and their reapers
	failed   uint64
	refused  uint64
}

// NewManager validates cfg (its zero fields take DefaultManagerConfig's
// values) and builds a manager that makes renditions in hub; hub is
// usually built with a RenditionProvider that asks this manager. It does
// no I/O: Start loads the plugins and parses the ladder.
func NewManager(cfg ManagerConfig, hub *media.Hub, log *slog.Logger) (*Manager, error) {
	if hub == nil {
		return nil, errors.New("serverlet manager: no hub")
	}
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	m := &Manager{cfg: cfg, hub: hub, log: log.With("component", "serverlet"), runs: map[string]*run{}, decoders: map[string]*decoder{}}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(newCollector(m)); err != nil {
			return nil, fmt.Errorf("serverlet metrics: %w", err)
		}
	}
	return m, nil
}

// Start loads the plugins and parses the ladder; a plugin that does not
// load or a spec that does not parse is an error naming it by its YAML
// key ("ladder.gray: …", "plugins[0]: …"). Ensure refuses every
// rendition until Start has succeeded.
func (m *Manager) Start() error {
	m.mu.Lock()
	started := m.ladder != nil
	m.mu.Unlock()
	if started {
		return errors.New("serverlet manager: started twice")
	}
	for i, p := range m.cfg.Plugins {
		if err := m.cfg.Registry.LoadPlugin(m.cfg.PluginDir, p); err != nil {
			return fmt.Errorf("plugins[%d]: %w", i, err)
		}
		m.log.Info("plugin loaded", "plugin", p)
	}
	specs := map[string]string{}
	for _, r := range DefaultLadder {
		specs[r.Name] = r.Spec
	}
	for k, v := range m.cfg.Ladder {
		specs[k] = v
	}
	ladder, offered := map[string]Serverlet{}, map[string]string{}
	for name, spec := range specs {
		if strings.TrimSpace(spec) == "off" {
			continue
		}
		s, err := m.cfg.Registry.Parse(spec) // the names were checked by Validate
		if err != nil {
			return fmt.Errorf("ladder.%s: %w", name, err)
		}
		ladder[name], offered[name] = s, spec
	}
	m.mu.Lock()
	m.ladder, m.specs = ladder, offered
	m.mu.Unlock()
	return nil
}

// Ladder returns the offered renditions and their specs.
func (m *Manager) Ladder() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("serverlet %s: manager closed: %w", path, media.ErrNotFound)
	}
	if m.ladder == nil {
		m.mu.Unlock()
		return fmt.Errorf("serverlet %s: manager not started: %w", path, media.ErrNotFound)
	}
	s, ok := m.ladder[rend]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("serverlet %s: %w: %q is not in the ladder", path, ErrNoSuchRendition, rend)
	}
	r := m.runs[path]
	if r == nil {
		if r, err = m.start(path, stream, rend, s); err != nil {
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
func (m *Manager) start(path, stream, rend string, s Serverlet) (*run, error) {
	hub := m.hub
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
	var r *run
	if *m.cfg.SharedDecode && pipe.TranscodesVideo() {
		// The rung joins the source's decoder, or starts one.
		d := m.decoders[stream]
		r = newRun(hub, nil, srcStream.Description(), path, m.specs[rend], pipe, m.cfg.Encoder, m.cfg.IdleStop, m.cfg.StartTimeout, m.log)
		if d != nil && d.attach(r) {
			r.srcDesc = d.srcDesc
		} else {
			if d, err = newDecoder(hub, stream, m.cfg, m.log); err != nil {
				r.cancel()
				return nil, fmt.Errorf("serverlet %s: %w", path, err)
			}
			r.srcDesc = d.srcDesc
			d.attach(r)
			m.decoders[stream] = d
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				d.loop(func() {
					m.mu.Lock()
					if m.decoders[stream] == d {
						delete(m.decoders, stream)
					}
					m.mu.Unlock()
				})
			}()
			m.log.Info("shared decoder started", "source", stream)
		}
	} else {
		reader, err := hub.Subscribe(stream, "serverlet "+path)
		if err != nil {
			return nil, fmt.Errorf("serverlet %s: %w", path, err)
		}
		r = newRun(hub, reader, reader.Description(), path, m.specs[rend], pipe, m.cfg.Encoder, m.cfg.IdleStop, m.cfg.StartTimeout, m.log)
	}
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
	// Decoders are the shared decoders (serverlets.shared_decode): one per
	// source with running video rungs, sorted by source.
	Decoders []DecoderStats `json:"decoders"`
}

// Stats returns a snapshot.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	runs := make([]*run, 0, len(m.runs))
	for _, r := range m.runs {
		runs = append(runs, r)
	}
	decs := make([]*decoder, 0, len(m.decoders))
	for _, d := range m.decoders {
		decs = append(decs, d)
	}
	st := Stats{Slots: m.cfg.Slots, Used: len(m.runs), Failed: m.failed, Refused: m.refused, Decoders: []DecoderStats{}}
	m.mu.Unlock()
	for _, d := range decs {
		ds := d.stats()
		st.CPULoad += ds.CPULoad
		st.Decoders = append(st.Decoders, ds)
	}
	sort.Slice(st.Decoders, func(i, j int) bool { return st.Decoders[i].Source < st.Decoders[j].Source })
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

// Close stops every serverlet and refuses new ones. It is safe without
// Start and more than once.
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
