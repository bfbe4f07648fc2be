package demo

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gradient-cdn/gradient/internal/whepclient"
)

// viewer is one synthetic viewer: a device class, a home node it enters
// the cluster at through /watch, and a player (WHEP or HLS).
type viewer struct {
	d     *demo
	id    int
	class string
	home  int
	hls   bool
	http  *http.Client
	bytes atomic.Uint64
}

// Device classes: phones at the last node, TVs at the middle one, laptops
// spread over every node; every fourth viewer plays HLS, the others WHEP.
func (d *demo) newViewer(i int) *viewer {
	n := d.cfg.Nodes
	v := &viewer{d: d, id: i, hls: i%4 == 3,
		http: &http.Client{Timeout: 20 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	switch i % 3 {
	case 0:
		v.class, v.home = "phone", n-1
	case 1:
		v.class, v.home = "tv", n/2
	default:
		v.class, v.home = "laptop", (i/3)%n
	}
	return v
}

var errNodeDown = errors.New("node unreachable")

// run watches until ctx ends, starting again after any failure; a viewer
// whose node does not answer goes to the next one (as a person would try
// another link after a node died).
func (v *viewer) run(ctx context.Context) {
	node := v.home
	for ctx.Err() == nil {
		err := v.watch(ctx, node)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNodeDown) {
			node = (node + 1) % v.d.cfg.Nodes
		}
		v.d.log.Debug("viewer stopped, starting again", "viewer", v.id, "class", v.class, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// watch enters at node through /watch/<stream>?device=CLASS, follows its
// redirects to the player page it names, and plays that path.
func (v *viewer) watch(ctx context.Context, node int) error {
	u, err := url.Parse(fmt.Sprintf("http://%s/watch/%s?device=%s", v.d.httpAddr(node), Stream, v.class))
	if err != nil {
		return err
	}
	for hops := 0; ; hops++ {
		if hops > 4 {
			return fmt.Errorf("too many redirects from %s", u)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		resp, err := v.http.Do(req)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") {
				return fmt.Errorf("%w: %v", errNodeDown, err)
			}
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
		}
		next, err := u.Parse(resp.Header.Get("Location"))
		if err != nil {
			return err
		}
		u = next
		if !strings.HasPrefix(u.Path, "/watch/") {
			break
		}
	}
	// u is the player page, /<path>/?device=CLASS.
	page := strings.TrimSuffix(u.Path, "/") + "/"
	if v.hls {
		token := make([]byte, 8)
		rand.Read(token)
		q := url.Values{"device": {v.class}, "viewer": {hex.EncodeToString(token)}}
		return v.playHLS(ctx, u.Scheme+"://"+u.Host+page+"index.m3u8?"+q.Encode())
	}
	return v.playWHEP(ctx, u.Scheme+"://"+u.Host+page+"whep?"+url.Values{"device": {v.class}}.Encode())
}

// playHLS fetches the playlists and the newest segment once a second,
// as a player does, until ctx ends or the node stops answering.
func (v *viewer) playHLS(ctx context.Context, playlist string) error {
	fails := 0
	for ctx.Err() == nil {
		if err := v.hlsRound(ctx, playlist); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if fails++; fails >= 3 {
				return err
			}
		} else {
			fails = 0
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (v *viewer) hlsRound(ctx context.Context, playlist string) error {
	u, _ := url.Parse(playlist)
	for depth := 0; depth < 2; depth++ {
		body, err := v.get(ctx, u.String())
		if err != nil {
			return err
		}
		var uris []string
		variant := false
		sc := bufio.NewScanner(strings.NewReader(string(body)))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			switch {
			case strings.HasPrefix(line, "#EXT-X-STREAM-INF"):
				variant = true
			case line != "" && !strings.HasPrefix(line, "#"):
				uris = append(uris, line)
			}
		}
		if len(uris) == 0 {
			return nil // no segment yet
		}
		if variant {
			if u, err = u.Parse(uris[0]); err != nil {
				return err
			}
			continue
		}
		seg, err := u.Parse(uris[len(uris)-1])
		if err != nil {
			return err
		}
		_, err = v.get(ctx, seg.String())
		return err
	}
	return nil
}

func (v *viewer) get(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("User-Agent", fmt.Sprintf("gradient-demo-viewer/%d", v.id))
	resp, err := v.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	v.bytes.Add(uint64(len(b)))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	return b, nil
}

// playWHEP opens a receive-only WebRTC session (H.264 and Opus) at the
// WHEP endpoint, counts what it receives until the session fails or ctx
// ends, then DELETEs it.
func (v *viewer) playWHEP(ctx context.Context, endpoint string) error {
	sess, err := whepclient.Dial(ctx, endpoint, whepclient.Options{
		CountOnly: true, Loopback: true, Quiet: true, HTTPClient: v.http,
		// Quick to notice a node that died.
		DisconnectedTimeout: 3 * time.Second, FailedTimeout: 6 * time.Second, KeepAliveInterval: time.Second,
	})
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, whepclient.ErrUnreachable):
		return fmt.Errorf("%w: %v", errNodeDown, err)
	case err != nil:
		return err
	}
	defer sess.Close()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var counted uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return errors.New("WebRTC session ended")
		case <-tick.C:
			st := sess.Stats()
			n := st.VideoBytes + st.AudioBytes
			v.bytes.Add(n - counted)
			counted = n
		}
	}
}
