//go:build !race

package serverlet

// RaceEnabled tells whether this binary was built with -race; a plugin it
// loads must be built with -race too.
const RaceEnabled = false
