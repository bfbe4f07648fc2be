package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gradient-cdn/gradient/overlay"
)

// serveControl serves the demo's control endpoint on 127.0.0.1:ControlPort:
//
//	POST /kill?node=NAME   SIGKILL that node (the dashboard's kill button)
//	GET  /nodes            the nodes: name, pid, region, HTTP address, running
//
// with Access-Control-Allow-Origin: * so that a dashboard served by a node
// (another origin) may call it.
func (d *demo) serveControl() (*http.Server, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(d.cfg.ControlPort)))
	if err != nil {
		return nil, fmt.Errorf("port %d/tcp, needed for the demo's control endpoint: %w", d.cfg.ControlPort, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/kill", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodOptions:
			w.WriteHeader(http.StatusNoContent)
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "POST, OPTIONS")
			http.Error(w, "POST /kill?node=NAME", http.StatusMethodNotAllowed)
			return
		}
		name := r.URL.Query().Get("node")
		err := d.kill(name)
		switch {
		case errors.Is(err, errNoNode):
			http.Error(w, fmt.Sprintf("no node %q", name), http.StatusNotFound)
		case errors.Is(err, errGone):
			http.Error(w, name+" is not running", http.StatusConflict)
		case err != nil:
			d.log.Error("kill", "node", name, "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			d.log.Info("killed by request", "node", name, "from", r.RemoteAddr)
			fmt.Fprintf(w, "killed %s\n", name)
		}
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d.status())
	})
	srv := &http.Server{Handler: cors(mux), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return srv, nil
}

func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Methods", "POST, GET, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		h.ServeHTTP(w, r)
	})
}

// NodeStatus is one node in GET /nodes.
type NodeStatus struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`
	Region  string `json:"region"`
	HTTP    string `json:"http"`
	Running bool   `json:"running"`
}

func (d *demo) status() []NodeStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]NodeStatus, len(d.nodes))
	for i, ch := range d.nodes {
		out[i] = NodeStatus{Name: ch.name, PID: ch.cmd.Process.Pid, Region: d.cfg.region(i),
			HTTP: "http://" + d.httpAddr(i) + "/", Running: !ch.exited()}
	}
	return out
}

// announceUp waits until node 0 sees every node alive and a plan for the
// stream with at least one arc, says so, and then kills cfg.Kill after
// cfg.KillAfter if set.
func (d *demo) announceUp(ctx context.Context) {
	for {
		st, err := d.cluster(ctx, 0)
		if err == nil && d.up(st) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Fprintf(d.cfg.Out, "cluster up: %d nodes alive, %s planned\n", d.cfg.Nodes, Stream)
	if d.cfg.Kill == "" {
		return
	}
	fmt.Fprintf(d.cfg.Out, "killing %s in %v\n", d.cfg.Kill, d.cfg.KillAfter)
	select {
	case <-ctx.Done():
		return
	case <-time.After(d.cfg.KillAfter):
	}
	if err := d.kill(d.cfg.Kill); err != nil {
		d.log.Warn("--kill", "node", d.cfg.Kill, "err", err)
	}
}

func (d *demo) up(st overlay.ClusterStatus) bool {
	alive := 0
	for _, m := range st.Members {
		if m.State == "alive" {
			alive++
		}
	}
	if alive < d.cfg.Nodes {
		return false
	}
	if d.cfg.Nodes == 1 {
		return true
	}
	for _, p := range st.Plans {
		if p.Stream == Stream && len(p.Arcs) > 0 {
			return true
		}
	}
	return false
}

func (d *demo) cluster(ctx context.Context, i int) (overlay.ClusterStatus, error) {
	var st overlay.ClusterStatus
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.httpAddr(i)+"/api/v1/cluster", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("cluster: HTTP %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
