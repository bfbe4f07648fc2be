package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/optimizer"
	"github.com/gradient-cdn/gradient/overlay"
)

func TestStatusCountsLiveMembersAndSaysHowLongAgoOthersWent(t *testing.T) {
	st := overlay.ClusterStatus{Self: "n0", Members: []overlay.Member{
		{Name: "n0", State: "alive"},
		{Name: "n1", State: "suspect"},
		{Name: "n2", State: "dead", Since: time.Now().Add(-12 * time.Second)},
		{Name: "n3", State: "left", Since: time.Now().Add(-3 * time.Minute)},
	}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{"node n0: 2 members up, 2 leaving or gone", "suspect", "dead 12s", "left 3m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusDrawsEachStreamsTreeWithRenditionsTranscodesAndViewers(t *testing.T) {
	st := overlay.ClusterStatus{Self: "n3",
		Streams: []overlay.StreamInfo{{Name: "live/cam1", Root: "n0",
			Ladder: []optimizer.Level{{Name: "source", Kbps: 2500}, {Name: "360p", Kbps: 800}}}},
		Demand: []overlay.Demand{
			{Node: "n3", Stream: "live/cam1", Viewers: map[string]int{"phone": 2}},
			{Node: "n4", Stream: "live/cam1", Viewers: map[string]int{"tv": 1, "phone": 3}},
			{Node: "n5", Stream: "live/cam1", Viewers: map[string]int{"tv": 1}},
		},
		Plans: []overlay.PlanSummary{{Stream: "live/cam1", Root: "n0", Version: 7,
			Arcs: []optimizer.Arc{
				{From: "n1", To: "n4", Levels: []string{"source", "360p"}},
				{From: "n0", To: "n1", Levels: []string{"source"}},
				{From: "n1", To: "n3", Levels: []string{"360p"}},
				{From: "n0", To: "n2", Levels: []string{"source"}},
			},
			Transcodes: []optimizer.Transcode{{Node: "n1", From: "source", To: "360p"}},
		}},
	}
	lines := planTree(st.Plans[0], st)
	want := []string{
		"n0 (root)",
		"├─ n1 [source 2500 kbps]  transcode at n1: source -> 360p",
		"│  ├─ n3 [360p 800 kbps]  viewers phone=2",
		"│  └─ n4 [source+360p 3300 kbps]  viewers phone=3 tv=1",
		"└─ n2 [source 2500 kbps]",
		"not reached: n5 tv=1",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tree:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	var b bytes.Buffer
	printStatus(&b, st)
	if !strings.Contains(b.String(), "plan live/cam1 v7 (root n0)") || !strings.Contains(b.String(), "  │  └─ n4 [source+360p 3300 kbps]") {
		t.Errorf("status output lacks the tree:\n%s", b.String())
	}
}
