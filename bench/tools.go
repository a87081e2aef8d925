package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ParseGhz reads ghz's JSON report (ghz -O json): acknowledged requests
// per second (OK responses over the run's total time) and the 50th and
// 99th latency percentiles. A run that ends at its --duration cuts the
// requests in flight ("transport is closing", at most one per worker):
// those are not counted; any other error refuses the report, whose figures
// would not compare with a driver's run without errors.
func ParseGhz(b []byte) (Tool, error) {
	var rep struct {
		EndReason string  `json:"endReason"`
		Total     float64 `json:"total"` // ns
		Options   struct {
			Concurrency int64 `json:"concurrency"`
		} `json:"options"`
		Latency []struct {
			Percentage int     `json:"percentage"`
			Latency    float64 `json:"latency"` // ns
		} `json:"latencyDistribution"`
		Errors   map[string]int64 `json:"errorDistribution"`
		Statuses map[string]int64 `json:"statusCodeDistribution"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return Tool{}, fmt.Errorf("ghz report: %w", err)
	}
	for msg, n := range rep.Errors {
		if rep.EndReason != "timeout" || !strings.Contains(msg, "transport is closing") || n > rep.Options.Concurrency {
			return Tool{}, fmt.Errorf("ghz report: %d errors: %s", n, msg)
		}
	}
	t := Tool{Name: "ghz"}
	if rep.Total > 0 {
		t.Throughput = float64(rep.Statuses["OK"]) / (rep.Total / 1e9)
	}
	for _, l := range rep.Latency {
		switch l.Percentage {
		case 50:
			t.P50 = l.Latency / 1e6
		case 99:
			t.P99 = l.Latency / 1e6
		}
	}
	if t.Throughput == 0 || t.P50 == 0 || t.P99 == 0 {
		return Tool{}, errors.New("ghz report: no requests acknowledged, or no 50th and 99th percentiles")
	}
	return t, nil
}

var (
	etcdRPS     = regexp.MustCompile(`(?m)^\s*Requests/sec:\s*([0-9.]+)`)
	etcdPercent = regexp.MustCompile(`(?m)^\s*(50|99)% in ([0-9.]+) secs`)
)

// ParseEtcdBenchmark reads the summary etcd's benchmark tool prints
// (`benchmark put`): Requests/sec and the 50% and 99% latency lines.
func ParseEtcdBenchmark(b []byte) (Tool, error) {
	t := Tool{Name: "etcd-benchmark"}
	m := etcdRPS.FindSubmatch(b)
	if m == nil {
		return Tool{}, errors.New("etcd benchmark: no Requests/sec line")
	}
	t.Throughput, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, m := range etcdPercent.FindAllSubmatch(b, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		if string(m[1]) == "50" {
			t.P50 = v * 1000
		} else {
			t.P99 = v * 1000
		}
	}
	if t.Throughput == 0 || t.P50 == 0 || t.P99 == 0 {
		return Tool{}, errors.New("etcd benchmark: no throughput, or no 50% and 99% latency lines")
	}
	if strings.Contains(string(b), "Error distribution") {
		return Tool{}, errors.New("etcd benchmark: the run had errors")
	}
	return t, nil
}
