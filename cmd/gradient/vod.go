package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/gradient-cdn/gradient/vod"
)

func init() {
	register("vod", "on-demand titles: vod add FILE, vod ls, vod rm ID, vod record STREAM", runVoD)
}

func runVoD(ctx context.Context, args []string) error {
	return vodCmd(ctx, args, os.Stdout, os.Stderr)
}

const vodUsage = `usage:
  gradient vod add [--node URL] [--title T] [--description D] [--no-wait] FILE
  gradient vod ls  [--node URL] [--json] [SEARCH]
  gradient vod rm  [--node URL] ID
  gradient vod record [--node URL] [--title T] STREAM   (prints the title id)
  gradient vod stop   [--node URL] ID                   (ends a recording)`

func vodCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, vodUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("vod "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	node := fs.String("node", "http://127.0.0.1:8080", "HTTP address of any node")
	switch args[0] {
	case "add":
		title := fs.String("title", "", "the title (default: the file's name)")
		desc := fs.String("description", "", "a description")
		noWait := fs.Bool("no-wait", false, "print the id once uploaded, without waiting for packaging")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, vodUsage)
			return flag.ErrHelp
		}
		return vodAdd(ctx, nodeURL(*node), fs.Arg(0), *title, *desc, *noWait, stdout, stderr)
	case "ls":
		asJSON := fs.Bool("json", false, "print the raw JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return vodList(ctx, nodeURL(*node), strings.Join(fs.Args(), " "), *asJSON, stdout)
	case "rm":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, vodUsage)
			return flag.ErrHelp
		}
		id := fs.Arg(0)
		if _, err := vodDo(ctx, http.MethodDelete, nodeURL(*node)+"/api/v1/vod/titles/"+url.PathEscape(id), nil, nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "removed", id)
		return nil
	case "record", "stop":
		title := fs.String("title", "", "the title (default: the stream's name and the time)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, vodUsage)
			return flag.ErrHelp
		}
		return vodRecord(ctx, nodeURL(*node), args[0], fs.Arg(0), *title, stdout)
	default:
		fmt.Fprintln(stderr, vodUsage)
		return flag.ErrHelp
	}
}

func nodeURL(s string) string {
	s = strings.TrimSuffix(s, "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return s
}

// vodDo makes one API call and decodes a JSON answer into out (when set).
func vodDo(ctx context.Context, method, u string, body io.Reader, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, err
	}
	if f, ok := body.(*progressReader); ok {
		req.ContentLength = f.size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, fmt.Errorf("%s %s: HTTP %d: %s", method, u, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, u, err)
		}
	}
	return resp.StatusCode, nil
}

// progressReader counts the bytes read and, on a terminal, draws a bar.
type progressReader struct {
	r    io.Reader
	size int64
	read atomic.Int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read.Add(int64(n))
	return n, err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func bar(pct int) string {
	pct = max(0, min(100, pct))
	return "[" + strings.Repeat("#", pct/5) + strings.Repeat(".", 20-pct/5) + fmt.Sprintf("] %3d%%", pct)
}

func vodAdd(ctx context.Context, base, file, title, desc string, noWait bool, stdout, stderr io.Writer) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if title == "" {
		title = strings.TrimSuffix(st.Name(), ".mp4")
	}
	tty := isTerminal(stderr)
	pr := &progressReader{r: f, size: st.Size()}
	done := make(chan struct{})
	if tty {
		go func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					fmt.Fprintf(stderr, "\ruploading  %s", bar(int(pr.read.Load()*100/max(1, pr.size))))
				}
			}
		}()
	}
	q := url.Values{"title": {title}, "description": {desc}}
	var added struct {
		ID    string    `json:"id"`
		State vod.State `json:"state"`
	}
	_, err = vodDo(ctx, http.MethodPost, base+"/api/v1/vod/titles?"+q.Encode(), pr, &added)
	close(done)
	if err != nil {
		return err
	}
	if tty {
		fmt.Fprintf(stderr, "\ruploading  %s\n", bar(100))
	}
	if noWait {
		fmt.Fprintln(stdout, added.ID)
		return nil
	}
	for {
		var t vod.TitleJSON
		if _, err := vodDo(ctx, http.MethodGet, base+"/api/v1/vod/titles/"+added.ID, nil, &t); err != nil {
			return err
		}
		switch t.State {
		case vod.StateReady:
			if tty {
				fmt.Fprintf(stderr, "\rpackaging  %s\n", bar(100))
			}
			fmt.Fprintf(stderr, "ready: %s/vod/%s/ (%.1f s, %d bytes)\n", base, t.ID, t.Duration, t.Bytes)
			fmt.Fprintln(stdout, t.ID)
			return nil
		case vod.StateFailed:
			return fmt.Errorf("title %s failed: %s", t.ID, t.Error)
		}
		if tty {
			fmt.Fprintf(stderr, "\rpackaging  %s", bar(t.Progress))
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), fmt.Errorf("title %s is still processing on the node", added.ID))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func vodList(ctx context.Context, base, search string, asJSON bool, stdout io.Writer) error {
	u := base + "/api/v1/vod/titles"
	if search != "" {
		u += "?" + url.Values{"q": {search}}.Encode()
	}
	var list struct {
		Titles []vod.TitleJSON `json:"titles"`
	}
	if _, err := vodDo(ctx, http.MethodGet, u, nil, &list); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tDURATION\tVIEWS\tTITLE")
	for _, t := range list.Titles {
		state := string(t.State)
		if t.State == vod.StateProcessing {
			state = fmt.Sprintf("%s %d%%", state, t.Progress)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0fs\t%d\t%s\n", t.ID, state, t.Duration, t.Views, t.Title)
	}
	return tw.Flush()
}

// vodRecord starts recording a live stream into a title (and prints its
// id) or stops a recording (and prints the title's state).
func vodRecord(ctx context.Context, base, op, arg, title string, stdout io.Writer) error {
	if op == "stop" {
		var out struct {
			ID       string  `json:"id"`
			State    string  `json:"state"`
			Duration float64 `json:"duration_seconds"`
		}
		if _, err := vodDo(ctx, http.MethodPost, base+"/api/v1/vod/record/"+url.PathEscape(arg)+"/stop", nil, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s %.1fs\n", out.ID, out.State, out.Duration)
		return nil
	}
	body, _ := json.Marshal(map[string]string{"stream": arg, "title": title})
	var out struct {
		ID string `json:"id"`
	}
	if _, err := vodDo(ctx, http.MethodPost, base+"/api/v1/vod/record", strings.NewReader(string(body)), &out); err != nil {
		return err
	}
	fmt.Fprintln(stdout, out.ID)
	return nil
}
