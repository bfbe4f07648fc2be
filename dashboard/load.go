package dashboard

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Meter turns the node's cumulative counters (process CPU time, bytes
// published into each stream) into rates over the interval between two
// calls.
type Meter struct {
	mu      sync.Mutex
	at      time.Time
	cpu     time.Duration
	lastCPU float64
	bytes   map[string]uint64
	at2     map[string]time.Time
	kbps    map[string]float64
}

// NewMeter builds a meter.
func NewMeter() *Meter {
	// The first CPU() measures from here: a page opened on a fresh
	// dashboard shows the node's CPU at once, not 0 % for one interval.
	return &Meter{bytes: map[string]uint64{}, at2: map[string]time.Time{}, kbps: map[string]float64{}, at: time.Now(), cpu: processCPU()}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CPU returns the process's CPU use since the previous call (1 = one
// core busy), the first call since NewMeter. Calls less than 500 ms
// apart return the previous figure.
func (m *Meter) CPU() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, cpu := time.Now(), processCPU()
	el := now.Sub(m.at)
	if el < 500*time.Millisecond && (m.lastCPU != 0 || el < 50*time.Millisecond) {
		return m.lastCPU
	}
	m.lastCPU = (cpu - m.cpu).Seconds() / el.Seconds()
	m.at, m.cpu = now, cpu
	return m.lastCPU
}

// Kbps returns the bitrate of path from its cumulative byte count since
// the previous call for path (the first call returns fallback, e.g. the
// average since publishing). Calls less than 500 ms apart return the
// previous figure. Forget the paths that are gone with Keep.
func (m *Meter) Kbps(path string, bytes uint64, fallback float64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	at, ok := m.at2[path]
	if !ok || bytes < m.bytes[path] {
		m.at2[path], m.bytes[path], m.kbps[path] = now, bytes, fallback
		return fallback
	}
	el := now.Sub(at)
	if el < 500*time.Millisecond {
		return m.kbps[path]
	}
	k := float64(bytes-m.bytes[path]) * 8 / 1000 / el.Seconds()
	m.at2[path], m.bytes[path], m.kbps[path] = now, bytes, k
	return k
}

// Keep forgets every path but those given.
func (m *Meter) Keep(paths []string) {
	keep := make(map[string]bool, len(paths))
	for _, p := range paths {
		keep[p] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.at2 {
		if !keep[p] {
			delete(m.at2, p)
			delete(m.bytes, p)
			delete(m.kbps, p)
		}
	}
}

// LoadAvg is the host's 1-minute load average (0 where /proc is not).
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// Cores is the number of CPUs the process may use.
func Cores() int { return runtime.NumCPU() }
