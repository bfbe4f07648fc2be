package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

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
