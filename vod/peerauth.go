package vod

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Chunk requests between nodes (GET /internal/vod/chunks/{hex}) carry
//
//	Authorization: Gradient-Peer node=<name>,ts=<unix seconds>,sig=<hex>
//
// where sig is HMAC-SHA256(K, node "\n" ts "\n" method "\n" path) and K is
// HMAC-SHA256(secret, "gradient/vod-peer/v1"). The cluster secret itself
// never leaves the node and is never used directly as a key: K is bound to
// this one purpose, so a signature made here cannot be replayed against
// another use of the same secret (gossip encryption, the admin API), and
// the label's version lets the scheme change without a new secret.
//
// The timestamp bounds replay to PeerAuthSkew either side of the
// verifier's clock. What is signed is the path only, not the query: a
// replayed request within that window can only fetch the same public,
// content-addressed chunk again.
//
// A cluster without a secret is open: SignPeerRequest adds nothing and
// VerifyPeerRequest accepts every request. That is for a single node or a
// private test network, not for nodes that talk across the internet.

// PeerAuthScheme is the Authorization scheme of inter-node requests.
const PeerAuthScheme = "Gradient-Peer"

// PeerAuthSkew is how far a request's timestamp may be from the
// verifier's clock.
const PeerAuthSkew = 60 * time.Second

// peerKeyLabel derives the inter-node chunk key from the cluster secret.
const peerKeyLabel = "gradient/vod-peer/v1"

// ErrPeerAuth is wrapped by every error of VerifyPeerRequest.
var ErrPeerAuth = errors.New("peer authentication failed")

// peerKey is K = HMAC-SHA256(secret, label).
func peerKey(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(peerKeyLabel))
	return m.Sum(nil)
}

func peerSignature(key []byte, node, ts, method, path string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(node + "\n" + ts + "\n" + method + "\n" + path))
	return m.Sum(nil)
}

// SignPeerRequest sets r's Authorization header for node, signing its
// method and URL path at the current time. With an empty secret it does
// nothing (see VerifyPeerRequest). A node name must not contain ',' or
// '=' or white space: such a header would not verify.
func SignPeerRequest(r *http.Request, secret, node string) {
	if secret == "" {
		return
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sig := peerSignature(peerKey(secret), node, ts, r.Method, r.URL.Path)
	r.Header.Set("Authorization", PeerAuthScheme+" node="+node+",ts="+ts+",sig="+hex.EncodeToString(sig))
}

// VerifyPeerRequest checks r's Gradient-Peer Authorization against secret
// at time now and returns the node that signed it. Errors wrap ErrPeerAuth
// and say what was wrong (missing header, stale timestamp, bad signature);
// the signature is compared in constant time. With an empty secret the
// cluster is open: every request is accepted, and the node is the one the
// header names, if any (unverified).
func VerifyPeerRequest(r *http.Request, secret string, now time.Time) (node string, err error) {
	auth := r.Header.Get("Authorization")
	fields, ok := parsePeerAuth(auth)
	if secret == "" {
		return fields["node"], nil
	}
	if auth == "" {
		return "", fmt.Errorf("%w: no Authorization header", ErrPeerAuth)
	}
	if !ok {
		return "", fmt.Errorf("%w: Authorization is not %s node=…,ts=…,sig=…", ErrPeerAuth, PeerAuthScheme)
	}
	node, ts, sigHex := fields["node"], fields["ts"], fields["sig"]
	sec, perr := strconv.ParseInt(ts, 10, 64)
	if perr != nil {
		return node, fmt.Errorf("%w: node %q: bad timestamp %q", ErrPeerAuth, node, ts)
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > PeerAuthSkew || skew < -PeerAuthSkew {
		return node, fmt.Errorf("%w: node %q: timestamp %s off by %s (more than %s): clocks out of step or a replay",
			ErrPeerAuth, node, ts, skew.Round(time.Second), PeerAuthSkew)
	}
	sig, herr := hex.DecodeString(sigHex)
	want := peerSignature(peerKey(secret), node, ts, r.Method, r.URL.Path)
	if herr != nil || !hmac.Equal(sig, want) {
		return node, fmt.Errorf("%w: node %q: signature does not match (another cluster secret, or the request was altered)", ErrPeerAuth, node)
	}
	return node, nil
}

// parsePeerAuth splits "Gradient-Peer node=a,ts=1,sig=ff"; ok is false
// unless the scheme is right and node, ts and sig are all present.
func parsePeerAuth(h string) (map[string]string, bool) {
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, PeerAuthScheme) {
		return nil, false
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fields, false
		}
		fields[k] = v
	}
	return fields, fields["node"] != "" && fields["ts"] != "" && fields["sig"] != ""
}
