package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// ReadyMaxLag is the readiness bound: a node is ready (gRPC health SERVING
// for paxosd.v1.LogService, /readyz 200) while it knows a master and no
// live peer has applied more than this many instances beyond it.
const ReadyMaxLag = 1000

// LogServiceName is the client API's full gRPC service name, as the health
// service reports it.
var LogServiceName = paxosdpb.LogService_ServiceDesc.ServiceName

// healthInterval is how often the health service re-reads the node.
const healthInterval = 250 * time.Millisecond

// Ready reports whether the node can serve linearizable requests: it knows
// a master and is within ReadyMaxLag of its most advanced live peer. When
// it cannot, the reason says why.
func (r *Server) Ready(ctx context.Context) (bool, string) {
	st, err := r.node.Status(ctx)
	switch {
	case err != nil:
		return false, fmt.Sprintf("node %d does not answer: %v", r.cfg.ID, err)
	case st.Master == 0:
		return false, fmt.Sprintf("node %d knows no master (an election is under way, or no quorum is reachable)", r.cfg.ID)
	case node.Lag(st) > ReadyMaxLag:
		return false, fmt.Sprintf("node %d is %d instances behind its most advanced live peer (more than %d): catching up", r.cfg.ID, node.Lag(st), ReadyMaxLag)
	}
	return true, fmt.Sprintf("node %d is ready: master is node %d", r.cfg.ID, st.Master)
}

// registerDiscovery registers the standard gRPC health service and server
// reflection on s, and keeps the health of LogServiceName following Ready
// until ctx ends or the node stops. The overall health ("") is SERVING while the process
// serves.
func (r *Server) registerDiscovery(ctx context.Context, s *grpc.Server) {
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(LogServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	go func() {
		t := time.NewTicker(healthInterval)
		defer t.Stop()
		for {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			ok, _ := r.Ready(qctx)
			cancel()
			if ok {
				hs.SetServingStatus(LogServiceName, healthpb.HealthCheckResponse_SERVING)
			} else {
				hs.SetServingStatus(LogServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
			}
			select {
			case <-ctx.Done():
			case <-r.node.Done():
			case <-t.C:
				continue
			}
			hs.Shutdown() // every service NOT_SERVING while stopping
			return
		}
	}()
}

// grpcMetrics counts the gRPC server's calls by service, method and status
// code: a small interceptor pair (go-grpc-middleware's Prometheus provider
// is not among the module versions we may use; this is all we need of it).
type grpcMetrics struct {
	handled *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

func newGRPCMetrics(reg prometheus.Registerer) *grpcMetrics {
	m := &grpcMetrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paxosd_grpc_server_handled_total",
			Help: "gRPC calls this server completed, by service, method and status code"}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "paxosd_grpc_server_handling_seconds",
			Help:    "Time from a gRPC call's start to its end (a stream's whole life), by service and method",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"grpc_service", "grpc_method"}),
	}
	reg.MustRegister(m.handled, m.seconds)
	return m
}

func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

func (m *grpcMetrics) observe(full string, began time.Time, err error) {
	svc, meth := splitMethod(full)
	m.handled.WithLabelValues(svc, meth, statusCode(err)).Inc()
	m.seconds.WithLabelValues(svc, meth).Observe(time.Since(began).Seconds())
}

func (m *grpcMetrics) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			began := time.Now()
			resp, err := h(ctx, req)
			m.observe(info.FullMethod, began, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			began := time.Now()
			err := h(srv, ss)
			m.observe(info.FullMethod, began, err)
			return err
		}),
	}
}

// linkCollector reads the peer transport's links at scrape time.
type linkCollector struct{ r *Server }

var (
	descLinkUp    = prometheus.NewDesc("paxosd_peer_link_up", "1 while this node's outgoing stream to the peer is open, else 0", []string{"peer"}, nil)
	descLinkSent  = prometheus.NewDesc("paxosd_peer_sent_messages_total", "Messages sent to the peer", []string{"peer"}, nil)
	descLinkDrop  = prometheus.NewDesc("paxosd_peer_dropped_messages_total", "Messages to the peer dropped (queue full or link down; Paxos resends)", []string{"peer"}, nil)
	descLinkRecvd = prometheus.NewDesc("paxosd_peer_received_messages_total", "Messages received from the peer", []string{"peer"}, nil)
)

func (c linkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLinkUp
	ch <- descLinkSent
	ch <- descLinkDrop
	ch <- descLinkRecvd
}

func (c linkCollector) Collect(ch chan<- prometheus.Metric) {
	if c.r.tr == nil {
		return // not started yet
	}
	for id, p := range c.r.tr.Stats().Peers {
		peer := strconv.FormatUint(id, 10)
		up := 0.0
		if p.Connected {
			up = 1
		}
		if p.Address != "" {
			ch <- prometheus.MustNewConstMetric(descLinkUp, prometheus.GaugeValue, up, peer)
			ch <- prometheus.MustNewConstMetric(descLinkSent, prometheus.CounterValue, float64(p.Sent), peer)
			ch <- prometheus.MustNewConstMetric(descLinkDrop, prometheus.CounterValue, float64(p.Dropped), peer)
		}
		ch <- prometheus.MustNewConstMetric(descLinkRecvd, prometheus.CounterValue, float64(p.Received), peer)
	}
}
