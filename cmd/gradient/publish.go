package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/asticode/go-astiav"

	"github.com/gradient-cdn/gradient/ingest/testsrc"
)

func init() {
	register("publish", "publish a test pattern over RTSP or SRT", runPublish)
}

const publishUsage = `usage: gradient publish --testsrc [flags] URL

Publishes a test pattern (testsrc2 with the wall clock, H.264, plus a 440 Hz
AAC tone) until interrupted. Every frame carries a capture-time SEI for
glass-to-glass latency measurements. URL is one of
  rtsp://host:8554/live/cam1
  srt://host:8890?streamid=publish:live/cam1   (or srt://host:8890/live/cam1)

Publishing a file is not built in; use ffmpeg:
  ffmpeg -re -i FILE -c copy -f rtsp URL

flags:
`

// runPublish implements `gradient publish`.
func runPublish(ctx context.Context, args []string) error {
	return publish(ctx, args, os.Stderr)
}

func publish(ctx context.Context, args []string, stderr io.Writer) error {
	def := testsrc.DefaultConfig()
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), publishUsage)
		fs.PrintDefaults()
	}
	useTestsrc := fs.Bool("testsrc", false, "publish the generated test pattern (required)")
	size := fs.String("size", fmt.Sprintf("%dx%d", def.Width, def.Height), "picture size `WxH`")
	fps := fs.Int("fps", def.FPS, "frame rate")
	bitrate := fs.String("bitrate", "2M", "video bitrate in bit/s, e.g. 2M or 800k")
	audio := fs.Bool("audio", def.Audio, "add a 440 Hz AAC tone (48 kHz stereo)")
	preset := fs.String("preset", def.Preset, "libx264 preset")
	verbose := fs.Bool("v", false, "log FFmpeg's messages too")

	// Flags may come before or after the URL.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}

	if !*useTestsrc {
		return errors.New("only --testsrc is supported; use ffmpeg -re -i FILE -c copy -f rtsp URL")
	}
	if len(positional) != 1 {
		fs.Usage()
		return fmt.Errorf("want exactly one URL, got %d arguments", len(positional))
	}
	cfg := def
	cfg.URL = positional[0]
	var err error
	if cfg.Width, cfg.Height, err = testsrc.ParseSize(*size); err != nil {
		return fmt.Errorf("flag --size: %w", err)
	}
	if *fps <= 0 {
		return fmt.Errorf("flag --fps: %d is not a positive frame rate", *fps)
	}
	cfg.FPS = *fps
	if cfg.Bitrate, err = testsrc.ParseBitrate(*bitrate); err != nil {
		return fmt.Errorf("flag --bitrate: %w", err)
	}
	cfg.Audio = *audio
	cfg.Preset = *preset
	p, err := testsrc.New(cfg, slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return err
	}
	if !*verbose {
		// This process only publishes, so FFmpeg's process-wide log level
		// is ours to set: keep libx264's banner off the terminal.
		astiav.SetLogLevel(astiav.LogLevelError)
	}
	return p.Run(ctx)
}
