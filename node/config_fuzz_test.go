package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzLoadConfig loads arbitrary YAML as the config file. It never
// panics; a refusal is bounded by the file's size (it may quote a value);
// an accepted config validates, encodes (what --print-config does, with
// cfg.Redacted()), and its encoding loads back to the same config; the
// redacted encoding shows none of the secrets.
func FuzzLoadConfig(f *testing.F) {
	def, err := yaml.Marshal(DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(def)
	f.Add([]byte(""))
	f.Add([]byte("name: edge-1\nhttp: 127.0.0.1:8080\nlog_level: debug\n"))
	f.Add([]byte("gossip:\n  addr: 0.0.0.0:7946\n  key: MDEyMzQ1Njc4OWFiY2RlZg==\n  join: [a:1, b:2]\noverlay:\n  secret: overlay-secret-value\nsrt:\n  passphrase: srt-passphrase-value\n"))
	f.Add([]byte("rtsp: off\nsrt: {addr: off}\n"))
	f.Add([]byte("unknown_field: 1\n"))
	f.Add([]byte("name: &a [*a]\n"))
	f.Add([]byte("hub: {reader_queue: -1}\n"))
	f.Add([]byte("name: x\n---\nname: y\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "node.yaml")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(p)
		if err != nil {
			if n := len(err.Error()); n > 1000+8*len(b) {
				t.Fatalf("refusal of %d bytes for a %d-byte file", n, len(b))
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("LoadConfig accepted a config that does not validate: %v", err)
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("accepted config does not encode: %v", err)
		}
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := LoadConfig(p)
		if err != nil {
			t.Fatalf("the encoding of an accepted config does not load: %v\n%s", err, out)
		}
		again, err := yaml.Marshal(back)
		if err != nil || string(again) != string(out) {
			t.Fatalf("config not stable through its encoding (%v):\n%s\n---\n%s", err, out, again)
		}
		red, err := yaml.Marshal(cfg.Redacted())
		if err != nil {
			t.Fatalf("--print-config fails: %v", err)
		}
		bare := cfg
		bare.Gossip.Key, bare.Overlay.Secret, bare.SRT.Passphrase = "", "", ""
		plain, _ := yaml.Marshal(bare)
		for _, s := range []string{cfg.Gossip.Key, cfg.Overlay.Secret, cfg.SRT.Passphrase} {
			if len(s) >= 8 && strings.Contains(string(red), s) && !strings.Contains(string(plain), s) && !strings.Contains("<redacted>", s) {
				t.Fatalf("--print-config shows the secret %q", s)
			}
		}
	})
}
