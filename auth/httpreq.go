package auth

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// CarriedKeys are the query keys that carry a viewer's credentials from one
// URL to the next (a redirect, the player page's WHEP and HLS requests):
// a token, or a signed URL's exp and sig.
var CarriedKeys = []string{"token", "exp", "sig"}

// FromHTTP reads an HTTP request's client address and credentials: Basic
// auth, a Bearer token, or ?token= / ?user=&pass= for players that cannot
// set headers. The client address is the connection's: a node behind a
// proxy sees the proxy (X-Forwarded-For is not trusted).
func FromHTTP(r *http.Request, action, path, protocol string) Request {
	ar := Request{Action: action, Path: path, Protocol: protocol, Query: r.URL.Query()}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ar.IP = ap.Addr().Unmap()
	} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ar.IP, _ = netip.ParseAddr(host)
	}
	if u, p, ok := r.BasicAuth(); ok {
		ar.User, ar.Pass = u, p
	} else if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		ar.Token = strings.TrimSpace(h[7:])
	}
	if ar.Token == "" {
		ar.Token = ar.Query.Get("token")
	}
	if ar.User == "" && ar.Pass == "" {
		ar.User, ar.Pass = ar.Query.Get("user"), ar.Query.Get("pass")
	}
	return ar
}

// HTTPStatus is the answer to a refusal: 401 for missing or wrong
// credentials, 403 for a client that may not do this.
func HTTPStatus(err error) int {
	if errors.Is(err, ErrForbidden) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// RefuseHTTP answers a refused request: 401 with Bearer and Basic
// challenges (a browser then asks for a user and password), or 403.
func RefuseHTTP(w http.ResponseWriter, err error) {
	status := HTTPStatus(err)
	if status == http.StatusUnauthorized {
		w.Header().Add("WWW-Authenticate", `Bearer realm="gradient"`)
		w.Header().Add("WWW-Authenticate", `Basic realm="gradient", charset="UTF-8"`)
	}
	msg := "forbidden"
	if status == http.StatusUnauthorized {
		msg = "credentials required"
		if errors.Is(err, ErrBadCredentials) {
			msg = "wrong credentials"
		}
	}
	http.Error(w, msg, status)
}

// CarryQuery adds the CarriedKeys of from to the URL target (a redirect's
// Location), so that a viewer's token or signature follows the redirect.
func CarryQuery(target string, from url.Values) string {
	u, err := url.Parse(target)
	if err != nil {
		return target
	}
	q := u.Query()
	added := false
	for _, k := range CarriedKeys {
		if v := from.Get(k); v != "" && !q.Has(k) {
			q.Set(k, v)
			added = true
		}
	}
	if !added {
		return target
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// CarryRedirects wraps h so that the Location of every redirect it answers
// keeps the request's CarriedKeys: /watch sends the viewer on to an edge
// or to the player page, with the credentials it came with.
func CarryRedirects(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&carryWriter{ResponseWriter: w, q: r.URL.Query()}, r)
	})
}

type carryWriter struct {
	http.ResponseWriter
	q url.Values
}

func (c *carryWriter) WriteHeader(code int) {
	if code >= 300 && code < 400 {
		if loc := c.Header().Get("Location"); loc != "" {
			c.Header().Set("Location", CarryQuery(loc, c.q))
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (c *carryWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
