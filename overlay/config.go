package overlay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/optimizer"
)

// Config is a node's part in the overlay, the "overlay" section of the
// node's YAML file: what the node costs, how streams rooted here are
// planned, how viewers count as demand, and the relays between nodes.
// DefaultConfig gives every default; node.Config embeds it.
type Config struct {
	// Secret is the cluster secret: relays between nodes authenticate with
	// it (RTSP Basic, user RelayUser), and RTSP reading on the node
	// requires it. Default: the gossip key (gossip.key); empty with no
	// gossip key: RTSP reading is open.
	Secret string `yaml:"secret"`
	// PricePerMbps is what relaying one Mbps through this node costs; link
	// costs are built from it and the RTT (see LinkCost). Default 0.01.
	PricePerMbps float64 `yaml:"price_per_mbps"`
	// Region is the node's region (1 to 32 characters of a-z, 0-9, '-'),
	// gossiped with it; "" (the default) is none. See RegionPrices.
	Region string `yaml:"region"`
	// RegionPrices multiplies the cost of a link between two members by
	// the price of their pair of regions (symmetric; a pair not listed, or
	// a link to a member with no region, costs 1×). Each node plans with
	// its own table, which is not gossiped: every node should carry the
	// same one; if two disagree, each plans and picks edges by its own
	// view. Multipliers are > 0 and ≤ 1000; a pair may be listed once.
	// Default none.
	RegionPrices RegionPrices `yaml:"region_prices"`
	// TranscodeCost is the cost of one rendition made here. Default 0.001.
	TranscodeCost float64 `yaml:"transcode_cost"`
	// Ladder is the rendition ladder of streams published into this node,
	// best first. The first rung is the source (the bare stream path; its
	// name is a label), the others name serverlet renditions
	// ("live/cam1@360p"). Default [{source, 2500}, {360p, 800}].
	Ladder []LadderLevel `yaml:"ladder"`
	// DeviceClasses gives, per device class, the utility of one viewer
	// watching at each rung (by name); the planner trades it against
	// bandwidth cost. Default: phone, laptop and tv (see
	// DefaultDeviceClasses).
	DeviceClasses map[string]map[string]float64 `yaml:"device_classes"`
	// DefaultDevice is the class of a viewer that names none. Default "laptop".
	DefaultDevice string `yaml:"default_device"`
	// LastMileCostPerMbps is what serving a viewer from its edge costs per
	// Mbps. Default 0.05.
	LastMileCostPerMbps float64 `yaml:"last_mile_cost_per_mbps"`
	// PlannerDebounce delays a re-plan after a change. Default 300ms.
	PlannerDebounce time.Duration `yaml:"planner_debounce"`
	// PlannerInterval re-plans without a change. Default 10s.
	PlannerInterval time.Duration `yaml:"planner_interval"`
	// RelayGrace keeps a relayed stream published this long while no
	// upstream feeds it (a parent died), so that viewers only pause. Default 15s.
	RelayGrace time.Duration `yaml:"relay_grace"`
	// ProbeInterval, ProbeTimeout and SuspicionMult tune failure detection
	// (memberlist). A dead node is declared after about SuspicionMult ×
	// ProbeInterval once peers confirm the suspicion. Defaults 1s, 500ms, 4.
	ProbeInterval time.Duration `yaml:"probe_interval"`
	ProbeTimeout  time.Duration `yaml:"probe_timeout"`
	SuspicionMult int           `yaml:"suspicion_mult"`
	// PushPullInterval is the full state exchange period. Default 10s.
	PushPullInterval time.Duration `yaml:"push_pull_interval"`
	// WatchLease is how long a viewer sent to a player by /watch counts as
	// demand (and keeps its rendition relayed here) before its WHEP session
	// starts. Default 30s.
	WatchLease time.Duration `yaml:"watch_lease"`
	// WatchLeasesPerClient bounds the /watch leases one client address
	// holds at once: beyond it a /watch still redirects but counts no
	// demand, so a script hitting /watch cannot make the cluster plan for
	// thousands of phantom viewers. Default 4.
	WatchLeasesPerClient int `yaml:"watch_leases_per_client"`

	// Bounds on what members may gossip (see MembershipConfig): how far
	// ahead of this node's clock an entry's version may be (default 1m),
	// how many keys of each live kind one member may hold (default
	// 10000), and how many VoD titles and removals (default 100000).
	MaxClockSkew          time.Duration `yaml:"max_clock_skew"`
	MaxEntriesPerOwner    int           `yaml:"max_entries_per_owner"`
	MaxVoDEntriesPerOwner int           `yaml:"max_vod_entries_per_owner"`

	// PeerCA is a PEM file of the CA certificate(s) that signed the
	// nodes' certificates: relays to RTSPS nodes and HTTPS requests to
	// peers (the dashboard's load fetch) verify the peer against it.
	// Default "": the system pool.
	PeerCA string `yaml:"peer_ca"`
}

// PeerTLS is the client TLS configuration a node verifies its peers
// with: RootCAs from PeerCA (nil, the system pool, when unset).
func (c Config) PeerTLS() (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.PeerCA == "" {
		return conf, nil
	}
	b, err := os.ReadFile(c.PeerCA)
	if err != nil {
		return nil, fmt.Errorf("peer_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("peer_ca: %s holds no PEM certificate", c.PeerCA)
	}
	conf.RootCAs = pool
	return conf, nil
}

// LadderLevel is one rung of the ladder.
type LadderLevel struct {
	// Name labels the rung; the renditions' names are path suffixes
	// ("360p" in "live/cam1@360p").
	Name string `yaml:"name"`
	// Kbps is the rung's bitrate.
	Kbps float64 `yaml:"kbps"`
}

// DefaultDeviceClasses are the utilities of a viewer per rung: a phone
// gains little from more than 360p, a TV a lot.
func DefaultDeviceClasses() map[string]map[string]float64 {
	return map[string]map[string]float64{
		"phone":  {"source": 1.0, "360p": 0.95},
		"laptop": {"source": 1.5, "360p": 1.0},
		"tv":     {"source": 2.0, "360p": 0.8},
	}
}

// DefaultConfig returns the overlay section of a node started with no
// file and no flags.
func DefaultConfig() Config {
	m := DefaultMembershipConfig()
	p := DefaultPlannerConfig()
	return Config{
		PricePerMbps:          0.01,
		TranscodeCost:         0.001,
		Ladder:                []LadderLevel{{"source", 2500}, {"360p", 800}},
		DeviceClasses:         DefaultDeviceClasses(),
		DefaultDevice:         "laptop",
		LastMileCostPerMbps:   0.05,
		PlannerDebounce:       p.Debounce,
		PlannerInterval:       p.Interval,
		RelayGrace:            DefaultRelayConfig().Grace,
		ProbeInterval:         m.ProbeInterval,
		ProbeTimeout:          m.ProbeTimeout,
		SuspicionMult:         m.SuspicionMult,
		PushPullInterval:      m.PushPullInterval,
		WatchLease:            DefaultDemandConfig().WatchLease,
		WatchLeasesPerClient:  DefaultDemandConfig().LeasesPerClient,
		MaxClockSkew:          m.MaxClockSkew,
		MaxEntriesPerOwner:    m.MaxEntriesPerOwner,
		MaxVoDEntriesPerOwner: m.MaxVoDEntriesPerOwner,
	}
}

// Validate checks every field and names the bad one by its key in the
// section ("ladder[1].kbps").
func (c Config) Validate() error {
	if _, err := c.PeerTLS(); err != nil {
		return err
	}
	if c.PricePerMbps < 0 {
		return errors.New("price_per_mbps: must not be negative")
	}
	if c.TranscodeCost < 0 {
		return errors.New("transcode_cost: must not be negative")
	}
	if c.LastMileCostPerMbps < 0 {
		return errors.New("last_mile_cost_per_mbps: must not be negative")
	}
	if c.Region != "" {
		if err := ValidRegion(c.Region); err != nil {
			return fmt.Errorf("region: %w", err)
		}
	}
	if err := c.RegionPrices.Validate(); err != nil {
		return err
	}
	if len(c.Ladder) == 0 {
		return errors.New("ladder: needs at least the source rung")
	}
	for i, l := range c.Ladder {
		if l.Name == "" || strings.ContainsAny(l.Name, "/@ ") {
			return fmt.Errorf("ladder[%d].name: %q is not a rendition name", i, l.Name)
		}
		if l.Kbps <= 0 || (i > 0 && l.Kbps >= c.Ladder[i-1].Kbps) {
			return fmt.Errorf("ladder[%d].kbps: must be positive and below the rung before", i)
		}
		if i > 0 {
			if _, _, err := media.ParsePath("x@" + l.Name); err != nil {
				return fmt.Errorf("ladder[%d].name: %q is not a rendition name", i, l.Name)
			}
		}
	}
	if err := c.Demand().Validate(); err != nil {
		return err
	}
	for class, u := range c.DeviceClasses {
		for lv, v := range u {
			if v < 0 {
				return fmt.Errorf("device_classes.%s.%s: must not be negative", class, lv)
			}
		}
	}
	pos := []struct {
		field string
		ok    bool
	}{
		{"planner_debounce", c.PlannerDebounce > 0},
		{"planner_interval", c.PlannerInterval > 0},
		{"relay_grace", c.RelayGrace > 0},
		{"probe_interval", c.ProbeInterval > 0},
		{"probe_timeout", c.ProbeTimeout > 0 && c.ProbeTimeout < c.ProbeInterval},
		{"suspicion_mult", c.SuspicionMult > 0},
		{"push_pull_interval", c.PushPullInterval > 0},
		{"max_clock_skew", c.MaxClockSkew > 0},
		{"max_entries_per_owner", c.MaxEntriesPerOwner > 0},
		{"max_vod_entries_per_owner", c.MaxVoDEntriesPerOwner > 0},
		{"watch_lease", c.WatchLease > 0},
		{"watch_leases_per_client", c.WatchLeasesPerClient > 0},
	}
	for _, p := range pos {
		if !p.ok {
			return fmt.Errorf("%s: out of range", p.field)
		}
	}
	return nil
}

// Levels is the ladder as the optimizer's levels.
func (c Config) Levels() []optimizer.Level {
	out := make([]optimizer.Level, len(c.Ladder))
	for i, l := range c.Ladder {
		out[i] = optimizer.Level{Name: l.Name, Kbps: l.Kbps}
	}
	return out
}

// Membership returns the membership config of this section: the node's
// name, gossip addresses, key and metadata come from elsewhere in the
// node's config and are the caller's to fill.
func (c Config) Membership() MembershipConfig {
	m := DefaultMembershipConfig()
	m.ProbeInterval, m.ProbeTimeout, m.SuspicionMult = c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult
	m.PushPullInterval = c.PushPullInterval
	m.MaxClockSkew, m.MaxEntriesPerOwner, m.MaxVoDEntriesPerOwner = c.MaxClockSkew, c.MaxEntriesPerOwner, c.MaxVoDEntriesPerOwner
	m.Meta.Price, m.Meta.TranscodeCost = c.PricePerMbps, c.TranscodeCost
	m.Meta.Region, m.RegionPrices = c.Region, c.RegionPrices
	return m
}

// Planner returns the planner config of this section.
func (c Config) Planner() PlannerConfig {
	p := DefaultPlannerConfig()
	p.DeviceClasses, p.DefaultDevice = c.DeviceClasses, c.DefaultDevice
	p.LastMileCostPerMbps = c.LastMileCostPerMbps
	p.Debounce, p.Interval = c.PlannerDebounce, c.PlannerInterval
	return p
}

// Reconciler returns the reconciler config of this section, with the
// cluster secret relays authenticate with.
func (c Config) Reconciler(secret string) ReconcilerConfig {
	r := DefaultReconcilerConfig()
	r.Secret, r.RelayGrace = secret, c.RelayGrace
	return r
}

// Demand returns the demand tracker config of this section.
func (c Config) Demand() DemandConfig {
	d := DefaultDemandConfig()
	d.DeviceClasses, d.DefaultDevice, d.WatchLease = c.DeviceClasses, c.DefaultDevice, c.WatchLease
	if c.WatchLeasesPerClient > 0 {
		d.LeasesPerClient = c.WatchLeasesPerClient
	}
	return d
}
