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
	&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics (/metrics), liveness (/healthz: 200 while the process runs), readiness (/readyz: 200 while the node knows a master and is within " +
		fmt.Sprint(server.ReadyMaxLag) + " instances of its most advanced peer, else 503 with the reason) and a live status page (/) over plain HTTP, with no authentication, on this HOST:PORT, e.g. 127.0.0.1:9464 (docs/operations.md, Monitoring)"},
	&cli.BoolFlag{Name: "metrics-pprof", Usage: "also serve Go's profiles (/debug/pprof/) on --metrics-addr (--pprof serves them on a port of their own)"},
	&cli.BoolFlag{Name: "status-page", Value: true, Usage: "serve the live status page on --metrics-addr: / with /api/status (JSON) and /api/stream (server-sent events): members, master, progress, append rate and latency, recent events, the log tail (false: none of it)"},
	&cli.BoolFlag{Name: "status-page-tail", Usage: "show the last entries applied, values included, on the status page; default: on without --auth-tokens-file, off with it (the page has no authentication; docs/operations.md, Status page)"},
}

// statusEvents is how many log records the status page keeps.
const statusEvents = 200

// monitor is the HTTP server of --metrics-addr. Its listener opens before
// the node starts, so that a bad address fails the start before a data
// directory is created; it serves once the node runs.
type monitor struct {
	lis   net.Listener
	reg   *prometheus.Registry
	pprof bool
	page  *server.StatusPage // nil: no status page
}

// openMonitor opens --metrics-addr's listener (nil, nil without the flag).
func openMonitor(c *cli.Context, log *slog.Logger) (*monitor, error) {
	addr := c.String("metrics-addr")
	if addr == "" {
		for _, f := range []string{"metrics-pprof", "status-page-tail"} {
			if c.Bool(f) {
				return nil, usageErr(fmt.Errorf("--%s needs --metrics-addr", f))
			}
		}
		return nil, nil
	}
	if c.Bool("status-page-tail") && !c.Bool("status-page") {
		return nil, usageErr(fmt.Errorf("--status-page-tail needs the status page: drop --status-page=false"))
	}
	m, err := listenMonitor(addr, c.Bool("metrics-pprof"))
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	if c.Bool("status-page") {
		// Entry values on an unauthenticated port: only where the API
		// shows them to anyone too, unless the operator asks.
		tail := c.String("auth-tokens-file") == ""
		if c.IsSet("status-page-tail") {
			tail = c.Bool("status-page-tail")
		}
		m.page = &server.StatusPage{Events: server.NewEventRing(log.Handler(), statusEvents), Tail: tail}
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

// logger is the process's logger: with a status page, one that also keeps
// the recent events for it.
func (m *monitor) logger(l *slog.Logger) *slog.Logger {
	if m == nil || m.page == nil {
		return l
	}
	return slog.New(m.page.Events)
}

// statusPage is what server.Config.StatusPage gets (nil without a page).
func (m *monitor) statusPage() *server.StatusPage {
	if m == nil {
		return nil
	}
	return m.page
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
	if m.page != nil {
		mux.Handle("/", r.StatusHandler()) // it answers 404 to anything it does not serve
	}
	go func() {
		if err := http.Serve(m.lis, mux); err != nil {
			log.Error(event.MetricsStopped, event.KeyErr, err)
		}
	}()
	page := "off"
	if m.page != nil {
		page = fmt.Sprintf("http://%s/ (log tail %s)", m.lis.Addr(), map[bool]string{true: "on", false: "off"}[m.page.Tail])
	}
	log.Info(event.MetricsServing, "url", fmt.Sprintf("http://%s/metrics", m.lis.Addr()), "health", "/healthz, /readyz", "status_page", page)
}

// promLogger logs promhttp's errors (a metric that failed to collect).
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error(event.MetricsError, event.KeyErr, fmt.Sprint(v...))
}
