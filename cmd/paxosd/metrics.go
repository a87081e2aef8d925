package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/server"
)

// metricsFlags are paxosd server's monitoring flags.
var metricsFlags = []cli.Flag{
	&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics (/metrics), liveness (/healthz: 200 while the process runs) and readiness (/readyz: 200 while the node knows a master and is within " +
		fmt.Sprint(server.ReadyMaxLag) + " instances of its most advanced peer, else 503 with the reason) over HTTP on this HOST:PORT, e.g. 127.0.0.1:9464 (docs/operations.md, Monitoring)"},
	&cli.BoolFlag{Name: "metrics-pprof", Usage: "also serve Go's profiles (/debug/pprof/) on --metrics-addr (--pprof serves them on a port of their own)"},
}

// monitor is the HTTP server of --metrics-addr. Its listener opens before
// the node starts, so that a bad address fails the start before a data
// directory is created; it serves once the node runs.
type monitor struct {
	lis   net.Listener
	reg   *prometheus.Registry
	pprof bool
}

// openMonitor opens --metrics-addr's listener (nil, nil without the flag).
func openMonitor(c *cli.Context) (*monitor, error) {
	addr := c.String("metrics-addr")
	if addr == "" {
		if c.Bool("metrics-pprof") {
			return nil, usageErr(fmt.Errorf("--metrics-pprof needs --metrics-addr"))
		}
		return nil, nil
	}
	m, err := listenMonitor(addr, c.Bool("metrics-pprof"))
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	return m, nil
}

// listenMonitor opens a monitor's listener on addr.
func listenMonitor(addr string, pprof bool) (*monitor, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &monitor{lis: l, reg: server.NewRegistry(), pprof: pprof}, nil
}

// registry is what server.Config.Metrics gets (nil without a monitor).
func (m *monitor) registry() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.reg
}

// close closes a monitor whose node did not start.
func (m *monitor) close() {
	if m != nil {
		m.lis.Close()
	}
}

// serve serves the endpoints for r until the process ends.
func (m *monitor) serve(r *server.Server, log *slog.Logger) {
	if m == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: promLogger{log}}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok: the process runs")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		ok, why := r.Ready(ctx)
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	if m.pprof {
		addPprof(mux)
	}
	go func() {
		if err := http.Serve(m.lis, mux); err != nil {
			log.Error(event.MetricsStopped, event.KeyErr, err)
		}
	}()
	log.Info(event.MetricsServing, "url", fmt.Sprintf("http://%s/metrics", m.lis.Addr()), "health", "/healthz, /readyz")
}

// promLogger logs promhttp's errors (a metric that failed to collect).
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error(event.MetricsError, event.KeyErr, fmt.Sprint(v...))
}
