package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sign returns the query ("exp=<unix>&sig=<base64url HMAC-SHA256>") that
// lets a viewer read streamPath until exp, for an operator's web site to
// append to a player, HLS or WHEP URL. It errors when the node has no
// url_signing_key.
func (a *Authorizer) Sign(streamPath string, exp time.Time) (string, error) {
	if a.sign == nil {
		return "", fmt.Errorf("auth: sign %s: no url_signing_key configured", streamPath)
	}
	return SignQuery(a.sign, streamPath, exp), nil
}

// SignQuery is Sign with an explicit key, for an operator's tools: the
// query authorizing reads of streamPath until exp.
func SignQuery(key []byte, streamPath string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	q := url.Values{"exp": {e}, "sig": {signature(key, streamPath, e)}}
	return q.Encode()
}

// signature is HMAC-SHA256(key, path "\n" exp), base64url without padding.
// The newline keeps "live/a" + "1" apart from "live/a1" + "".
func signature(key []byte, streamPath, exp string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(streamPath + "\n" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verifySigned checks a signed URL's exp and sig for streamPath. A
// rendition ("live/cam1@360p") is covered by its stream's signature: /watch
// sends a viewer of a signed link to the rendition its device wants.
func (a *Authorizer) verifySigned(streamPath, exp, sig string) error {
	streamPath, _, _ = strings.Cut(streamPath, "@")
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: signed URL without a valid exp", ErrBadCredentials)
	}
	want := signature(a.sign, streamPath, exp)
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return fmt.Errorf("%w: signed URL signature does not match %s", ErrBadCredentials, logText(streamPath))
	}
	if a.now().Unix() > e {
		return fmt.Errorf("%w: signed URL expired at %s", ErrForbidden, time.Unix(e, 0).UTC().Format(time.RFC3339))
	}
	return nil
}
