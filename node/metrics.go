package node

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// Metrics are a node's Prometheus metrics. The loop observes only what
// needs a timer or a per-instance count (latencies, synced writes, entries
// and bytes per instance, catch-up bytes, master changes); everything else
// is read from the core's Status at scrape time (Collect), so a node
// without a scraper pays nothing for it. A nil *Metrics observes nothing.
type Metrics struct {
	reg             prometheus.Registerer
	appendSeconds   prometheus.Histogram
	commitSeconds   prometheus.Histogram
	syncSeconds     prometheus.Histogram
	instanceEntries prometheus.Histogram
	instanceBytes   prometheus.Histogram
	catchupBytes    *prometheus.CounterVec
	masterChanges   prometheus.Counter
}

// NewMetrics registers a node's metrics with reg (use a registry per node:
// tests run several nodes in one process). Pass it as Config.Metrics; Open
// then registers the scrape-time collector too.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	lat := prometheus.ExponentialBuckets(0.0005, 2, 14) // 0.5 ms .. 4 s
	m := &Metrics{
		reg: reg,
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "paxosd_append_duration_seconds",
			Help: "Appends taken by this node as master: from the call to the result (queueing, proposal, chosen, applied and durable)", Buckets: lat}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "paxosd_commit_duration_seconds",
			Help: "Appends from their proposal by this master's loop to their result: the Paxos round and the durable apply", Buckets: lat}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "paxosd_storage_sync_duration_seconds",
			Help: "Synced writes of one Ready (the write and its fsync)", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		instanceEntries: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "paxosd_instance_entries",
			Help: "User entries per applied instance", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		instanceBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "paxosd_instance_bytes",
			Help: "Encoded bytes of the value of each applied instance", Buckets: prometheus.ExponentialBuckets(64, 4, 10)}),
		catchupBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paxosd_catchup_sent_bytes_total",
			Help: "Bytes of chosen values and base chunks this node sent to a peer catching up or a follower"}, []string{"peer"}),
		masterChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "paxosd_master_changes_total",
			Help: "Times the master this node knows of became another node"}),
	}
	reg.MustRegister(m.appendSeconds, m.commitSeconds, m.syncSeconds, m.instanceEntries, m.instanceBytes, m.catchupBytes, m.masterChanges)
	return m
}

// LatencySnapshot is a histogram's state: its count and sum of seconds,
// and cumulative counts up to each upper bound (the last, +Inf, is Count).
type LatencySnapshot struct {
	Count  uint64
	Sum    float64
	Bounds []float64 // upper bounds in seconds, ascending
	Counts []uint64  // observations at or below Bounds[i]
}

// AppendLatency returns paxosd_append_duration_seconds as it stands (the
// status page charts its differences each second); zero for a nil
// *Metrics.
func (m *Metrics) AppendLatency() LatencySnapshot {
	if m == nil {
		return LatencySnapshot{}
	}
	var d dto.Metric
	if err := m.appendSeconds.Write(&d); err != nil {
		return LatencySnapshot{}
	}
	h := d.GetHistogram()
	s := LatencySnapshot{Count: h.GetSampleCount(), Sum: h.GetSampleSum()}
	for _, b := range h.GetBucket() {
		s.Bounds = append(s.Bounds, b.GetUpperBound())
		s.Counts = append(s.Counts, b.GetCumulativeCount())
	}
	return s
}

// initPeers makes the per-peer series of the members exist at zero, so
// that queries see them before the first catch-up.
func (m *Metrics) initPeers(self uint64, members map[uint64]string) {
	for id := range members {
		if id != self {
			m.catchupBytes.WithLabelValues(strconv.FormatUint(id, 10))
		}
	}
}

// observeReady counts what the loop just persisted and sent (handleReady).
func (m *Metrics) observeReady(rd *instance.Ready, synced bool, took time.Duration) {
	if m == nil {
		return
	}
	if synced {
		m.syncSeconds.Observe(took.Seconds())
	}
	for _, c := range rd.Chosen {
		entries := 0
		for _, cmd := range c.Value.Commands {
			if cmd.Kind == core.CmdUser {
				entries += len(cmd.Entries)
			}
		}
		m.instanceEntries.Observe(float64(entries))
		m.instanceBytes.Observe(float64(c.Value.Size()))
	}
	for _, msgs := range [][]core.Message{rd.Messages, rd.After} {
		for i := range msgs {
			msg := &msgs[i]
			var n int
			switch msg.Type {
			case core.MsgLearnResp:
				for _, v := range msg.Entries {
					n += v.Value.Size()
				}
			case core.MsgSnapResp:
				if msg.Snap != nil {
					n = msg.Snap.Size()
				}
			default:
				continue
			}
			m.catchupBytes.WithLabelValues(strconv.FormatUint(msg.To, 10)).Add(float64(n))
		}
	}
}

// collector reads a node's state at scrape time.
type collector struct{ n *Node }

var (
	descIsMaster     = prometheus.NewDesc("paxosd_is_master", "1 while this node is the master (it holds a valid lease), else 0", nil, nil)
	descMaster       = prometheus.NewDesc("paxosd_master_id", "The master this node knows of (0: none)", nil, nil)
	descLease        = prometheus.NewDesc("paxosd_lease_remaining_seconds", "How long the lease this node counts (its own while master, else the master's) still runs; 0: none", nil, nil)
	descApplied      = prometheus.NewDesc("paxosd_applied_instances", "Applied frontier: instances below it are applied here", nil, nil)
	descUnapplied    = prometheus.NewDesc("paxosd_chosen_unapplied_instances", "Instances learned chosen but not applied yet (an open instance below them)", nil, nil)
	descFirst        = prometheus.NewDesc("paxosd_first_index", "Index of the oldest entry kept (trims move it)", nil, nil)
	descNext         = prometheus.NewDesc("paxosd_next_index", "Index the next appended entry gets (entries applied so far)", nil, nil)
	descInFlight     = prometheus.NewDesc("paxosd_instances_in_flight", "Instances this node proposed that are not chosen yet", nil, nil)
	descQueued       = prometheus.NewDesc("paxosd_proposals_queued", "Proposals waiting: queued for the loop, or taken and waiting for a free instance of the window", nil, nil)
	descBehind       = prometheus.NewDesc("paxosd_behind", "1 while this node knows it is behind its peers and catches up, else 0", nil, nil)
	descLag          = prometheus.NewDesc("paxosd_lag_instances", "Instances the most advanced live peer has applied beyond this node (0: none ahead)", nil, nil)
	descPeerLag      = prometheus.NewDesc("paxosd_peer_lag_instances", "This node's applied frontier minus the one the peer last reported (negative: the peer is ahead)", []string{"peer"}, nil)
	descPeerLive     = prometheus.NewDesc("paxosd_peer_live", "1 while the peer was heard from recently, else 0", []string{"peer"}, nil)
	descDedupHits    = prometheus.NewDesc("paxosd_dedup_hits_total", "Duplicate appends answered from the exactly-once table since start", nil, nil)
	descDedupClients = prometheus.NewDesc("paxosd_dedup_clients", "Clients in the exactly-once table", nil, nil)
	descElections    = prometheus.NewDesc("paxosd_elections_total", "Phase 1s this node started", nil, nil)
	descTimeouts     = prometheus.NewDesc("paxosd_phase1_timeouts_total", "Phase 1s abandoned for want of a quorum of promises", nil, nil)
	descOutbid       = prometheus.NewDesc("paxosd_outbid_total", "Phases ended by a higher ballot", nil, nil)
	descResent       = prometheus.NewDesc("paxosd_accepts_resent_total", "Accepts sent again for want of a quorum", nil, nil)
	descDiskFree     = prometheus.NewDesc("paxosd_disk_free_bytes", "Free bytes of the data directory's file system (for an unprivileged user)", nil, nil)
	descDiskUsed     = prometheus.NewDesc("paxosd_disk_used_bytes", "Bytes the data directory's files take", nil, nil)
	descDiskMin      = prometheus.NewDesc("paxosd_disk_min_free_bytes", "--min-free-bytes: below it the master refuses appends (0: no check)", nil, nil)
	descStatusUp     = prometheus.NewDesc("paxosd_node_up", "1 when the node's loop answered the scrape, 0 when it did not (stopped, or busier than the scrape timeout)", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIsMaster, descMaster, descLease, descApplied, descUnapplied, descFirst, descNext, descInFlight,
		descQueued, descBehind, descLag, descPeerLag, descPeerLive, descDedupHits, descDedupClients, descElections, descTimeouts,
		descOutbid, descResent, descDiskFree, descDiskUsed, descDiskMin, descStatusUp} {
		ch <- d
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v uint64) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if free, used, min, err := n.Disk(); err == nil {
		ch <- gauge(descDiskFree, float64(free))
		ch <- gauge(descDiskUsed, float64(used))
		ch <- gauge(descDiskMin, float64(min))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		ch <- gauge(descStatusUp, 0)
		return
	}
	ch <- gauge(descStatusUp, 1)
	ch <- gauge(descIsMaster, b2f(st.Role == "master"))
	ch <- gauge(descMaster, float64(st.Master))
	ch <- gauge(descLease, (time.Duration(st.LeaseTicks) * n.cfg.Tick).Seconds())
	ch <- gauge(descApplied, float64(st.Applied))
	ch <- gauge(descUnapplied, float64(st.Unapplied))
	ch <- gauge(descFirst, float64(st.FirstIndex))
	ch <- gauge(descNext, float64(st.NextIndex))
	ch <- gauge(descInFlight, float64(st.InFlight))
	ch <- gauge(descQueued, float64(st.Waiting+len(n.props)))
	ch <- gauge(descBehind, b2f(st.Behind))
	ch <- gauge(descLag, float64(Lag(st)))
	for _, p := range st.Peers {
		id := strconv.FormatUint(p.ID, 10)
		ch <- gauge(descPeerLag, float64(int64(st.Applied-p.Applied)), id)
		ch <- gauge(descPeerLive, b2f(p.Live), id)
	}
	ch <- counter(descDedupHits, st.DedupHits)
	ch <- gauge(descDedupClients, float64(st.DedupClients))
	ch <- counter(descElections, st.Counters.Elections)
	ch <- counter(descTimeouts, st.Counters.PhaseTimeouts)
	ch <- counter(descOutbid, st.Counters.Outbid)
	ch <- counter(descResent, st.Counters.AcceptsResent)
}

// Lag is how many instances the most advanced live peer in st has applied
// beyond the node (0 when none is ahead).
func Lag(st instance.Status) uint64 {
	var lag uint64
	for _, p := range st.Peers {
		if p.Live && p.Applied > st.Applied {
			lag = max(lag, p.Applied-st.Applied)
		}
	}
	return lag
}
