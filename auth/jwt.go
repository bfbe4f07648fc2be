package auth

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// jwtMethod verifies a token signed with the configured key and reads its
// permissions from the configured claim.
type jwtMethod struct {
	key    any   // []byte (HMAC) or a public key; nil with a JWKS
	set    *jwks // the issuer's keys, with jwt_jwks
	claim  string
	parser *jwt.Parser
}

// parseJWTKey reads jwt_key: "file:<path>" or inline; a PEM public key or
// an HMAC secret (at least 32 bytes, as HS256 wants).
func parseJWTKey(s string) (any, error) {
	if name, ok := strings.CutPrefix(s, "file:"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		s = string(b)
	}
	if strings.Contains(s, "-----BEGIN") {
		b := []byte(s)
		if k, err := jwt.ParseRSAPublicKeyFromPEM(b); err == nil {
			return k, nil
		}
		if k, err := jwt.ParseECPublicKeyFromPEM(b); err == nil {
			return k, nil
		}
		if k, err := jwt.ParseEdPublicKeyFromPEM(b); err == nil {
			return k, nil
		}
		return nil, errors.New("PEM is not an RSA, ECDSA or Ed25519 public key")
	}
	if len(s) < 32 {
		return nil, errors.New("an HMAC secret must be at least 32 bytes (or give a PEM public key)")
	}
	return []byte(s), nil
}

var asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func newJWTMethod(cfg Config) (*jwtMethod, error) {
	if cfg.JWTJWKS != "" {
		// A JWKS holds public keys only: no HMAC algorithm is accepted.
		return &jwtMethod{set: newJWKS(cfg.JWTJWKS, cfg.HTTPTimeout), claim: cfg.JWTClaim,
			parser: jwt.NewParser(jwt.WithValidMethods(asymmetricAlgs), jwt.WithExpirationRequired())}, nil
	}
	key, err := parseJWTKey(cfg.JWTKey)
	if err != nil {
		return nil, fmt.Errorf("jwt_key: %w", err)
	}
	var algs []string
	switch key.(type) {
	case []byte:
		algs = []string{"HS256", "HS384", "HS512"}
	case crypto.PublicKey:
		algs = asymmetricAlgs
	}
	// The algorithms follow the key's kind: a token cannot pick HS256
	// with the RSA public key as its secret.
	return &jwtMethod{key: key, claim: cfg.JWTClaim,
		parser: jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithExpirationRequired())}, nil
}

func (j *jwtMethod) authorize(r Request) error {
	tok := r.Token
	if tok == "" && r.Pass != "" {
		// RTSP, SRT and players that can only send a password send the
		// token there (MediaMTX's convention).
		tok = r.Pass
	}
	if tok == "" {
		return ErrNoCredentials
	}
	claims := jwt.MapClaims{}
	keyFunc := func(t *jwt.Token) (any, error) {
		if j.set == nil {
			return j.key, nil
		}
		kid, _ := t.Header["kid"].(string)
		return j.set.key(kid)
	}
	if _, err := j.parser.ParseWithClaims(tok, claims, keyFunc); err != nil {
		return fmt.Errorf("%w: token: %v", ErrBadCredentials, err)
	}
	raw, err := json.Marshal(claims[j.claim])
	if err != nil {
		return fmt.Errorf("%w: token claim %s: %v", ErrForbidden, j.claim, err)
	}
	var perms []Permission
	if err := json.Unmarshal(raw, &perms); err != nil {
		return fmt.Errorf("%w: token claim %s is not a list of {action, path}", ErrForbidden, j.claim)
	}
	for _, p := range perms {
		if p.Action == r.Action && matchPath(p.Path, r.Path) {
			return nil
		}
	}
	return fmt.Errorf("%w: token does not grant %s on %s", ErrForbidden, r.Action, logText(r.Path))
}
