package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// httpMethod asks the operator's backend, MediaMTX-style: POST JSON, any
// 2xx allows. Answers are cached for HTTPCacheTTL.
type httpMethod struct {
	url    string
	client *http.Client
	ttl    time.Duration

	mu    sync.Mutex
	cache map[httpBody]httpAnswer
}

type httpAnswer struct {
	err error
	at  time.Time
}

// httpBody is what the backend receives; comparable, so it keys the cache.
type httpBody struct {
	User     string `json:"user"`
	Pass     string `json:"pass"`
	Token    string `json:"token"`
	IP       string `json:"ip"`
	Action   string `json:"action"`
	Path     string `json:"path"`
	Protocol string `json:"protocol"`
	Query    string `json:"query"`
}

// httpCacheMax bounds the cache; beyond it, expired answers are dropped
// and, if that is not enough, everything.
const httpCacheMax = 10000

func newHTTPMethod(cfg Config) *httpMethod {
	return &httpMethod{url: cfg.HTTPAddress, ttl: cfg.HTTPCacheTTL, cache: map[httpBody]httpAnswer{},
		client: &http.Client{Timeout: cfg.HTTPTimeout,
			// The backend decides; a redirect would send credentials elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (h *httpMethod) authorize(r Request) error {
	if r.VerifyPass != nil && r.Pass == "" {
		// RTSP Digest: the backend would need the clear password.
		return fmt.Errorf("%w: the http method needs the password (RTSP Basic)", ErrBadCredentials)
	}
	b := httpBody{User: r.User, Pass: r.Pass, Token: r.Token, IP: r.IP.String(), Action: r.Action,
		Path: r.Path, Protocol: r.Protocol}
	if r.Action == ActionRead || r.Action == ActionPublish {
		// Keys other than the credentials are the backend's business
		// (a session id of its own, say).
		q := r.Query
		if q.Has("pass") || q.Has("token") {
			q = cloneValues(q)
			q.Del("pass")
			q.Del("token")
		}
		b.Query = q.Encode()
	}
	now := time.Now()
	if h.ttl > 0 {
		h.mu.Lock()
		a, ok := h.cache[b]
		h.mu.Unlock()
		if ok && now.Sub(a.at) < h.ttl {
			return a.err
		}
	}
	err := h.ask(b)
	if h.ttl > 0 && (err == nil || isDecision(err)) {
		h.mu.Lock()
		if len(h.cache) >= httpCacheMax {
			for k, a := range h.cache {
				if now.Sub(a.at) >= h.ttl {
					delete(h.cache, k)
				}
			}
			if len(h.cache) >= httpCacheMax {
				clear(h.cache)
			}
		}
		h.cache[b] = httpAnswer{err: err, at: now}
		h.mu.Unlock()
	}
	return err
}

// isDecision tells the backend's answers (cached) from failures to reach
// it (not cached: the next request tries again).
func isDecision(err error) bool {
	return err == ErrNoCredentials || err == ErrBadCredentials || err == ErrForbidden
}

func (h *httpMethod) ask(b httpBody) error {
	body, _ := json.Marshal(b)
	ctx, cancel := context.WithTimeout(context.Background(), h.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: auth backend: %v", ErrForbidden, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		// Fail closed: an unreachable backend lets nobody in.
		return fmt.Errorf("%w: auth backend unreachable: %v", ErrForbidden, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusUnauthorized && b.User == "" && b.Pass == "" && b.Token == "":
		return ErrNoCredentials
	case resp.StatusCode == http.StatusUnauthorized:
		return ErrBadCredentials
	}
	return ErrForbidden
}

func cloneValues(q map[string][]string) map[string][]string {
	out := make(map[string][]string, len(q))
	for k, v := range q {
		out[k] = v
	}
	return out
}
