// Command compare is the side-by-side comparison's load generator: the
// bench package's driver (the one behind `paxosd bench`) with etcd's and
// ZooKeeper's clients as well as paxosd's, so that bench/sidebyside.sh runs
// the same workloads against all three from one binary. It is a module of
// its own, so that the paxosd binary links neither etcd's client nor
// go-zookeeper. Build it from the repository's root with
//
//	go -C bench/compare build -o "$PWD/compare" .
//
// and run, for example,
//
//	./compare --target etcd --endpoints 127.0.0.1:2379 --clients 16 --duration 20s
//
// `./compare --help` lists the flags, which are `paxosd bench`'s plus
// --target.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/bench"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

const examples = `  compare --target paxosd --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  compare --target etcd --endpoints 127.0.0.1:2379 --clients 64 --duration 30s -w json
  compare --target zookeeper --endpoints 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183 --batch 100`

func newApp() *cli.App {
	cmd := bench.Command(bench.CommandOptions{
		Program:  "compare",
		Drivers:  []bench.Driver{bench.Paxosd, etcdDriver, zkDriver},
		Examples: examples,
	})
	return &cli.App{
		Name:            "compare",
		Usage:           cmd.Usage,
		UsageText:       "compare --target paxosd|etcd|zookeeper --endpoints HOST:PORT,... [flags]",
		Description:     cmd.Description,
		Flags:           cmd.Flags,
		Action:          cmd.Action,
		HideHelpCommand: true,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%w (see compare --help)", err)
		},
	}
}
