package overlay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/egress"
	"github.com/gradient-cdn/gradient/ingest"
	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/media"
)

// A node of an older version sends no https/rtsps: its peers use plain
// HTTP and RTSP; a node that sends them gets https:// and rtsps://.
func TestNodeMetaSchemesAndOlderNodes(t *testing.T) {
	var old NodeMeta
	if err := json.Unmarshal([]byte(`{"id":"n0","http":"10.0.0.1:8080","rtsp":"10.0.0.1:8554"}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.HTTPBase() != "http://10.0.0.1:8080" || old.RTSPSource() != "10.0.0.1:8554" {
		t.Fatalf("older node: %q %q, want plain http:// and a bare RTSP address", old.HTTPBase(), old.RTSPSource())
	}
	m := NodeMeta{ID: "n0", HTTP: "10.0.0.1:8080", RTSP: "10.0.0.1:8554", HTTPS: true, RTSPS: true}
	b, _ := json.Marshal(m)
	var back NodeMeta
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.HTTPBase() != "https://10.0.0.1:8080" || back.RTSPSource() != "rtsps://10.0.0.1:8554" {
		t.Fatalf("TLS node: %q %q, want https:// and rtsps://", back.HTTPBase(), back.RTSPSource())
	}
	if (NodeMeta{HTTPS: true, RTSPS: true}).HTTPBase() != "" || (NodeMeta{RTSPS: true}).RTSPSource() != "" {
		t.Fatal("a node without addresses has no base URL")
	}
	plain := m
	plain.HTTPS, plain.RTSPS = false, false
	pb, _ := json.Marshal(plain)
	if strings.Contains(string(pb), "https") || strings.Contains(string(pb), "rtsps") {
		t.Fatalf("plain node metadata %s carries TLS fields: they must be omitted", pb)
	}
	// A relay URL keeps the scheme of its source.
	for src, want := range map[string]string{"127.0.0.1:8554": "rtsp://127.0.0.1:8554/live/cam1", "rtsps://127.0.0.1:8554": "rtsps://127.0.0.1:8554/live/cam1"} {
		u := &upstream{r: &Relay{cfg: RelayConfig{Path: "live/cam1"}}, addr: src}
		if got := u.relayURL(); got != want {
			t.Errorf("source %q: relay URL %q, want %q", src, got, want)
		}
	}
}

// testCA makes a CA and a certificate for 127.0.0.1 it signs.
func testCA(t *testing.T) (pool *x509.CertPool, caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, caFile, certFile, keyFile
}

// A relay pulls from an RTSPS upstream (rtsp.tls_cert) when its source is
// rtsps:// and its TLS trusts the upstream's CA (overlay.peer_ca, loaded
// by Config.PeerTLS); with another CA, or a plain rtsp:// source, it
// publishes nothing.
func TestRelayOverRTSPSVerifiesThePeerCA(t *testing.T) {
	_, caFile, cert, key := testCA(t)
	_, otherCA, _, _ := testCA(t)
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 4})
	uhub := testutil.NewHub(t, media.HubConfig{}, nil)
	t.Cleanup(func() { uhub.Close() })
	rd, err := egress.NewRTSPReader(egress.RTSPReaderConfig{}, uhub, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp"))
	srv, err := ingest.NewRTSPServer(ingest.RTSPConfig{Addr: addr, DisableUDP: true, Read: rd, TLSCert: cert, TLSKey: key,
		Credentials: RelayCredentials(testSecret, false)}, uhub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(testutil.PublishFile(t, uhub, "live/cam1", clip, false))

	peerTLS := func(ca string) *tls.Config {
		c, err := Config{PeerCA: ca}.PeerTLS()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	refused := func(name string, c RelayConfig) {
		hub := testutil.NewHub(t, media.HubConfig{}, nil)
		defer hub.Close()
		r := startRelay(t, c, hub)
		defer r.Close()
		src := c.Sources[0]
		testutil.Eventually(t, 10*time.Second, name+": the relay's attempt fails", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return !r.failedAt[src].IsZero()
		})
		time.Sleep(500 * time.Millisecond)
		if _, ok := hub.Lookup("live/cam1"); ok || r.Live() {
			t.Errorf("%s: the relay published the stream", name)
		}
	}
	refused("another CA", RelayConfig{Path: "live/cam1", Sources: []string{"rtsps://" + addr}, Secret: testSecret, TLS: peerTLS(otherCA)})
	refused("plain RTSP to an RTSPS port", RelayConfig{Path: "live/cam1", Sources: []string{addr}, Secret: testSecret, TLS: peerTLS(caFile)})

	hub := testutil.NewHub(t, media.HubConfig{}, nil)
	defer hub.Close()
	r := startRelay(t, RelayConfig{Path: "live/cam1", Sources: []string{"rtsps://" + addr}, Secret: testSecret, TLS: peerTLS(caFile)}, hub)
	defer r.Close()
	w := watchPath(t, hub, "live/cam1")
	testutil.Eventually(t, 15*time.Second, "decoded 320x240 frames relayed over RTSPS", func() bool {
		s := w.snapshot()
		return s.frames >= 25 && s.width == 320 && s.height == 240
	})

	// The certificate error is recognised (it is what the warning logs).
	c := peerTLS(otherCA)
	c.ServerName = "127.0.0.1"
	conn, err := tls.Dial("tcp", addr, c)
	if err == nil {
		conn.Close()
		t.Fatal("a TLS client with another CA connected")
	}
	if !tlsRefused(err) {
		t.Errorf("tlsRefused(%v) = false", err)
	}
	if _, err := (Config{PeerCA: clip}).PeerTLS(); err == nil {
		t.Error("peer_ca naming a file with no PEM certificate: no error")
	}
}
