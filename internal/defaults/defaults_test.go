package defaults

import (
	"testing"
	"time"
)

type inner struct {
	Preset  string
	Threads int
}

type config struct {
	Addr    string
	Timeout time.Duration
	GSO     bool
	Classes map[string]float64
	Inner   inner
	hidden  int
}

func TestFillTakesZeroFieldsFromTheDefaultsAndKeepsTheRest(t *testing.T) {
	def := config{Addr: ":8080", Timeout: time.Second, GSO: true, Classes: map[string]float64{"tv": 2},
		Inner: inner{Preset: "veryfast", Threads: 1}, hidden: 7}
	c := config{Timeout: 5 * time.Second, Inner: inner{Preset: "fast"}}
	Fill(&c, def)
	if c.Addr != ":8080" || c.Timeout != 5*time.Second || c.Classes["tv"] != 2 {
		t.Errorf("top level: %+v", c)
	}
	if c.GSO {
		t.Error("a boolean left false was set from the defaults: false is a choice")
	}
	if c.Inner != (inner{Preset: "fast", Threads: 1}) {
		t.Errorf("nested struct: %+v, want the given preset and the default threads", c.Inner)
	}
	if c.hidden != 0 {
		t.Error("an unexported field was filled")
	}
}
