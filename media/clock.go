package media

import "time"

// DurationToTicks converts d to ticks of a clock running at rate Hz (RTP,
// MPEG-TS 90 kHz, audio samples), truncating, without overflowing on long
// sessions.
func DurationToTicks(d time.Duration, rate int64) int64 {
	secs, rem := int64(d/time.Second), int64(d%time.Second)
	return secs*rate + rem*rate/int64(time.Second)
}

// TicksToDuration is the inverse of DurationToTicks.
func TicksToDuration(ticks, rate int64) time.Duration {
	return time.Duration(ticks/rate)*time.Second + time.Duration(ticks%rate)*time.Second/time.Duration(rate)
}
