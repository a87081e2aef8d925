package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestCPUPartsSortsSamplesLeafFirst(t *testing.T) {
	f, err := os.Open("testdata/cpu-traces.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, total, err := CPUParts(f)
	if err != nil {
		t.Fatal(err)
	}
	ms := time.Millisecond
	want := map[string]time.Duration{
		"fsync (storage sync)":                           30 * ms, // under Save, but an fsync
		"storage: encoding, batch, memtable (goleveldb)": 20 * ms,
		"scheduling and wake-ups":                        10 * ms, // a wake-up made by the client API
		"apply (learner: entries, dedup)":                10 * ms, // allocation goes to who allocates
		"garbage collection":                             10 * ms, // unless it assists the collector
		"socket writes (syscalls)":                       10 * ms,
		cpuOther:                                         10 * ms,
	}
	if total != 100*ms {
		t.Errorf("total %v, want 100ms", total)
	}
	for name, d := range want {
		if parts[name] != d {
			t.Errorf("%s: %v, want %v", name, parts[name], d)
		}
	}
	if len(parts) != len(want) {
		t.Errorf("parts %v, want %v", parts, want)
	}
}

func TestCPUPartsRefusesWhatIsNotTraces(t *testing.T) {
	for _, in := range []string{"", "File: x\nType: cpu\n", "-----------+----\nruntime.main\n", "-----------+----\n   tenms  runtime.main\n"} {
		if _, _, err := CPUParts(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestCPUPartNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range CPUPartNames() {
		if seen[n] {
			t.Errorf("part %q twice", n)
		}
		seen[n] = true
	}
}
