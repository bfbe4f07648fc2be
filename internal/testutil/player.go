package testutil

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// PlayerState is what the player page publishes on window.gradientPlayer.
type PlayerState struct {
	Mode      string  `json:"mode"`
	Frames    int     `json:"frames"`
	Width     int     `json:"width"`
	Height    int     `json:"height"`
	Kbps      float64 `json:"kbps"`
	LatencyMs float64 `json:"latencyMs"`
	Error     string  `json:"error"`
}

func (s PlayerState) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// WaitPlayer polls the page's window.gradientPlayer until ok accepts it or
// d passes, then fails the test saying what the player has not done.
func WaitPlayer(t *testing.T, ctx context.Context, d time.Duration, what string, ok func(PlayerState) bool) PlayerState {
	t.Helper()
	deadline := time.Now().Add(d)
	var st PlayerState
	for {
		var raw string
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := chromedp.Run(ectx, chromedp.Evaluate(`JSON.stringify(window.gradientPlayer || {})`, &raw))
		cancel()
		if err == nil {
			st = PlayerState{}
			if err := json.Unmarshal([]byte(raw), &st); err != nil {
				t.Fatalf("window.gradientPlayer %q: %v", raw, err)
			}
			if ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the player has not %s: window.gradientPlayer = %s (last evaluate error: %v)", d, what, st, err)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("browser gone: %v", ctx.Err())
		}
	}
}
