package overlay

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
	"github.com/gradient-cdn/gradient/media"
)

// DemandConfig configures a DemandTracker.
type DemandConfig struct {
	// DeviceClasses are the classes a viewer may name; only the names
	// matter here (the planner holds their utilities). Required.
	DeviceClasses map[string]map[string]float64 `yaml:"device_classes"`
	// DefaultDevice is the class of a viewer that names none, or an
	// unknown one. Required, one of DeviceClasses.
	DefaultDevice string `yaml:"default_device"`
	// WatchLease is how long a viewer sent to a player by /watch counts
	// before its session starts. Default 30 s.
	WatchLease time.Duration `yaml:"watch_lease"`
	// LeasesPerClient bounds the leases one client holds at once; a
	// client's further leases count nothing. Default 4.
	LeasesPerClient int `yaml:"leases_per_client"`
	// Interval is how often the demand is counted and changes reported.
	// Default 500 ms.
	Interval time.Duration `yaml:"interval"`

	// Viewers, when set, lists the viewers counted by their requests
	// rather than by a session (HLS).
	Viewers func() []Viewer `yaml:"-"`
	// TranscodeUse, when set, counts the renditions this node makes, by
	// stream; it is reported with the demand (Membership.SetTranscodeUse).
	TranscodeUse func() map[string]int `yaml:"-"`
}

// DefaultDemandConfig returns the tracker's defaults (no classes: the
// caller names them).
func DefaultDemandConfig() DemandConfig {
	return DemandConfig{WatchLease: 30 * time.Second, LeasesPerClient: 4, Interval: 500 * time.Millisecond}
}

// Validate checks the config and names the bad field by its YAML key.
func (c DemandConfig) Validate() error {
	if err := validateDevices(c.DeviceClasses, c.DefaultDevice); err != nil {
		return err
	}
	if c.WatchLease < 0 {
		return errors.New("watch_lease: must not be negative")
	}
	return nil
}

// Viewer is a viewer counted by its requests (an HLS client), with no
// session that opens and closes.
type Viewer struct {
	// Path is the hub path watched ("live/cam1@360p").
	Path string
	// Client identifies the viewer among those of Path.
	Client string
	// Device is the class the viewer named (?device=), "" for none.
	Device string
}

// DemandSink receives the demand a DemandTracker reports (a Membership).
type DemandSink interface {
	SetDemand(stream string, viewers map[string]int)
	SetTranscodeUse(byStream map[string]int)
}

// DemandTracker counts this node's viewers per stream and device class,
// the demand the planners serve: sessions (SessionOpened, SessionClosed),
// viewers counted by their requests (DemandConfig.Viewers), and viewers
// that /watch sent to a player whose session has not started yet
// (Lease). A viewer gets its class when first counted, from its own
// ?device=, else from the oldest lease of its stream, which it then uses
// up; it keeps that class while it watches. Start reports the counts to a
// DemandSink when they change.
type DemandTracker struct {
	cfg  DemandConfig
	sink DemandSink
	log  *slog.Logger
	now  func() time.Time

	mu         sync.Mutex
	sessions   map[string]viewing   // session id → what it watches
	polled     map[viewerKey]string // viewer counted by requests → its class
	leases     []*Lease             // viewers sent to a player, not yet counted otherwise
	voidLogged time.Time            // last log of a lease over the per-client cap
	reported   map[string]map[string]int
	used       map[string]int // transcode use last reported
	started    bool
	stop       chan struct{}
	done       chan struct{}
}

type viewing struct{ path, class string }

type viewerKey struct{ path, client string }

// Lease counts a viewer that /watch sent to a player until its session
// starts (which takes the lease over) or the lease expires.
type Lease struct {
	d             *DemandTracker
	stream, class string
	client        string
	until         time.Time
	// void: the client held LeasesPerClient leases already; this one
	// counts nothing.
	void bool
	// taken is set when a viewer's session or request took the lease
	// over: the viewer counts by itself from then on.
	taken bool
}

// NewDemandTracker checks cfg and builds a tracker that reports to sink
// (nil: it only counts); Start runs its reporting loop. The zero fields of
// cfg take DefaultDemandConfig's values.
func NewDemandTracker(cfg DemandConfig, sink DemandSink, log *slog.Logger) (*DemandTracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	defaults.Fill(&cfg, DefaultDemandConfig())
	if log == nil {
		log = slog.Default()
	}
	return &DemandTracker{cfg: cfg, sink: sink, log: log.With("component", "demand"), now: time.Now,
		sessions: map[string]viewing{}, polled: map[viewerKey]string{}, reported: map[string]map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Class returns the device class a viewer naming device is counted in:
// device if it is a class, else DefaultDevice.
func (d *DemandTracker) Class(device string) string {
	if _, ok := d.cfg.DeviceClasses[device]; ok {
		return device
	}
	return d.cfg.DefaultDevice
}

// SessionOpened counts a viewer session id on path (a WHEP session)
// whose request named device ("" for none; see DemandTracker for the
// class it gets).
func (d *DemandTracker) SessionOpened(id, path, device string) {
	stream, _, _ := media.ParsePath(path)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sessions[id] = viewing{path: path, class: d.takeLease(stream, device)}
}

// SessionClosed stops counting session id. Unknown ids are ignored.
func (d *DemandTracker) SessionClosed(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.sessions, id)
}

// Lease counts a viewer of stream that /watch sends to a player, in the
// class device names (or the default), for DemandConfig.WatchLease.
// client is the requester's address: one holding LeasesPerClient leases
// that still count gets a lease that counts nothing ("" is not capped).
func (d *DemandTracker) Lease(stream, device, client string) *Lease {
	l := &Lease{d: d, stream: stream, class: d.Class(device), client: client}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	l.until = now.Add(d.cfg.WatchLease)
	if client != "" {
		held := 0
		for _, x := range d.leases {
			if x.client == client && x.until.After(now) {
				held++
			}
		}
		if held >= d.cfg.LeasesPerClient {
			l.void = true
			if d.voidLogged.IsZero() || now.Sub(d.voidLogged) > time.Minute {
				d.voidLogged = now
				d.log.Info("watch leases over the per-client cap count no demand (logged once a minute)",
					"client", client, "cap", d.cfg.LeasesPerClient)
			}
			return l
		}
	}
	d.leases = append(d.leases, l)
	return l
}

// Renew counts the leased viewer for another DemandConfig.WatchLease from
// now (the /watch handler waited for the stream before redirecting). A
// lease that expired meanwhile counts again, unless a session took it
// over: that viewer is counted already.
func (l *Lease) Renew() {
	d := l.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if l.taken || l.void {
		return
	}
	if !slices.Contains(d.leases, l) {
		d.leases = append(d.leases, l) // expired while waiting
	}
	l.until = d.now().Add(d.cfg.WatchLease)
}

// takeLease returns the class of a viewer of stream that starts being
// counted: device if it names one, else the class of the oldest lease of
// the stream, else the default; an unknown class is the default. The
// lease of that class, if any, is used up: the viewer now counts by
// itself. Called with d.mu held.
func (d *DemandTracker) takeLease(stream, device string) string {
	class := device
	if class == "" {
		class = d.cfg.DefaultDevice
		for _, l := range d.leases {
			if l.stream == stream {
				class = l.class
				break
			}
		}
	}
	class = d.Class(class)
	for i, l := range d.leases {
		if l.stream == stream && l.class == class {
			l.taken = true
			d.leases = append(d.leases[:i:i], d.leases[i+1:]...)
			break
		}
	}
	return class
}

// Counts returns the viewers per stream and class now, forgetting expired
// leases and viewers that stopped fetching.
func (d *DemandTracker) Counts() map[string]map[string]int {
	var polled []Viewer
	if d.cfg.Viewers != nil {
		polled = d.cfg.Viewers()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]map[string]int{}
	add := func(stream, class string) {
		if out[stream] == nil {
			out[stream] = map[string]int{}
		}
		out[stream][class]++
	}
	for _, s := range d.sessions {
		st, _, _ := media.ParsePath(s.path)
		add(st, s.class)
	}
	seen := make(map[viewerKey]bool, len(polled))
	for _, v := range polled {
		k := viewerKey{path: v.Path, client: v.Client}
		seen[k] = true
		st, _, _ := media.ParsePath(v.Path)
		class, ok := d.polled[k]
		if !ok {
			class = d.takeLease(st, v.Device)
			d.polled[k] = class
		}
		add(st, class)
	}
	for k := range d.polled {
		if !seen[k] {
			delete(d.polled, k)
		}
	}
	now := d.now()
	kept := d.leases[:0]
	for _, l := range d.leases {
		if now.Before(l.until) {
			kept = append(kept, l)
			add(l.stream, l.class)
		}
	}
	clear(d.leases[len(kept):])
	d.leases = kept
	return out
}

// ViewedPaths lists the paths that counted viewers (sessions and viewers
// counted by requests) watch, for the reconciler to keep.
func (d *DemandTracker) ViewedPaths() []string {
	var polled []Viewer
	if d.cfg.Viewers != nil {
		polled = d.cfg.Viewers()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, s := range d.sessions {
		if !seen[s.path] {
			seen[s.path] = true
			out = append(out, s.path)
		}
	}
	for _, v := range polled {
		if !seen[v.Path] {
			seen[v.Path] = true
			out = append(out, v.Path)
		}
	}
	return out
}

// Report counts the demand and tells the sink what changed since the last
// report: the streams whose counts moved (nil counts for a stream no
// longer watched) and the transcode use when it moved.
func (d *DemandTracker) Report() {
	cur := d.Counts()
	var u map[string]int
	if d.cfg.TranscodeUse != nil {
		u = d.cfg.TranscodeUse()
	}
	d.mu.Lock()
	var changed []string
	for s, v := range cur {
		if !maps.Equal(v, d.reported[s]) {
			changed = append(changed, s)
		}
	}
	for s := range d.reported {
		if _, ok := cur[s]; !ok {
			changed = append(changed, s)
		}
	}
	for _, s := range changed {
		if cur[s] == nil {
			delete(d.reported, s)
		} else {
			d.reported[s] = cur[s]
		}
	}
	var used map[string]int
	if u != nil && (d.used == nil || !maps.Equal(u, d.used)) {
		d.used, used = u, u
	}
	d.mu.Unlock()
	if d.sink == nil {
		return
	}
	for _, s := range changed {
		d.sink.SetDemand(s, cur[s])
	}
	if used != nil {
		d.sink.SetTranscodeUse(used)
	}
}

// Start runs the loop that reports every DemandConfig.Interval.
func (d *DemandTracker) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return errors.New("demand tracker: started twice")
	}
	select {
	case <-d.stop:
		return errors.New("demand tracker: started after Close")
	default:
	}
	d.started = true
	go d.run()
	return nil
}

func (d *DemandTracker) run() {
	defer close(d.done)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.Report()
	}
}

// Close stops the loop. Safe without Start and more than once.
func (d *DemandTracker) Close() error {
	d.mu.Lock()
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	started := d.started
	d.mu.Unlock()
	if started {
		<-d.done
	}
	return nil
}
