// Command grayscale is an example serverlet plugin: it removes the colour
// of a stream by setting both chroma planes to their neutral value.
//
// Build it against the same checkout (and with the same flags, e.g. -race
// for a race-enabled node) as the node that loads it:
//
//	go build -buildmode=plugin -o plugins/grayscale.so ./serverlet/examples/grayscale
//
// and name it in the node's config:
//
//	serverlets:
//	  plugin_dir: plugins
//	  plugins: [grayscale]
//	  ladder:
//	    gray: "grayscale"                   # live/cam1@gray
//	    gray360: "scale x360 800k | grayscale"
package main

import "github.com/gradient-cdn/gradient/serverlet"

// New is the constructor the node looks up. args are the words after the
// serverlet's name in the ladder spec.
func New(args serverlet.Args) (serverlet.Serverlet, error) {
	return serverlet.FrameFunc(func(f *serverlet.Frame) error {
		f.Fill(1, 128) // U
		f.Fill(2, 128) // V
		return nil
	}), nil
}

func main() {}
