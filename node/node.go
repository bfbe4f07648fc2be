package node

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/serverlet"
)

// Node is one running Gradient node.
type Node struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	Hub        *media.Hub
	RTSP       *ingest.RTSPServer
	RTSPReader *egress.RTSPReader
	SRT        *ingest.SRTServer
	WebRTC     *egress.WebRTC
	HLS        *egress.HLS
	Members    *overlay.Membership
	Serverlets *serverlet.Manager
	ov         *nodeOverlay

	httpLn  net.Listener
	httpSrv *http.Server
	started time.Time

	closeOnce sync.Once
	closers   []func() error
}

// New builds a node from cfg and starts every listener. On error everything
// already started is closed again.
func New(cfg Config, log *slog.Logger) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.Name)
	n = &Node{cfg: cfg, log: log, reg: prometheus.NewRegistry(), started: time.Now()}
	self := n // "return nil, err" clears n before this runs
	defer func() {
		if err != nil {
			self.Close()
			n = nil
		}
	}()
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The serverlet manager makes renditions on demand for the hub, so it
	// is built first and given the hub afterwards.
	pluginDir := cfg.Serverlets.PluginDir
	if pluginDir == "" {
		pluginDir = filepath.Join(cfg.Data, "plugins")
	}
	if n.Serverlets, err = serverlet.NewManager(serverlet.ManagerConfig{Ladder: cfg.Serverlets.Ladder, Slots: cfg.Serverlets.Slots,
		IdleStop: cfg.Serverlets.IdleStop, NodeName: cfg.Name, Encoder: serverlet.EncoderConfig{Preset: cfg.Serverlets.Preset},
		PluginDir: pluginDir, Plugins: cfg.Serverlets.Plugins, Registerer: n.reg}, nil, log); err != nil {
		return nil, fmt.Errorf("serverlets: %w", err)
	}
	hc := cfg.Hub
	hc.Renditions = renditions{n}
	if n.Hub, err = media.NewHub(hc, log); err != nil {
		return nil, err
	}
	n.Serverlets.SetHub(n.Hub)
	n.closers = append(n.closers, n.Hub.Close, n.Serverlets.Close)
	n.reg.MustRegister(newHubCollector(n.Hub))

	if n.RTSPReader, err = egress.NewRTSPReader(egress.RTSPReaderConfig{}, n.Hub, log); err != nil {
		return nil, err
	}
	n.closers = append(n.closers, n.RTSPReader.Close)
	if cfg.RTSP.Addr != Off {
		rc := cfg.RTSP
		rc.Read, rc.Authenticate = n.RTSPReader, overlay.RelayAuthenticator(cfg.clusterSecret(), false)
		if n.RTSP, err = ingest.NewRTSPServer(rc, n.Hub, log); err != nil {
			return nil, err
		}
		if err := n.RTSP.Start(); err != nil {
			return nil, err
		}
		n.closers = append(n.closers, n.RTSP.Close)
	}
	if cfg.SRT.Addr != Off {
		if n.SRT, err = ingest.NewSRTServer(cfg.SRT, n.Hub, log); err != nil {
			return nil, err
		}
		if err := n.SRT.Start(); err != nil {
			return nil, err
		}
		n.closers = append(n.closers, n.SRT.Close)
	}
	if n.WebRTC, err = egress.NewWebRTC(egress.WebRTCConfig{ICEUDPAddr: cfg.WebRTC.ICEUDPAddr, AdvertiseIPs: cfg.WebRTC.AdvertiseIPs, MaxSessions: cfg.WebRTC.MaxSessions,
		DisableGSO: !cfg.WebRTC.GSO, Registerer: n.reg}, n.Hub, log); err != nil {
		return nil, err
	}
	if err := n.WebRTC.Start(); err != nil {
		return nil, err
	}
	n.closers = append(n.closers, n.WebRTC.Close)
	if n.HLS, err = egress.NewHLS(egress.HLSConfig{SegmentDuration: cfg.HLS.SegmentDuration, PartDuration: cfg.HLS.PartDuration,
		SegmentCount: cfg.HLS.SegmentCount, IdleTimeout: cfg.HLS.IdleTimeout}, n.Hub, log); err != nil {
		return nil, err
	}
	if err := n.HLS.Start(); err != nil {
		return nil, err
	}
	n.closers = append(n.closers, n.HLS.Close)
	player, err := egress.NewPlayer(egress.PlayerConfig{Title: "Gradient " + cfg.Name}, log)
	if err != nil {
		return nil, err
	}

	n.ov = newNodeOverlay(n)
	if cfg.Gossip.Addr != Off {
		var key []byte
		if cfg.Gossip.Key != "" {
			if key, err = base64.StdEncoding.DecodeString(cfg.Gossip.Key); err != nil {
				return nil, fmt.Errorf("gossip.key: not base64: %w", err)
			}
		}
		if err := n.ov.start(key); err != nil {
			return nil, err
		}
		n.closers = append(n.closers, n.ov.close)
	}

	mux := http.NewServeMux()
	n.routeAPI(mux)
	n.ov.route(mux)
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	mux.Handle("/", &egress.Router{WHEP: n.ov.whepHandler(n.WebRTC), HLS: n.HLS, Player: player, Log: log})
	if n.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return nil, fmt.Errorf("http on %s: %w", cfg.HTTP, err)
	}
	n.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug)}
	go func() {
		if err := n.httpSrv.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("listening", "service", "http", "addr", n.httpLn.Addr().String())
	return n, nil
}

// HTTPAddr is the bound HTTP address.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

// Close stops the node: the HTTP server first (so no new sessions), then
// every component in reverse order of start.
func (n *Node) Close() error {
	var errs []error
	n.closeOnce.Do(func() {
		if n.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := n.httpSrv.Shutdown(ctx); err != nil {
				n.httpSrv.Close()
			}
			cancel()
		}
		for i := len(n.closers) - 1; i >= 0; i-- {
			if err := n.closers[i](); err != nil {
				errs = append(errs, err)
			}
		}
		n.log.Info("node stopped")
	})
	return errors.Join(errs...)
}
