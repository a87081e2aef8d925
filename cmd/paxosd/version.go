package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// versionLine is what paxosd version and paxosd --version print after the
// name: the module version and the VCS revision the binary was built from
// (runtime/debug.ReadBuildInfo; "unknown" where the build recorded none).
func versionLine() string {
	version, revision, modified := "unknown", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
	}
	return fmt.Sprintf("%s, revision %s%s, %s", version, revision, modified, runtime.Version())
}

func init() {
	cli.VersionPrinter = func(c *cli.Context) { fmt.Printf("paxosd %s\n", c.App.Version) }
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:        "version",
		Usage:       "print the version and VCS revision this binary was built from",
		Description: "Example:\n  paxosd version      # the same as paxosd --version",
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			cli.VersionPrinter(c)
			return nil
		},
	}
}
