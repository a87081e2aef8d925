//go:build !paxosd_bugs

package main

import (
	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/instance"
)

// bugFlags are the server's flags for planting bugs: none in a normal
// build. A binary built with -tags paxosd_bugs has a hidden --bug flag
// (bugs_planted.go), for the fault tests that must catch each bug.
var bugFlags []cli.Flag

// plantedBug is the bug to plant: never one in a normal build.
func plantedBug(*cli.Context) (instance.Bug, error) { return instance.BugNone, nil }
