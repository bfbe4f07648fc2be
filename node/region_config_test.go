package node

import (
	"strings"
	"testing"

	"github.com/gradient-cdn/gradient/overlay"
)

// TestLoadConfigReadsRegionPrices: the README's example of overlay.region
// and overlay.region_prices loads, reaches the membership config, and a
// bad entry is named by its key.
func TestLoadConfigReadsRegionPrices(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `overlay:
  region: eu-west
  region_prices:
    - {a: eu-west, b: us-east, price: 4}
    - {a: eu-west, b: eu-west, price: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := overlay.RegionPrices{{A: "eu-west", B: "us-east", Price: 4}, {A: "eu-west", B: "eu-west", Price: 1}}
	m := cfg.Overlay.Membership()
	if m.Meta.Region != "eu-west" || len(m.RegionPrices) != 2 || m.RegionPrices[0] != want[0] || m.RegionPrices[1] != want[1] {
		t.Errorf("membership region %q prices %+v, want eu-west %+v", m.Meta.Region, m.RegionPrices, want)
	}
	if got := m.RegionPrices.Multiplier("us-east", "eu-west"); got != 4 {
		t.Errorf("us-east–eu-west multiplier %v, want 4", got)
	}
	for body, field := range map[string]string{
		"overlay:\n  region: EU\n":                                                                     "overlay.region",
		"overlay:\n  region_prices:\n    - {a: eu, b: us, price: 0}\n":                                 "overlay.region_prices[0].price",
		"overlay:\n  region_prices:\n    - {a: eu, b: us, price: 2}\n    - {a: us, b: eu, price: 2}\n": "overlay.region_prices[1]",
		"overlay:\n  region_prices:\n    - {a: eu, b: us, cost: 2}\n":                                  "cost",
	} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("config %q: error %v, want one naming %s", body, err, field)
		}
	}
}
