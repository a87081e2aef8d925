package main

import (
	"context"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/bench"
	"github.com/paxosd/paxosd/client"
)

// benchCommand is `paxosd bench`: the bench package's command with the
// paxosd driver alone, on the dev cluster by default, and the client
// commands' TLS, token and cluster-pin flags. The comparison with etcd and
// ZooKeeper is a tool of its own (bench/compare), so that this binary links
// neither of their clients.
func benchCommand() *cli.Command {
	var opt client.Options // the security flags, set by the action before the driver opens
	px := bench.Paxosd
	px.DefaultEndpoints = defaultEndpoints
	px.Open = func(_ context.Context, endpoints []string, timeout time.Duration) (bench.System, error) {
		return bench.NewPaxosd(endpoints, opt, timeout)
	}
	cmd := bench.Command(bench.CommandOptions{Program: "paxosd bench", Drivers: []bench.Driver{px}, EndpointsEnv: []string{"PAXOSD_ENDPOINTS"}})
	cmd.Flags = append(cmd.Flags, tlsClientFlags...)
	run := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		var err error
		if opt, err = clientSecurity(c, client.Options{}); err != nil {
			return err
		}
		return run(c)
	}
	return cmd
}
