package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"time"
)

// jwks holds the public keys of a JWKS URL by key id. It fetches them on
// first use, again every jwksRefresh, and when a token names a key id it
// does not know (the issuer rotated its keys), at most every jwksMinFetch.
type jwks struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	keys    map[string]any
	fetched time.Time
	now     func() time.Time
}

const (
	jwksRefresh  = 5 * time.Minute
	jwksMinFetch = 30 * time.Second
)

func newJWKS(url string, timeout time.Duration) *jwks {
	return &jwks{url: url, client: &http.Client{Timeout: timeout}, now: time.Now}
}

// key returns the public key named kid ("" when the set has one key).
func (j *jwks) key(kid string) (any, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	stale := j.keys == nil || now.Sub(j.fetched) >= jwksRefresh
	k, ok := j.lookup(kid)
	if stale || (!ok && now.Sub(j.fetched) >= jwksMinFetch) {
		// Holding the lock: one fetch at a time, the others wait for it.
		keys, err := j.fetch()
		j.fetched = now
		if err != nil && j.keys == nil {
			return nil, err
		}
		if err == nil {
			j.keys = keys
		}
		k, ok = j.lookup(kid)
	}
	if !ok {
		return nil, fmt.Errorf("no key %q in %s", kid, j.url)
	}
	return k, nil
}

func (j *jwks) lookup(kid string) (any, bool) {
	if kid == "" && len(j.keys) == 1 {
		for _, k := range j.keys {
			return k, true
		}
	}
	k, ok := j.keys[kid]
	return k, ok
}

func (j *jwks) fetch() (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: HTTP %d", j.url, resp.StatusCode)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks %s: %w", j.url, err)
	}
	keys := map[string]any{}
	for _, k := range set.Keys {
		if k.Use == "enc" {
			continue
		}
		pk, err := k.publicKey()
		if err != nil {
			continue // a key of a kind we do not verify with; the others still work
		}
		keys[k.Kid] = pk
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwks %s: no usable signing key", j.url)
	}
	return keys, nil
}

// jwk is one JSON Web Key (RFC 7517) of kind RSA, EC or OKP (Ed25519).
type jwk struct {
	Kty, Kid, Use, Crv, N, E, X, Y string
}

func (k jwk) publicKey() (any, error) {
	b := func(s string) *big.Int {
		v, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(v) == 0 {
			return nil
		}
		return new(big.Int).SetBytes(v)
	}
	switch k.Kty {
	case "RSA":
		n, e := b(k.N), b(k.E)
		if n == nil || e == nil || !e.IsInt64() || n.BitLen() < 2048 {
			return nil, errors.New("bad RSA key (or under 2048 bits)")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		var c elliptic.Curve
		switch k.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("curve %q", k.Crv)
		}
		x, y := b(k.X), b(k.Y)
		if x == nil || y == nil || !c.IsOnCurve(x, y) {
			return nil, errors.New("bad EC point")
		}
		return &ecdsa.PublicKey{Curve: c, X: x, Y: y}, nil
	case "OKP":
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("key type %q", k.Kty)
}
