package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/node"
)

// NewRegistry returns a registry for one node's metrics (Config.Metrics)
// with the Go runtime's and the process's collectors in it. Each node has
// its own, so that several nodes in one process do not collide.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// instrument registers the node's, the transport's and the gRPC server's
// metrics with cfg.Metrics (nothing without it). It returns the node's
// metrics for node.Config and the gRPC server options that count calls.
func (r *Server) instrument() (*node.Metrics, []grpc.ServerOption) {
	if r.cfg.Metrics == nil {
		return nil, nil
	}
	r.cfg.Metrics.MustRegister(linkCollector{r})
	return node.NewMetrics(r.cfg.Metrics), newGRPCMetrics(r.cfg.Metrics).options()
}

func statusCode(err error) string { return status.Code(err).String() }
