package server

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/paxosd/paxosd/client"
)

// gathered returns the value of the unlabelled gauge or counter name in
// reg, and a histogram's sample count; ok is false when reg lacks it.
func gathered(t *testing.T, reg *prometheus.Registry, name string) (v float64, ok bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.Metric) == 0 {
			continue
		}
		m := mf.Metric[0]
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// Three nodes in one process, each with its own registry: they do not
// collide, exactly one calls itself master, and the master's append,
// commit and sync histograms count the appends made through it.
func TestMetricsPerNode(t *testing.T) {
	regs := map[uint64]*prometheus.Registry{}
	servers, addrs := threeNodesWith(t, func(c *Config) {
		regs[c.ID] = NewRegistry()
		c.Metrics = regs[c.ID]
	})
	cl, err := client.New(addrs, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const appends = 5
	for i := range appends {
		if _, err := cl.Append(context.Background(), []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	var masters []uint64
	for _, s := range servers {
		reg := regs[s.cfg.ID]
		if v, _ := gathered(t, reg, "paxosd_is_master"); v == 1 {
			masters = append(masters, s.cfg.ID)
			for _, h := range []string{"paxosd_append_duration_seconds", "paxosd_commit_duration_seconds"} {
				if n, _ := gathered(t, reg, h); n < appends {
					t.Errorf("master %d: %s counted %v appends, want at least %d", s.cfg.ID, h, n, appends)
				}
			}
		}
		// A node outside the quorum may vote after the client heard back.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if n, _ := gathered(t, reg, "paxosd_storage_sync_duration_seconds"); n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("node %d: no synced write counted within 20s", s.cfg.ID)
				break
			}
		}
	}
	if len(masters) != 1 {
		t.Errorf("nodes reporting paxosd_is_master 1: %v, want exactly one", masters)
	}
}
