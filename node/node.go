package node

import (
	"context"
	"crypto/tls"
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

	"github.com/gradient-cdn/gradient/auth"
	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/connlimit"
	"github.com/gradient-cdn/gradient/media"
	"github.com/gradient-cdn/gradient/overlay"
	"github.com/gradient-cdn/gradient/record"
	"github.com/gradient-cdn/gradient/serverlet"
	"github.com/gradient-cdn/gradient/vod"
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
	RTMP       *ingest.RTMPServer // nil with rtmp.addr off
	WebRTC     *egress.WebRTC
	WHIP       *ingest.WHIPServer // WebRTC publishing on the WebRTC ICE port; nil with whip.max_sessions 0
	HLS        *egress.HLS
	Members    *overlay.Membership // nil with gossip off
	Serverlets *serverlet.Manager
	VoD        *vod.Service

	planner *overlay.Planner    // nil with gossip off
	rec     *overlay.Reconciler // nil with gossip off
	dash    *dashParts          // the dashboard page and its event stream
	demand  *overlay.DemandTracker
	watch   *overlay.Watch
	peerTLS *tls.Config // verifies peers: overlay.peer_ca, else the system pool
	player  *egress.Player
	record  *record.Recorder // live recordings into VoD titles
	auth    *auth.Authorizer // every protocol's credentials and permissions

	starts       *connlimit.Rate  // rendition starts per client a minute; nil: no limit
	startsLogged *connlimit.Every // one "refused" line per client a minute

	httpLn  net.Listener
	httpSrv *http.Server
	started time.Time

	closeOnce sync.Once
	closers   []func() error
}

// New builds a node from cfg and starts it. It builds every component
// first (hub, serverlets, protocol servers, overlay) without I/O, so that
// the hub's observers and rendition providers are in place, then joins the
// cluster and starts the loops, and opens the listeners last: nothing is
// reachable before the node is whole. On error everything already started
// is closed again.
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
	if err := n.build(); err != nil {
		return nil, err
	}
	if err := n.Serverlets.Start(); err != nil { // loads the plugins; names the field: "ladder.gray: …"
		return nil, fmt.Errorf("serverlets.%w", err)
	}
	if err := n.VoD.Start(); err != nil { // opens the catalog, takes up unfinished titles
		return nil, err
	}
	if err := n.startOverlay(); err != nil {
		return nil, err
	}
	n.startDashboard()
	if err := n.listen(); err != nil {
		return nil, err
	}
	return n, nil
}

// build makes every component and wires them, without I/O.
func (n *Node) build() (err error) {
	cfg, log := n.cfg, n.log
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The hub asks rend for a missing rendition; rend is bound to the
	// serverlets and the reconciler (buildOverlay) before anything can
	// read from the hub.
	rend := overlay.NewRenditions()
	hc := cfg.Hub
	hc.Renditions = rend
	if n.Hub, err = media.NewHub(hc, log); err != nil {
		return err
	}
	n.closers = append(n.closers, n.Hub.Close)
	sc := cfg.Serverlets
	if sc.PluginDir == "" {
		sc.PluginDir = filepath.Join(cfg.Data, "plugins")
	}
	sc.NodeName, sc.Registerer = cfg.Name, n.reg
	if n.Serverlets, err = serverlet.NewManager(sc, n.Hub, log); err != nil {
		return fmt.Errorf("serverlets: %w", err)
	}
	n.closers = append(n.closers, n.Serverlets.Close)
	n.reg.MustRegister(newHubCollector(n.Hub))

	if n.RTSPReader, err = egress.NewRTSPReader(egress.RTSPReaderConfig{}, n.Hub, log); err != nil {
		return err
	}
	n.closers = append(n.closers, n.RTSPReader.Close)
	if err := n.buildAuth(); err != nil {
		return err
	}
	n.buildLimits()
	if cfg.RTSP.Addr != Off {
		rc := cfg.RTSP
		rc.Read, rc.Authorize, rc.BasicAuth = n.RTSPReader, n.authorizeRTSP, n.auth.NeedsClearPassword()
		rc.LimitLoopback = cfg.LimitLoopback
		if n.RTSP, err = ingest.NewRTSPServer(rc, n.Hub, log); err != nil {
			return err
		}
	}
	if cfg.SRT.Addr != Off {
		sc := cfg.SRT
		sc.Authorize = n.auth.Authorize
		if n.SRT, err = ingest.NewSRTServer(sc, n.Hub, log); err != nil {
			return err
		}
	}
	if cfg.RTMP.Addr != Off {
		mc := cfg.RTMP
		mc.Authorize = n.auth.Authorize
		if n.RTMP, err = ingest.NewRTMPServer(mc, n.Hub, log); err != nil {
			return err
		}
	}
	wcfg := cfg.WebRTC
	wcfg.Registerer, wcfg.Handler = n.reg, sessionHooks{n}
	if n.WebRTC, err = egress.NewWebRTC(wcfg, n.Hub, log); err != nil {
		return err
	}
	if n.HLS, err = egress.NewHLS(cfg.HLS, n.Hub, log); err != nil {
		return err
	}
	if n.VoD, err = vod.NewService(cfg.VoD, filepath.Join(cfg.Data, "vod"), log); err != nil {
		return fmt.Errorf("vod.%w", err)
	}
	n.closers = append(n.closers, n.VoD.Close)
	// After VoD: it closes first, so recordings finish while the catalog is open.
	if n.record, err = record.New(record.Config{Patterns: cfg.VoD.Record, Grace: cfg.VoD.RecordGrace}, n.Hub, n.VoD, log); err != nil {
		return fmt.Errorf("vod.%w", err)
	}
	n.Hub.Observe(n.record)
	n.closers = append(n.closers, n.record.Close)
	if n.player, err = egress.NewPlayer(egress.PlayerConfig{Title: "Gradient " + cfg.Name}, log); err != nil {
		return err
	}
	if err := n.buildOverlay(rend); err != nil {
		return err
	}
	if err := n.buildDashboard(); err != nil {
		return fmt.Errorf("dashboard.%w", err)
	}
	n.wireVoD()
	n.reg.MustRegister(n.VoD.Collector())
	return nil
}

// listen starts the protocol servers and serves HTTP: the node is
// reachable from here on.
func (n *Node) listen() error {
	cfg, log := n.cfg, n.log
	if n.RTSP != nil {
		if err := n.RTSP.Start(); err != nil {
			return err
		}
		n.closers = append(n.closers, n.RTSP.Close)
	}
	if n.SRT != nil {
		if err := n.SRT.Start(); err != nil {
			return err
		}
		n.closers = append(n.closers, n.SRT.Close)
	}
	if n.RTMP != nil {
		if err := n.RTMP.Start(); err != nil {
			return err
		}
		n.closers = append(n.closers, n.RTMP.Close)
	}
	if err := n.WebRTC.Start(); err != nil {
		return err
	}
	n.closers = append(n.closers, n.WebRTC.Close)
	// whip.max_sessions 0 turns WHIP off: n.WHIP stays nil and the
	// router answers its URLs 404.
	var (
		whipHandler egress.StreamHandler
		err         error
	)
	if cfg.WHIP.MaxSessions > 0 {
		wcfg := cfg.WHIP
		wcfg.Registerer = n.reg
		if n.WHIP, err = ingest.NewWHIPServer(wcfg, n.Hub, n.WebRTC.NewAPI, log); err != nil {
			return err
		}
		// A publisher without H.264 (VP8 or VP9 only) is transcoded here,
		// with the serverlets' encoder settings.
		enc := cfg.Serverlets.Encoder
		n.WHIP.SetTranscoder(func(codec string) (ingest.VideoTranscoder, error) {
			t, err := serverlet.NewIngestTranscoder(codec, enc)
			if err != nil {
				return nil, err
			}
			return t, nil
		})
		if err := n.WHIP.Start(); err != nil {
			return err
		}
		n.closers = append(n.closers, n.WHIP.Close) // before WebRTC's: it shares the ICE port
		whipHandler = n.WHIP
	} else {
		log.Info("whip publishing off (whip.max_sessions: 0)")
	}
	if err := n.HLS.Start(); err != nil {
		return err
	}
	n.closers = append(n.closers, n.HLS.Close)

	mux := http.NewServeMux()
	n.routeAPI(mux)
	n.routeOverlay(mux)
	n.VoD.Route(mux)
	n.record.Route(mux)
	mux.Handle(egress.PlayerAssetsPrefix, egress.PlayerAssets())
	mux.Handle("/", &egress.Router{WHEP: n.WebRTC, WHIP: whipHandler, HLS: n.HLS, Player: n.player, Log: log, Authorize: n.authorizeHTTP})
	if n.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
		return fmt.Errorf("http on %s: %w", cfg.HTTP, err)
	}
	ln := n.httpListener(n.httpLn)
	// A client must send its request head within 10 s, and an idle
	// keep-alive connection is closed after 2 min: nobody holds one open
	// for free. (No whole-request timeouts: uploads and LL-HLS blocking
	// requests take as long as they take.)
	n.httpSrv = &http.Server{Handler: n.guardHTTP(n.guardStarts(mux)), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug)}
	go func() {
		serve := func() error { return n.httpSrv.Serve(ln) }
		if cfg.HTTPTLSCert != "" {
			serve = func() error { return n.httpSrv.ServeTLS(ln, cfg.HTTPTLSCert, cfg.HTTPTLSKey) }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("listening", "service", n.httpScheme(), "addr", n.httpLn.Addr().String())
	return nil
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
