// Package auth is the one authorizer every protocol asks: RTSP and SRT
// publishers, WHEP and HLS viewers, the API and /metrics. A Config picks
// the method (internal users, the operator's HTTP backend, or JWT); the
// protocols only extract credentials and turn the typed errors into their
// own answers (401/403, an SRT rejection code).
package auth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"path"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors of Authorize. Protocols answer ErrNoCredentials and
// ErrBadCredentials with a challenge (HTTP 401, RTSP 401, SRT
// REJX_UNAUTHORIZED) and ErrForbidden with a refusal (403, REJX_FORBIDDEN).
var (
	// ErrNoCredentials: the client sent none, and anonymous clients may
	// not do this.
	ErrNoCredentials = errors.New("auth: credentials required")
	// ErrBadCredentials: the credentials (or token) are wrong.
	ErrBadCredentials = errors.New("auth: wrong credentials")
	// ErrForbidden: the client is known but may not do this here.
	ErrForbidden = errors.New("auth: forbidden")
)

// Request is one thing a client wants to do.
type Request struct {
	Action   string     // ActionPublish, ActionRead, ActionAPI or ActionMetrics
	Path     string     // stream path ("live/cam1"); the URL path for api and metrics
	IP       netip.Addr // the client's address
	Protocol string     // "rtsp", "srt", "webrtc", "hls", "http": for logs and the http method
	User     string
	Pass     string // clear password (Basic, SRT stream id, ?pass=); "" with Digest
	Token    string // Bearer or ?token=
	Query    url.Values

	// VerifyPass, set for RTSP Digest, reports whether the client proved
	// it knows pass without sending it. Only plain-text internal
	// passwords can be checked this way.
	VerifyPass func(pass string) bool
}

// HasCredentials reports whether the client offered any.
func (r Request) HasCredentials() bool {
	return r.User != "" || r.Pass != "" || r.Token != "" || r.VerifyPass != nil
}

// method is one way of deciding.
type method interface {
	authorize(r Request) error
}

// Authorizer decides on Requests with the configured method; it logs each
// refusal once per client and action a minute. Safe for concurrent use.
type Authorizer struct {
	cfg  Config
	m    method
	sign []byte
	log  *slog.Logger

	refusals *prometheus.CounterVec

	mu     sync.Mutex
	logged map[string]time.Time // "ip action" → last refusal logged
	now    func() time.Time
}

// refusalLogEvery is how often one client's refusals of one action are logged.
const refusalLogEvery = time.Minute

// New builds an Authorizer from cfg (zero fields take DefaultConfig's).
func New(cfg Config, log *slog.Logger) (*Authorizer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("auth.%w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Authorizer{cfg: cfg, log: log.With("component", "auth"), logged: map[string]time.Time{}, now: time.Now,
		refusals: newRefusals()}
	if cfg.URLSigningKey != "" {
		a.sign = []byte(cfg.URLSigningKey)
	}
	var err error
	switch cfg.Method {
	case MethodInternal:
		users := cfg.InternalUsers
		if len(users) == 0 {
			users = DefaultUsers()
		}
		a.m, err = newInternal(users)
	case MethodHTTP:
		a.m = newHTTPMethod(cfg)
	case MethodJWT:
		a.m, err = newJWTMethod(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return a, nil
}

// Config returns the configuration in use (defaults filled in).
func (a *Authorizer) Config() Config { return a.cfg }

// Authorize returns nil when r may go on, or an error wrapping
// ErrNoCredentials, ErrBadCredentials or ErrForbidden.
func (a *Authorizer) Authorize(r Request) error {
	r.IP = r.IP.Unmap()
	var signErr error
	if r.Action == ActionRead && a.sign != nil && r.Query.Has("sig") {
		// A valid signed URL is enough: the operator's site vouched for it.
		if signErr = a.verifySigned(r.Path, r.Query.Get("exp"), r.Query.Get("sig")); signErr == nil {
			return nil
		}
	}
	err := a.m.authorize(r)
	if err != nil {
		if signErr != nil {
			// The link is what the viewer came with: say what is wrong with it.
			err = signErr
		}
		a.refused(r, err)
	}
	return err
}

// refused logs a refusal once per client and action a minute: a player
// retrying every second, or a scanner, must not flood the log.
func (a *Authorizer) refused(r Request, err error) {
	a.refusals.WithLabelValues(r.Action, r.Protocol, reason(err)).Inc()
	key := r.IP.String() + " " + r.Action
	now := a.now()
	a.mu.Lock()
	last, ok := a.logged[key]
	if ok && now.Sub(last) < refusalLogEvery {
		a.mu.Unlock()
		return
	}
	if len(a.logged) >= 10000 {
		for k, t := range a.logged {
			if now.Sub(t) >= refusalLogEvery {
				delete(a.logged, k)
			}
		}
	}
	a.logged[key] = now
	a.mu.Unlock()
	a.log.Info("request refused", "action", r.Action, "path", logText(r.Path), "protocol", r.Protocol,
		"ip", r.IP.String(), "user", logText(r.User), "err", err)
}

// NeedsClearPassword reports whether some credential can be checked only
// against the password itself (a hashed internal password, the http and
// jwt methods), which RTSP Digest never sends: RTSP must then challenge
// with Basic.
func (a *Authorizer) NeedsClearPassword() bool {
	in, ok := a.m.(*internal)
	if !ok {
		return true
	}
	for _, u := range in.users {
		if u.pass.hashed() {
			return true
		}
	}
	return false
}

// OpenDoors lists, in words, what anybody may do without credentials from
// anywhere; the node logs each as a warning at start.
func (a *Authorizer) OpenDoors() []string {
	in, ok := a.m.(*internal)
	if !ok {
		return nil
	}
	var out []string
	for _, u := range in.users {
		if u.name != AnyUser {
			continue
		}
		scope := "from anywhere"
		if len(u.ips) > 0 {
			scope = "from " + fmt.Sprint(u.ips)
			loopOnly := true
			for _, p := range u.ips {
				if !p.Addr().IsLoopback() {
					loopOnly = false
				}
			}
			if loopOnly {
				continue
			}
		}
		for _, p := range u.perms {
			pat := p.Path
			if pat == "" {
				pat = "every path"
			}
			out = append(out, fmt.Sprintf("anybody may %s %s without credentials %s", p.Action, pat, scope))
		}
	}
	return out
}

// logText bounds a client-chosen string before it is logged.
func logText(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// matchPath reports whether pattern (path.Match syntax, "" for any)
// matches p.
func matchPath(pattern, p string) bool {
	if pattern == "" {
		return true
	}
	ok, _ := path.Match(pattern, p)
	return ok
}

// internal is the internal method: the configured users.
type internal struct {
	users []internalUser
}

type internalUser struct {
	name  string
	pass  password
	ips   []netip.Prefix
	perms []Permission
}

func newInternal(users []User) (*internal, error) {
	in := &internal{}
	for i, u := range users {
		if err := u.validate(); err != nil {
			return nil, fmt.Errorf("internal_users[%d]: %w", i, err)
		}
		iu := internalUser{name: u.User, perms: u.Permissions}
		if u.User != AnyUser {
			iu.pass, _ = parsePass(u.Pass)
		}
		for _, s := range u.IPs {
			p, _ := parsePrefix(s)
			iu.ips = append(iu.ips, p)
		}
		in.users = append(in.users, iu)
	}
	return in, nil
}

func (u *internalUser) fromAllowedIP(ip netip.Addr) bool {
	if len(u.ips) == 0 {
		return true
	}
	for _, p := range u.ips {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (u *internalUser) permits(action, p string) bool {
	for _, perm := range u.perms {
		if perm.Action == action && matchPath(perm.Path, p) {
			return true
		}
	}
	return false
}

// authorize lets r in when one user entry grants it: "any" entries for
// everybody, named entries for a client that proves the password.
func (in *internal) authorize(r Request) error {
	proved := false
	for i := range in.users {
		u := &in.users[i]
		if u.name != AnyUser {
			if r.User != u.name || !u.pass.check(r.Pass, r.VerifyPass) {
				continue
			}
			proved = true
		}
		if u.permits(r.Action, r.Path) && u.fromAllowedIP(r.IP) {
			return nil
		}
	}
	switch {
	case !r.HasCredentials():
		return ErrNoCredentials
	case !proved:
		// An unknown user is answered as a wrong password: saying which
		// names exist would help a scanner.
		return ErrBadCredentials
	}
	return ErrForbidden
}

// eq compares secrets in constant time.
func eq(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
