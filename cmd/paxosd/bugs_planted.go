//go:build paxosd_bugs

package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/instance"
)

// bugFlags adds the hidden --bug flag: this binary was built with
// -tags paxosd_bugs, for the fault tests (e2e/chaos) that must catch each
// planted bug. Never build a production binary with that tag.
var bugFlags = []cli.Flag{
	&cli.StringFlag{Name: "bug", Hidden: true, Usage: "plant a known protocol bug (test builds only): " + strings.Join(bugNames(), ", ")},
}

func bugNames() []string {
	var names []string
	for _, b := range instance.Bugs() {
		names = append(names, b.String())
	}
	return names
}

// plantedBug is the bug --bug names, BugNone without the flag.
func plantedBug(c *cli.Context) (instance.Bug, error) {
	name := c.String("bug")
	if name == "" {
		return instance.BugNone, nil
	}
	for _, b := range instance.Bugs() {
		if b.String() == name {
			return b, nil
		}
	}
	return instance.BugNone, fmt.Errorf("--bug %q: known bugs are %s", name, strings.Join(bugNames(), ", "))
}
