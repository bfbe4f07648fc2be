package overlay

import (
	"fmt"
	"testing"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

func TestThreeNodesGossipAndAgreeOnMembership(t *testing.T) {
	key := []byte("0123456789abcdef")
	var ms []*Membership
	for i := 0; i < 3; i++ {
		cfg := Config{
			Name:     fmt.Sprintf("n%d", i),
			BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")),
			Key:      key,
			Meta:     NodeMeta{ID: fmt.Sprintf("n%d", i), HTTP: fmt.Sprintf("127.0.0.1:%d", 8080+i)},
		}
		if i > 0 {
			cfg.Join = []string{ms[0].Addr()}
		}
		m, err := NewMembership(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	testutil.Eventually(t, 10e9, "every node sees 3 alive members with metadata", func() bool {
		for _, m := range ms {
			mem := m.Members()
			if len(mem) != 3 {
				return false
			}
			for i, x := range mem {
				if x.State != "alive" || x.Meta.HTTP != fmt.Sprintf("127.0.0.1:%d", 8080+i) {
					return false
				}
			}
		}
		return true
	})
}

func TestGossipWithoutClusterKeyIsIgnored(t *testing.T) {
	a, err := NewMembership(Config{Name: "a", BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")), Key: []byte("0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewMembership(Config{Name: "b", BindAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "tcp")), Join: []string{a.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := len(a.Members()); n != 1 {
		t.Fatalf("node with the key sees %d members after a keyless join, want 1", n)
	}
	if n := len(b.Members()); n != 1 {
		t.Fatalf("keyless node sees %d members, want 1", n)
	}
}
