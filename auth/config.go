package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/gradient-cdn/gradient/internal/defaults"
)

// Method names how credentials are checked.
const (
	// MethodInternal checks the users listed in the config.
	MethodInternal = "internal"
	// MethodHTTP asks the operator's backend (Config.HTTPAddress).
	MethodHTTP = "http"
	// MethodJWT verifies a JSON Web Token signed with Config.JWTKey.
	MethodJWT = "jwt"
)

// Actions a permission grants.
const (
	ActionPublish = "publish" // push a stream (RTSP ANNOUNCE, SRT m=publish)
	ActionRead    = "read"    // watch a stream (WHEP, HLS, player page, /watch, RTSP PLAY)
	ActionAPI     = "api"     // API writes and the API reads that show addresses
	ActionMetrics = "metrics" // GET /metrics
)

// AnyUser in an internal user's `user` matches every client, with or
// without credentials (MediaMTX's spelling, so operators' files carry over).
const AnyUser = "any"

// Config is the `auth` section of a node's configuration; DefaultConfig
// gives the defaults.
type Config struct {
	// Method is internal, http or jwt. Default internal.
	Method string `yaml:"method"`

	// InternalUsers are the users of the internal method. A user's pass
	// is plain text, "sha256:<base64 of SHA-256(pass)>" or an argon2id
	// PHC string "argon2:$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>".
	// Default empty, which means the loopback-friendly defaults of
	// DefaultUsers: anybody may read, publishing, the API and /metrics
	// are for loopback clients only.
	InternalUsers []User `yaml:"internal_users"`

	// HTTPAddress is the operator's URL the http method POSTs each
	// request to, as JSON {user, pass, token, ip, action, path,
	// protocol, query}; a 2xx answer allows it. Required with method http.
	HTTPAddress string `yaml:"http_address"`
	// HTTPTimeout bounds one call to HTTPAddress; no answer in time is a
	// refusal. Default 2 s.
	HTTPTimeout time.Duration `yaml:"http_timeout"`
	// HTTPCacheTTL keeps each answer of the backend this long, so that
	// an HLS player's segment requests do not each cost a call. Default
	// 10 s; negative turns the cache off.
	HTTPCacheTTL time.Duration `yaml:"http_cache_ttl"`

	// JWTKey verifies tokens with method jwt: an HMAC secret (HS256,
	// HS384, HS512) or a PEM public key (RS256…, ES256…, EdDSA), inline
	// or as "file:<path>". Method jwt needs it or JWTJWKS.
	JWTKey string `yaml:"jwt_key"`
	// JWTJWKS is the URL of the issuer's JSON Web Key Set (RSA, EC or
	// Ed25519 public keys, picked by the token's kid), instead of JWTKey.
	// Fetched on first use, every 5 min, and when a token names an
	// unknown key (at most every 30 s).
	JWTJWKS string `yaml:"jwt_jwks"`
	// JWTClaim is the claim that lists a token's permissions, as
	// [{action: read, path: "live/*"}]. Default "gradient_permissions".
	JWTClaim string `yaml:"jwt_claim"`

	// URLSigningKey, when set, lets a viewer in with a signed URL
	// (`?exp=<unix seconds>&sig=<HMAC-SHA256>`, see Sign) for reading the
	// path it was signed for until exp, whatever the method says. At
	// least 16 bytes. Default empty: no signed URLs.
	URLSigningKey string `yaml:"url_signing_key"`
}

// User is one entry of internal_users.
type User struct {
	// User is the name, or "any" for everybody.
	User string `yaml:"user"`
	// Pass is the password (plain, "sha256:…" or "argon2:…"); ignored for "any".
	Pass string `yaml:"pass"`
	// IPs are CIDRs (or single addresses) the user may come from; empty
	// is anywhere.
	IPs []string `yaml:"ips"`
	// Permissions are what the user may do.
	Permissions []Permission `yaml:"permissions"`
}

// Permission grants one action on the paths matching Path.
type Permission struct {
	Action string `yaml:"action" json:"action"`
	// Path is a path.Match pattern ("live/*"); empty matches every path.
	Path string `yaml:"path" json:"path"`
}

// DefaultConfig returns the defaults of every Config field.
func DefaultConfig() Config {
	return Config{
		Method:       MethodInternal,
		HTTPTimeout:  2 * time.Second,
		HTTPCacheTTL: 10 * time.Second,
		JWTClaim:     "gradient_permissions",
	}
}

// DefaultUsers are the internal users when none are configured: today's
// ease on one machine, safe on a network. Anybody may read; publishing,
// the API and /metrics are for loopback clients.
func DefaultUsers() []User {
	loop := []string{"127.0.0.0/8", "::1/128"}
	return []User{
		{User: AnyUser, IPs: loop, Permissions: []Permission{
			{Action: ActionPublish}, {Action: ActionAPI}, {Action: ActionMetrics}}},
		{User: AnyUser, Permissions: []Permission{{Action: ActionRead}}},
	}
}

// Validate checks the fields and names a bad one by its YAML key. Zero
// fields stand for their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch c.Method {
	case MethodInternal:
	case MethodHTTP:
		u, err := url.Parse(c.HTTPAddress)
		if c.HTTPAddress == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http_address: %q must be an http(s) URL with method http", c.HTTPAddress)
		}
	case MethodJWT:
		if (c.JWTKey == "") == (c.JWTJWKS == "") {
			return errors.New("jwt_key: one of jwt_key and jwt_jwks is required with method jwt")
		}
		if c.JWTJWKS != "" {
			u, err := url.Parse(c.JWTJWKS)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("jwt_jwks: %q must be an http(s) URL", c.JWTJWKS)
			}
		} else if _, err := parseJWTKey(c.JWTKey); err != nil {
			return fmt.Errorf("jwt_key: %w", err)
		}
		if c.JWTClaim == "" {
			return errors.New("jwt_claim: must not be empty")
		}
	default:
		return fmt.Errorf("method: %q is not internal, http or jwt", c.Method)
	}
	if c.HTTPTimeout <= 0 {
		return fmt.Errorf("http_timeout: %v must be > 0", c.HTTPTimeout)
	}
	if c.URLSigningKey != "" && len(c.URLSigningKey) < 16 {
		return errors.New("url_signing_key: must be at least 16 bytes")
	}
	for i, u := range c.InternalUsers {
		if err := u.validate(); err != nil {
			return fmt.Errorf("internal_users[%d]: %w", i, err)
		}
	}
	return nil
}

func (u User) validate() error {
	if u.User == "" {
		return errors.New("user: empty (use \"any\" for everybody)")
	}
	if u.User != AnyUser {
		if u.Pass == "" {
			return fmt.Errorf("pass: empty for user %q", u.User)
		}
		if _, err := parsePass(u.Pass); err != nil {
			return fmt.Errorf("pass: %w", err)
		}
	}
	for _, s := range u.IPs {
		if _, err := parsePrefix(s); err != nil {
			return fmt.Errorf("ips: %w", err)
		}
	}
	for j, p := range u.Permissions {
		switch p.Action {
		case ActionPublish, ActionRead, ActionAPI, ActionMetrics:
		default:
			return fmt.Errorf("permissions[%d].action: %q is not publish, read, api or metrics", j, p.Action)
		}
		if _, err := path.Match(p.Path, ""); err != nil {
			return fmt.Errorf("permissions[%d].path: %q: %w", j, p.Path, err)
		}
	}
	return nil
}

// parsePrefix reads a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// withDefaults fills the zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	defaults.Fill(&c, DefaultConfig())
	return c
}
