package overlay

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
)

// typicalVoDEntry is about what vod publishes for a ready title with three
// renditions: ≈ 700 bytes of JSON.
func typicalVoDEntry(id string) []byte {
	var rs []string
	for _, h := range []int{1080, 720, 360} {
		rs = append(rs, fmt.Sprintf(`{"name":"%dp","width":%d,"height":%d,"kbps":%d,"codecs":"avc1.64001f,mp4a.40.2"}`, h, h*16/9, h, h*3))
	}
	return []byte(fmt.Sprintf(`{"id":%q,"origin":"n0","title":"Big Trip to the mountains","description":%q,`+
		`"state":"ready","progress":100,"created":"2026-12-01T01:02:03.123456789Z","duration":612000000000,"bytes":123456789,`+
		`"poster":"%s","manifest_digest":"%s","renditions":[%s],"views":12}`,
		id, strings.Repeat("a long way home ", 8), strings.Repeat("ab", 32), strings.Repeat("cd", 32), strings.Join(rs, ",")))
}

func vodIDs(m *Membership) string {
	var s []string
	for _, e := range m.VoDTitles() {
		s = append(s, e.ID+"@"+e.Owner)
	}
	return strings.Join(s, " ")
}

func TestATypicalVoDEntryTravelsByUDPGossip(t *testing.T) {
	data := typicalVoDEntry("abcdefghijklmnop")
	if len(data) < 600 {
		t.Fatalf("typical entry is %d bytes, the test wants one of 600 or more", len(data))
	}
	e := entry{Kind: kindVoDTitle, Key: "abcdefghijklmnop", Owner: "a-rather-long-node-name-07", Version: uint64(time.Now().UnixNano()), Data: data}
	b, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxGossipEntry {
		t.Fatalf("a %d-byte title entry encodes to %d bytes, over the %d a UDP gossip entry may take", len(data), len(b), maxGossipEntry)
	}
}

// TestVoDTitlesOutliveTheirOriginAndARemovalWinsForever: a title entry set
// on n0 reaches n1 and n2; n0 crashes and the others keep it, and a node
// that joins after the crash learns it too; n1 removes it and the removal
// reaches everyone (a restarted n0 included), survives tombstone
// collection, and a late stale copy does not bring the title back.
func TestVoDTitlesOutliveTheirOriginAndARemovalWinsForever(t *testing.T) {
	ms := startCluster(t, 3, func(i int, c *MembershipConfig) { c.TombstoneTTL = 300 * time.Millisecond })
	testutil.Eventually(t, 10*time.Second, "3 nodes alive everywhere", func() bool {
		for _, m := range ms {
			if len(m.Alive()) != 3 {
				return false
			}
		}
		return true
	})
	ch, stop := ms[2].Subscribe()
	defer stop()
	for len(ch) > 0 {
		<-ch
	}
	ms[0].SetVoDTitle("t1", typicalVoDEntry("t1"))
	ms[0].SetVoDTitle("t2", []byte(`{"id":"t2"}`))
	testutil.Eventually(t, 5*time.Second, "both titles of n0 reach n1 and n2", func() bool {
		return vodIDs(ms[1]) == "t1@n0 t2@n0" && vodIDs(ms[2]) == "t1@n0 t2@n0"
	})
	select {
	case <-ch:
	default:
		t.Error("n2's subscriber was not told of the new titles")
	}
	if got := string(ms[2].VoDTitles()[0].Data); got != string(typicalVoDEntry("t1")) {
		t.Errorf("n2 holds t1 as %s", got)
	}
	gen := ms[2].VoDGeneration()
	time.Sleep(time.Second) // RTT reports (every 300 ms) change the state, not VoD's
	if g := ms[2].VoDGeneration(); g != gen {
		t.Errorf("n2's VoD generation moved from %d to %d without a VoD change", gen, g)
	}
	ms[0].SetVoDTitle("t2", []byte(`{"id":"t2","v":2}`))
	testutil.Eventually(t, 5*time.Second, "an updated entry moves n2's VoD generation", func() bool { return ms[2].VoDGeneration() > gen })

	// A crash of the origin: no leave.
	ms[0].Shutdown()
	testutil.Eventually(t, 20*time.Second, "n1 sees n0 dead", func() bool { return memberState(ms[1], "n0") == "dead" })
	time.Sleep(500 * time.Millisecond) // past the tombstone TTL, a gc round
	if got := vodIDs(ms[1]); got != "t1@n0 t2@n0" {
		t.Fatalf("after n0's death n1 lists %q, want both titles still", got)
	}
	c := fastConfig(t, "late", 0.01)
	c.Join = []string{ms[2].Addr()}
	late := startMembership(t, c)
	testutil.Eventually(t, 10*time.Second, "a node that joins after n0's death learns its titles", func() bool {
		return vodIDs(late) == "t1@n0 t2@n0"
	})

	// A removal on n1 reaches everyone and is never collected.
	ms[1].RemoveVoDTitle("t1")
	everyone := []*Membership{ms[1], ms[2], late}
	testutil.Eventually(t, 5*time.Second, "t1's removal reaches every node", func() bool {
		for _, m := range everyone {
			if vodIDs(m) != "t2@n0" || strings.Join(m.VoDRemovals(), " ") != "t1" {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // several tombstone TTLs and gc rounds
	stale, _ := json.Marshal([]*entry{{Kind: kindVoDTitle, Key: "t1", Owner: "n0", Version: uint64(time.Now().UnixNano()), Data: typicalVoDEntry("t1")}})
	late.merge(stale) // a newer copy from a node that missed the removal
	ms[2].SetVoDTitle("t1", []byte(`{"id":"t1"}`))
	for _, m := range everyone {
		if got := vodIDs(m); got != "t2@n0" {
			t.Errorf("%s lists %q after a late copy of the removed t1, want only t2", m.Name(), got)
		}
		if got := strings.Join(m.VoDRemovals(), " "); got != "t1" {
			t.Errorf("%s's removals: %q, want t1", m.Name(), got)
		}
	}

	// n0 comes back (a new life, same name): it learns the removal and
	// keeps t2.
	c0 := fastConfig(t, "n0", 0.01)
	c0.Join = []string{ms[1].Addr()}
	back := startMembership(t, c0)
	testutil.Eventually(t, 10*time.Second, "the restarted n0 knows t1 is removed and t2 is there", func() bool {
		return vodIDs(back) == "t2@n0" && strings.Join(back.VoDRemovals(), " ") == "t1"
	})
	// Its t2 is its own again: it can remove it, and the tombstone and
	// removal reach the others.
	back.RemoveVoDTitle("t2")
	testutil.Eventually(t, 15*time.Second, "n0's removal of t2 reaches every node", func() bool {
		for _, m := range append(everyone, back) {
			if vodIDs(m) != "" || strings.Join(m.VoDRemovals(), " ") != "t1 t2" {
				return false
			}
		}
		return true
	})
}

// TestAVoDRemovalOnAPeerReachesTheOrigin: n1 removes a title n0 owns; n0
// drops its own entry and will not publish it again.
func TestAVoDRemovalOnAPeerReachesTheOrigin(t *testing.T) {
	ms := startCluster(t, 2, nil)
	testutil.Eventually(t, 10*time.Second, "2 nodes alive everywhere", func() bool {
		return len(ms[0].Alive()) == 2 && len(ms[1].Alive()) == 2
	})
	ms[0].SetVoDTitle("t1", typicalVoDEntry("t1"))
	testutil.Eventually(t, 5*time.Second, "n1 has n0's title", func() bool { return vodIDs(ms[1]) == "t1@n0" })
	ms[1].RemoveVoDTitle("t1")
	testutil.Eventually(t, 5*time.Second, "the removal reaches n0, which drops its own entry", func() bool {
		return vodIDs(ms[0]) == "" && strings.Join(ms[0].VoDRemovals(), " ") == "t1"
	})
	ms[0].SetVoDTitle("t1", typicalVoDEntry("t1")) // a late announcement of the origin
	time.Sleep(300 * time.Millisecond)
	for _, m := range ms {
		if got := vodIDs(m); got != "" {
			t.Errorf("%s lists %q after the origin announced the removed title again", m.Name(), got)
		}
	}
}
