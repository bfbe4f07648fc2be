package overlay

import "encoding/json"

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
