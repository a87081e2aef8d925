package main

import (
	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/bench"
)

// benchCommand is `paxosd bench`: the bench package's command with the
// paxosd driver alone, on the dev cluster by default. The comparison with
// etcd and ZooKeeper is a tool of its own (bench/compare), so that this
// binary links neither of their clients.
func benchCommand() *cli.Command {
	px := bench.Paxosd
	px.DefaultEndpoints = defaultEndpoints
	return bench.Command(bench.CommandOptions{Program: "paxosd bench", Drivers: []bench.Driver{px}, EndpointsEnv: []string{"PAXOSD_ENDPOINTS"}})
}
