package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/node"
)

// logFlags are the log flags of paxosd server and paxosd dev
// (docs/operations.md, "Logs and events").
var logFlags = []cli.Flag{
	&cli.StringFlag{Name: "log-level", EnvVars: []string{"PAXOSD_LOG_LEVEL"}, Value: "info", Usage: "log events at this level and above: debug, info, warn or error"},
	&cli.StringFlag{Name: "log-format", EnvVars: []string{"PAXOSD_LOG_FORMAT"}, Value: "text", Usage: "log lines to stderr as text (key=value) or json (one object per line)"},
	&cli.DurationFlag{Name: "slow-fsync-threshold", EnvVars: []string{"PAXOSD_SLOW_FSYNC_THRESHOLD"}, Value: node.DefaultSlowSyncThreshold,
		Usage: "log a synced write that takes longer than this (\"slow fsync\", at most one line per " + node.SlowSyncEvery.String() + ")"},
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

// newLogger builds the one logger of a paxosd server or dev process from
// --log-level and --log-format, writing to w; the server adds each node's
// ID. A bad value is a usage error.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	level, ok := logLevels[c.String("log-level")]
	if !ok {
		return nil, usageErr(fmt.Errorf("--log-level %q: use debug, info, warn or error", c.String("log-level")))
	}
	if d := c.Duration("slow-fsync-threshold"); d <= 0 {
		return nil, usageErr(fmt.Errorf("--slow-fsync-threshold %v: a duration above 0, e.g. 500ms", d))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.TrimSpace(c.String("log-format")) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErr(fmt.Errorf("--log-format %q: use text or json", c.String("log-format")))
}

// slowSync is --slow-fsync-threshold.
func slowSync(c *cli.Context) time.Duration { return c.Duration("slow-fsync-threshold") }
