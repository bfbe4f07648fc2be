package overlay

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"
)

// forgeAs encodes entries as a member m would send them forging them: each
// signed with m's own key (the only one it holds), whatever its owner.
func forgeAs(m *Membership, es ...*entry) []byte {
	for _, e := range es {
		e.signWith(m.state.priv, m.state.pub)
	}
	b, _ := json.Marshal(es)
	return b
}

// signedAs encodes entries signed by m (entries of m's own, normally).
func signedAs(m *Membership, es ...*entry) []byte { return forgeAs(m, es...) }

// setEntryCap sets the per-owner cap of the live kinds.
func setEntryCap(c *MembershipConfig, n int) { c.MaxEntriesPerOwner = n }

// setVoDCap sets the per-owner cap of the VoD kinds.
func setVoDCap(c *MembershipConfig, n int) { c.MaxVoDEntriesPerOwner = n }

// signFresh signs e with a new key it carries, as a member inventing an
// owner would.
func signFresh(e *entry) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	e.signWith(priv, base64.StdEncoding.EncodeToString(pub))
}

type savedKey struct {
	priv ed25519.PrivateKey
	pub  string
}

func saveKey(m *Membership) savedKey {
	m.state.mu.Lock()
	defer m.state.mu.Unlock()
	return savedKey{m.state.priv, m.state.pub}
}

// restoreKey gives m back a saved key and announces it.
func restoreKey(t *testing.T, m *Membership, k savedKey) {
	t.Helper()
	setKey(t, m, k.priv, k.pub)
}

// rotateKey gives m a new signing key and announces it, as a restart
// would (without the restart).
func rotateKey(t *testing.T, m *Membership) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	setKey(t, m, priv, base64.StdEncoding.EncodeToString(pub))
}

func setKey(t *testing.T, m *Membership, priv ed25519.PrivateKey, p string) {
	t.Helper()
	m.state.mu.Lock()
	m.state.priv, m.state.pub = priv, p
	m.state.mu.Unlock()
	m.mu.Lock()
	m.meta.Key = p
	m.metaB, _ = json.Marshal(m.meta)
	m.mu.Unlock()
	if err := m.list().UpdateNode(time.Second); err != nil {
		t.Fatal(err)
	}
}
