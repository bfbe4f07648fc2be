package media

import (
	"testing"
	"time"
)

func TestClockConversionsDoNotOverflowAndRoundTripTicks(t *testing.T) {
	week := 7 * 24 * time.Hour
	if got := DurationToTicks(week, 90000); got != int64(week/time.Second)*90000 {
		t.Fatalf("a week at 90 kHz = %d ticks", got)
	}
	for _, rate := range []int64{90000, 48000, 44100, 30} {
		for _, ticks := range []int64{0, 1, rate - 1, rate, 123456789} {
			// Half a tick past the truncated duration converts back exactly.
			d := TicksToDuration(ticks, rate) + time.Second/time.Duration(rate)/2
			if back := DurationToTicks(d, rate); back != ticks {
				t.Errorf("rate %d: %d ticks → %v → %d", rate, ticks, d, back)
			}
		}
	}
	if d := TicksToDuration(-90000, 90000); d != -time.Second {
		t.Fatalf("-90000 ticks = %v, want -1s", d)
	}
}
