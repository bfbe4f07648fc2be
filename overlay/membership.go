package overlay

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/memberlist"
)

// NodeMeta is what a node tells the cluster about itself. It travels in
// memberlist's node metadata, so it must stay under 512 bytes encoded.
type NodeMeta struct {
	// ID is the node's name.
	ID string `json:"id"`
	// HTTP, RTSP and SRT are the advertised service addresses (host:port).
	HTTP string `json:"http,omitempty"`
	RTSP string `json:"rtsp,omitempty"`
	SRT  string `json:"srt,omitempty"`
}

// Config configures a node's membership.
type Config struct {
	// Name is the node's unique name in the cluster.
	Name string
	// BindAddr is the gossip TCP+UDP listen address ("host:port"; host may
	// be empty for all interfaces).
	BindAddr string
	// Advertise is the address others reach this node at; empty picks one.
	Advertise string
	// Join lists seeds to contact at start. Nodes that do not answer are
	// logged and skipped; the node starts alone if none answers.
	Join []string
	// Key is the cluster encryption key (16, 24 or 32 bytes), nil for none.
	Key []byte
	// Meta is gossiped with the node.
	Meta NodeMeta
	// Logger receives membership events. Default slog.Default().
	Logger *slog.Logger
}

// Member is one node as this node sees it.
type Member struct {
	Name  string   `json:"name"`
	Addr  string   `json:"addr"`
	State string   `json:"state"`
	Meta  NodeMeta `json:"meta"`
}

// Membership is the node's view of the cluster.
type Membership struct {
	ml  *memberlist.Memberlist
	log *slog.Logger

	mu   sync.Mutex
	meta []byte
}

// NewMembership starts gossip on cfg.BindAddr and joins cfg.Join.
func NewMembership(cfg Config) (*Membership, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "gossip")
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip addr %q: %w", cfg.BindAddr, err)
	}
	port, _ := strconv.Atoi(portStr)
	meta, err := json.Marshal(cfg.Meta)
	if err != nil || len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata too large (%d bytes)", len(meta))
	}
	m := &Membership{log: log, meta: meta}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = host
	if host == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise %q: %w", cfg.Advertise, err)
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	} else if mc.BindAddr != "0.0.0.0" {
		mc.AdvertiseAddr = mc.BindAddr
	}
	mc.SecretKey = cfg.Key
	mc.Delegate = m
	mc.Events = &eventLogger{log: log}
	mc.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)

	ml, err := memberlist.Create(mc)
	if err != nil && strings.Contains(err.Error(), "No private IP address found") {
		// A host with only public or loopback addresses: advertise loopback
		// and say so, rather than refusing to start.
		log.Warn("no private IP to advertise for gossip; using 127.0.0.1 (set gossip.advertise)")
		mc.AdvertiseAddr = "127.0.0.1"
		ml, err = memberlist.Create(mc)
	}
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", cfg.BindAddr, err)
	}
	m.ml = ml
	if len(cfg.Join) > 0 {
		n, err := ml.Join(cfg.Join)
		if err != nil {
			log.Warn("join seeds", "seeds", cfg.Join, "joined", n, "err", err)
		} else {
			log.Info("joined cluster", "seeds", cfg.Join, "contacted", n)
		}
	}
	return m, nil
}

// Addr is the address gossip is advertised at.
func (m *Membership) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Members lists the nodes this node knows, itself included, by name.
func (m *Membership) Members() []Member {
	var out []Member
	for _, n := range m.ml.Members() {
		mem := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: stateName(n.State)}
		_ = json.Unmarshal(n.Meta, &mem.Meta)
		out = append(out, mem)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// Close leaves the cluster gracefully and stops gossip.
func (m *Membership) Close() error {
	if m.ml == nil {
		return nil
	}
	err := m.ml.Leave(0)
	if serr := m.ml.Shutdown(); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}

// NodeMeta implements memberlist.Delegate.
func (m *Membership) NodeMeta(limit int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta
}

// NotifyMsg implements memberlist.Delegate; user messages come with the
// overlay's stream and plan gossip.
func (m *Membership) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (m *Membership) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (m *Membership) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (m *Membership) MergeRemoteState(buf []byte, join bool) {}

type eventLogger struct{ log *slog.Logger }

func (e *eventLogger) NotifyJoin(n *memberlist.Node) {
	e.log.Info("node joined", "node", n.Name, "addr", n.Address())
}
func (e *eventLogger) NotifyLeave(n *memberlist.Node) {
	e.log.Info("node left", "node", n.Name, "addr", n.Address())
}
func (e *eventLogger) NotifyUpdate(n *memberlist.Node) {
	e.log.Debug("node updated", "node", n.Name)
}
