package testutil

import (
	"log/slog"
	"testing"

	"github.com/gradient-cdn/gradient/media"
)

// NewHub builds a hub for a test (media.NewHub), failing the test when cfg
// is refused.
func NewHub(t testing.TB, cfg media.HubConfig, log *slog.Logger) *media.Hub {
	t.Helper()
	h, err := media.NewHub(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
