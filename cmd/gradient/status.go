package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gradient-cdn/gradient/overlay"
)

func init() {
	register("status", "show the cluster as a node sees it: members, RTTs, streams, plans, relays", runStatus)
}

// runStatus implements `gradient status`.
func runStatus(ctx context.Context, args []string) error {
	return status(ctx, args, os.Stdout, os.Stderr)
}

func status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "http://127.0.0.1:8080", "HTTP address of any node")
	asJSON := fs.Bool("json", false, "print the raw /api/v1/cluster JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	base := strings.TrimSuffix(*addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/cluster", nil)
	if err != nil {
		return err
	}
	// Credentials in the address (http://ops:pw@host:8080) go as Basic
	// auth, and never into a message.
	if u := req.URL.User; u != nil {
		pass, _ := u.Password()
		req.SetBasicAuth(u.Username(), pass)
		req.URL.User = nil
		base = strings.TrimSuffix(req.URL.String(), "/api/v1/cluster")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cluster status from %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("cluster status from %s: HTTP %d: the node wants a user with the api permission: --addr http://USER:PASS@HOST:8080",
			base, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cluster status from %s: HTTP %d: %s", base, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st overlay.ClusterStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("cluster status from %s: %w", base, err)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(out io.Writer, st overlay.ClusterStatus) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	up := 0
	for _, m := range st.Members {
		if m.State == "alive" || m.State == "suspect" {
			up++
		}
	}
	fmt.Fprintf(tw, "node %s: %d members up", st.Self, up)
	if gone := len(st.Members) - up; gone > 0 {
		fmt.Fprintf(tw, ", %d leaving or gone", gone)
	}
	fmt.Fprint(tw, "\n\n")
	fmt.Fprintln(tw, "MEMBER\tSTATE\tGOSSIP\tHTTP\tRTSP\tRTT ms\tPRICE/Mbps\tTRANSCODES")
	for _, m := range st.Members {
		state := m.State
		if !m.Since.IsZero() {
			state += " " + time.Since(m.Since).Round(time.Second).String() // dead 12s
		}
		rtt := "-"
		if m.RTTMillis > 0 {
			rtt = fmt.Sprintf("%.2f", m.RTTMillis)
		}
		self := ""
		if m.Name == st.Self {
			self = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%g\t%d/%d\n", m.Name, self, state, m.Addr, m.Meta.HTTP, m.Meta.RTSP, rtt,
			m.Meta.Price, m.TranscodeUsed, m.Meta.TranscodeSlots)
	}
	fmt.Fprintln(tw)
	if len(st.Streams) == 0 {
		fmt.Fprintln(tw, "no live stream")
	} else {
		fmt.Fprintln(tw, "STREAM\tROOT\tLADDER\tVIEWERS")
		for _, s := range st.Streams {
			var ladder []string
			for _, l := range s.Ladder {
				ladder = append(ladder, fmt.Sprintf("%s(%g)", l.Name, l.Kbps))
			}
			var viewers []string
			for _, d := range st.Demand {
				if d.Stream != s.Name {
					continue
				}
				classes := make([]string, 0, len(d.Viewers))
				for c := range d.Viewers {
					classes = append(classes, c)
				}
				sort.Strings(classes)
				for _, c := range classes {
					viewers = append(viewers, fmt.Sprintf("%s:%s=%d", d.Node, c, d.Viewers[c]))
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Root, strings.Join(ladder, " "), strings.Join(viewers, " "))
		}
	}
	for _, p := range st.Plans {
		fmt.Fprintf(tw, "\nplan %s v%d (root %s)", p.Stream, p.Version, p.Root)
		if p.Cost != nil {
			fmt.Fprintf(tw, ": total %.4f, links %.4f, regret %.4f", p.Cost.Total, p.Cost.Links, p.Cost.Regret)
		}
		fmt.Fprintln(tw)
		for _, l := range planTree(p, st) {
			fmt.Fprintln(tw, "  "+l)
		}
	}
	fmt.Fprintln(tw)
	if len(st.Relays) == 0 {
		fmt.Fprintln(tw, "no relay on this node")
	} else {
		fmt.Fprintln(tw, "RELAY\tFROM\tLIVE\tSWITCHES")
		for _, r := range st.Relays {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", r.Path, r.Source, r.Live, r.Switches)
		}
	}
	fmt.Fprintf(tw, "\ngossip state bytes in/out: %d/%d\n", st.GossipBytesIn, st.GossipBytesOut)
	tw.Flush()
}

// planTree draws a plan's delivery tree, one node a line, children
// indented below their parent: the renditions (and their bitrate) the arc
// into the node carries, the transcodes the node runs and its viewers by
// device class. Nodes with viewers that the tree does not reach follow.
func planTree(p overlay.PlanSummary, st overlay.ClusterStatus) []string {
	kbps := map[string]float64{}
	for _, s := range st.Streams {
		if s.Name == p.Stream {
			for _, l := range s.Ladder {
				kbps[l.Name] = l.Kbps
			}
		}
	}
	viewers := map[string]string{}
	for _, d := range st.Demand {
		if d.Stream != p.Stream {
			continue
		}
		classes := make([]string, 0, len(d.Viewers))
		for c := range d.Viewers {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		var parts []string
		for _, c := range classes {
			parts = append(parts, fmt.Sprintf("%s=%d", c, d.Viewers[c]))
		}
		viewers[d.Node] = strings.Join(parts, " ")
	}
	kids := map[string][]int{}
	for i, a := range p.Arcs {
		kids[a.From] = append(kids[a.From], i)
	}
	for _, k := range kids {
		sort.Slice(k, func(i, j int) bool { return p.Arcs[k[i]].To < p.Arcs[k[j]].To })
	}
	describe := func(node string) string {
		var s string
		for _, x := range p.Transcodes {
			if x.Node == node {
				s += fmt.Sprintf("  transcode at %s: %s -> %s", node, x.From, x.To)
			}
		}
		if v := viewers[node]; v != "" {
			s += "  viewers " + v
		}
		return s
	}
	reached := map[string]bool{p.Root: true}
	lines := []string{p.Root + " (root)" + describe(p.Root)}
	var walk func(node, indent string)
	walk = func(node, indent string) {
		for i, ai := range kids[node] {
			a := p.Arcs[ai]
			if reached[a.To] {
				continue // a malformed plan with a cycle: draw each node once
			}
			reached[a.To] = true
			branch, next := "├─ ", "│  "
			if i == len(kids[node])-1 {
				branch, next = "└─ ", "   "
			}
			var rends []string
			total := 0.0
			for _, l := range a.Levels {
				rends = append(rends, l)
				total += kbps[l]
			}
			rate := ""
			if total > 0 {
				rate = fmt.Sprintf(" %.0f kbps", total)
			}
			lines = append(lines, fmt.Sprintf("%s%s%s [%s%s]%s", indent, branch, a.To, strings.Join(rends, "+"), rate, describe(a.To)))
			walk(a.To, indent+next)
		}
	}
	walk(p.Root, "")
	var unreached []string
	for node, v := range viewers {
		if !reached[node] {
			unreached = append(unreached, node+" "+v)
		}
	}
	sort.Strings(unreached)
	for _, u := range unreached {
		lines = append(lines, "not reached: "+u)
	}
	return lines
}
