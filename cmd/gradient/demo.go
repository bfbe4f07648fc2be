package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/gradient-cdn/gradient/demo"
)

func init() {
	register("demo", "run a cluster of nodes on this host with a test pattern and synthetic viewers", runDemo)
}

const demoUsage = `usage: gradient demo [flags]

Starts --nodes gradient node processes on 127.0.0.1 (demo-0 … in two or three
regions whose links cost 20x a link inside one), publishes the test pattern
into demo-0 as live/demo, and runs --viewers synthetic WHEP and HLS viewers
(phones at the last node, TVs at the middle one, laptops everywhere) that enter
through /watch. Node i listens on BASE+i for each service (RTSP's UDP pair on
rtsp-udp-base+2i and the next). Prints the dashboard and player URLs; Ctrl-C
stops every process and removes every temporary file.

flags:
`

// runDemo implements `gradient demo`.
func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), demoUsage)
		fs.PrintDefaults()
	}
	var c demo.Config
	fs.IntVar(&c.Nodes, "nodes", 5, "number of nodes (1-50)")
	fs.IntVar(&c.Viewers, "viewers", 12, "number of synthetic viewers (0-500)")
	fs.IntVar(&c.HTTPBase, "http-base", 8080, "HTTP port of demo-0; demo-i gets base+i")
	fs.IntVar(&c.RTSPBase, "rtsp-base", 8554, "RTSP port base (TCP)")
	fs.IntVar(&c.RTSPUDPBase, "rtsp-udp-base", 8000, "RTSP UDP transport base, even: demo-i gets base+2i (RTP) and base+2i+1 (RTCP)")
	fs.IntVar(&c.SRTBase, "srt-base", 8890, "SRT port base (UDP)")
	fs.IntVar(&c.RTMPBase, "rtmp-base", 1935, "RTMP port base (TCP)")
	fs.IntVar(&c.ICEBase, "ice-base", 8189, "WebRTC ICE UDP port base")
	fs.IntVar(&c.GossipBase, "gossip-base", 7946, "gossip port base (TCP+UDP)")
	fs.IntVar(&c.ControlPort, "control-port", 0, "port of the demo's control endpoint, POST /kill?node=NAME (default http-base+100)")
	fs.StringVar(&c.Kill, "kill", "", "kill this node (SIGKILL) --kill-after after the cluster is up, to show the repair")
	fs.DurationVar(&c.KillAfter, "kill-after", demo.DefaultKillAfter, "delay before --kill")
	fs.DurationVar(&c.Grace, "grace", demo.DefaultGrace, "how long a node has to stop after SIGTERM before SIGKILL")
	fs.StringVar(&c.Size, "size", "1280x720", "test pattern size WxH")
	fs.IntVar(&c.FPS, "fps", 30, "test pattern frame rate")
	fs.StringVar(&c.Bitrate, "bitrate", "2M", "test pattern bitrate")
	logLevel := fs.String("log-level", "info", "the demo's own log: debug, info, warn or error (nodes log into their temporary folder)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	c.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the gradient binary: %w", err)
	}
	c.Bin = bin
	c.Out = os.Stdout
	return demo.Run(ctx, c)
}
