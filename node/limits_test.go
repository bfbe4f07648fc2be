package node

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// The per-client limits and the HTTPS keys load from a file, with their
// defaults when left out, and a half-set or unreadable TLS pair is named.
func TestLoadConfigLimitsAndHTTPS(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "name: a\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPMaxConnsPerIP != 256 || cfg.RTSP.MaxConnsPerIP != 64 || cfg.Serverlets.MaxStartsPerClient != 8 || cfg.LimitLoopback {
		t.Fatalf("defaults: http %d rtsp %d starts %d loopback %v", cfg.HTTPMaxConnsPerIP, cfg.RTSP.MaxConnsPerIP,
			cfg.Serverlets.MaxStartsPerClient, cfg.LimitLoopback)
	}
	cfg, err = LoadConfig(writeConfig(t, "name: a\nhttp_max_conns_per_ip: 9\nlimit_loopback: true\nrtsp: {max_conns_per_ip: 3}\nserverlets: {max_starts_per_client: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPMaxConnsPerIP != 9 || cfg.RTSP.MaxConnsPerIP != 3 || cfg.Serverlets.MaxStartsPerClient != 2 || !cfg.LimitLoopback {
		t.Fatalf("loaded: %+v", cfg)
	}
	for body, want := range map[string]string{
		"name: a\nhttp_tls_cert: /x.pem\n":                             "http_tls_cert and http_tls_key",
		"name: a\nhttp_tls_cert: /nope.pem\nhttp_tls_key: /nope.key\n": "http_tls_cert, http_tls_key",
	} {
		if _, err := LoadConfig(writeConfig(t, body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %q", body, err, want)
		}
	}
}

// startingPath names the stream of exactly the requests that may start a
// rendition.
func TestStartingPathIsWHEPOffersAndPlaylistsOfRenditions(t *testing.T) {
	for _, c := range []struct{ method, url, want string }{
		{"POST", "/live/cam1@360p/whep", "live/cam1@360p"},
		{"GET", "/live/cam1@360p/index.m3u8", "live/cam1@360p"},
		{"GET", "/live/cam1@360p/video.m3u8", "live/cam1@360p"},
		{"GET", "/live/cam1/index.m3u8", ""},
		{"POST", "/live/cam1/whep", ""},
		{"GET", "/live/cam1@360p/seg1.m4s", ""},
		{"DELETE", "/live/cam1@360p/whep/abc", ""},
		{"GET", "/live/cam1@360p/whep", ""},
	} {
		if got := startingPath(httptest.NewRequest(c.method, c.url, nil)); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.method, c.url, got, c.want)
		}
	}
}
