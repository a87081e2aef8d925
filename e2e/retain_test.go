package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// --retain-bytes trims every node's log to about that many bytes of entry
// data, and --retain-age to the entries appended within that much log
// time, never an entry younger.
func TestRetainBytesAndAge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	ctx := context.Background()
	t.Run("bytes", func(t *testing.T) {
		// 2,000 entries of 1,000 bytes; keep about 200,000 bytes: 200
		// entries, trimmed when more than 220 pile up.
		c := newCluster(t, 3, "--retain-bytes", "200000")
		c.master(t)
		cl := c.client(t)
		for k := range 20 {
			vals := make([][]byte, 100)
			for j := range vals {
				vals[j] = append([]byte(fmt.Sprintf("%06d", k*100+j)), bytes.Repeat([]byte{'b'}, 994)...)
			}
			if _, err := cl.Append(ctx, vals...); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for i, a := range c.addrs {
			for {
				st, err := cl.Status(ctx, a)
				if err == nil && st.EndIndex == 2000 && st.FirstIndex >= 1780 && st.FirstIndex <= 1800 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("node %d: log not trimmed to about 200,000 bytes (200 entries): %v %v", i+1, st, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	t.Run("age", func(t *testing.T) {
		const age = 2 * time.Second
		c := newCluster(t, 3, "--retain-age", age.String())
		c.master(t)
		cl := c.client(t)
		// Append for a while; at every look, the entries appended in the
		// last second must all be there (log time trails the master's
		// wall clock by at most a lease renewal, 750 ms); and every node
		// must come to drop every entry appended more than 110% of the
		// age, a lease renewal and a second (the master's check) ago.
		type appended struct {
			at    time.Time
			index uint64
		}
		var log []appended
		deadline := time.Now().Add(30 * time.Second)
		for {
			r, err := cl.Append(ctx, []byte(fmt.Sprint(len(log))))
			if err != nil {
				t.Fatal(err)
			}
			log = append(log, appended{time.Now(), r.First})
			// The entries every node must come to drop.
			var old uint64
			for _, e := range log {
				if time.Since(e.at) > age+age/10+1750*time.Millisecond {
					old = e.index + 1
				}
			}
			trimmed := old > 0
			for i, a := range c.addrs {
				st, err := cl.Status(ctx, a)
				if err != nil {
					t.Fatal(err)
				}
				now := time.Now()
				for _, e := range log {
					if e.index < st.FirstIndex && now.Sub(e.at) < age-time.Second {
						t.Fatalf("node %d trimmed entry %d, appended %v ago, below --retain-age %v", i+1, e.index, now.Sub(e.at), age)
					}
				}
				trimmed = trimmed && st.FirstIndex >= old
			}
			if trimmed {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the log was not trimmed by age within 30s (first entry appended %v ago)", time.Since(log[0].at))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
