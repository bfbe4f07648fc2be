package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/asticode/go-astiav"
	"gopkg.in/yaml.v3"

	"github.com/gradient-cdn/gradient/node"
)

func init() {
	register("node", "run a Gradient node (RTSP/SRT/RTMP in, WebRTC/HLS/RTSP out)", runNode)
}

// runNode implements `gradient node`: the defaults, then the --config file,
// then the flags given on the command line (a flag that is set wins over
// the file).
func runNode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file (every field optional; see --print-config)")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	name := fs.String("name", "", "node name (default: host name)")
	httpAddr := fs.String("http", "", "HTTP listen address: API, WHEP, HLS, player (default :8080)")
	rtspAddr := fs.String("rtsp", "", "RTSP listen address, or off (default :8554)")
	rtspUDP := fs.String("rtsp-udp", "", "RTSP UDP transport addresses RTP,RTCP (RTP port even, RTCP the next), or off for TCP only (default :8000,:8001)")
	srtAddr := fs.String("srt", "", "SRT listen address (UDP), or off (default :8890)")
	rtmpAddr := fs.String("rtmp", "", "RTMP listen address, or off (default :1935)")
	iceAddr := fs.String("ice-udp", "", "WebRTC ICE UDP address shared by all sessions (default :8189)")
	gossipAddr := fs.String("gossip", "", "gossip listen address (TCP+UDP), or off (default 127.0.0.1:7946; beyond loopback needs gossip.key)")
	join := fs.String("join", "", "comma-separated seed nodes host:port to join")
	data := fs.String("data", "", "data folder (default ./data)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := node.DefaultConfig()
	if *configPath != "" {
		var err error
		if cfg, err = node.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(flagName string, dst *string, v string) {
		if set[flagName] {
			*dst = v
		}
	}
	override("name", &cfg.Name, *name)
	override("http", &cfg.HTTP, *httpAddr)
	override("rtsp", &cfg.RTSP.Addr, *rtspAddr)
	if set["rtsp-udp"] {
		var err error
		if cfg.RTSP.UDPRTPAddr, cfg.RTSP.UDPRTCPAddr, err = parseRTSPUDP(*rtspUDP); err != nil {
			return err
		}
	}
	override("srt", &cfg.SRT.Addr, *srtAddr)
	override("rtmp", &cfg.RTMP.Addr, *rtmpAddr)
	override("ice-udp", &cfg.WebRTC.ICEUDPAddr, *iceAddr)
	override("gossip", &cfg.Gossip.Addr, *gossipAddr)
	override("data", &cfg.Data, *data)
	override("log-level", &cfg.LogLevel, *logLevel)
	if set["join"] {
		cfg.Gossip.Join = nil
		for _, j := range strings.Split(*join, ",") {
			if j = strings.TrimSpace(j); j != "" {
				cfg.Gossip.Join = append(cfg.Gossip.Join, j)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *printConfig {
		return yaml.NewEncoder(os.Stdout).Encode(cfg.Redacted())
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	routeFFmpegLog(log, level)
	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	scheme := "http"
	if cfg.HTTPTLSCert != "" {
		scheme = "https"
	}
	log.Info("node ready", "name", cfg.Name, "player", fmt.Sprintf("%s://%s/live/<stream>/", scheme, displayAddr(n.HTTPAddr())))
	<-ctx.Done()
	log.Info("shutting down", "reason", context.Cause(ctx))
	return n.Close()
}

// displayAddr turns a bound address like "[::]:8080" into one a person can open.
func displayAddr(a string) string {
	for _, p := range []string{"[::]:", "0.0.0.0:"} {
		if strings.HasPrefix(a, p) {
			return "localhost:" + strings.TrimPrefix(a, p)
		}
	}
	return a
}

// routeFFmpegLog sends FFmpeg's own log lines (serverlets' encoders and
// filters) to the node's log as component=ffmpeg, warnings and errors only
// unless the node logs at debug, instead of FFmpeg's banners on stderr.
func routeFFmpegLog(log *slog.Logger, level slog.Level) {
	ff := log.With("component", "ffmpeg")
	if level <= slog.LevelDebug {
		astiav.SetLogLevel(astiav.LogLevelInfo)
	} else {
		astiav.SetLogLevel(astiav.LogLevelWarning)
	}
	astiav.SetLogCallback(func(c astiav.Classer, l astiav.LogLevel, _, msg string) {
		msg = strings.TrimSpace(msg)
		if msg == "" {
			return
		}
		switch {
		case l <= astiav.LogLevelError:
			ff.Error(msg)
		case l <= astiav.LogLevelWarning:
			ff.Warn(msg)
		default:
			ff.Debug(msg)
		}
	})
}
