// Command panicky is a test plugin whose frame function panics on the
// third frame.
package main

import "github.com/gradient-cdn/gradient/serverlet"

func New(serverlet.Args) (serverlet.Serverlet, error) {
	n := 0
	return serverlet.FrameFunc(func(f *serverlet.Frame) error {
		n++
		if n == 3 {
			var m map[string]int
			m["boom"]++ // a nil-map write: a runtime panic, as a real bug would make
		}
		return nil
	}), nil
}

func main() {}
