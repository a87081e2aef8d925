// Package testports gives tests loopback addresses that stay theirs while
// the servers behind them stop and start again.
//
// An address found by listening on port 0 and closing the listener is free
// only for a moment: while the node that owns it is down (killed, wiped,
// restarting), any process on the machine may take it. An outgoing
// connection's local port or another test's port-0 listener comes from the
// kernel's ephemeral range, and the suites open hundreds of thousands of
// connections through their proxies, so a restarted node finds its port
// taken now and then ("bind: address already in use") and the run fails for
// a reason that is not paxosd's.
//
// Reserve picks ports below the ephemeral range instead, which the kernel
// never hands out by itself, and takes a lock file per port so that other
// test processes using this package leave it alone. A port is also checked
// free (TCP and UDP, for gossip) when it is picked.
package testports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The ports Reserve picks from when the ephemeral range leaves room below
// it: [minPort, the range's low end).
const minPort = 16384

// Reserve returns n addresses 127.0.0.1:P, each held until release is called
// or the process exits.
func Reserve(n int) (addrs []string, release func(), err error) {
	lo, hi := portRange()
	var held []*os.File
	release = func() {
		for _, f := range held {
			unlock(f)
		}
		held = nil
	}
	span := hi - lo
	start := rand.IntN(span)
	for k := 0; k < span && len(addrs) < n; k++ {
		port := lo + (start+k)%span
		f, ok := lock(port)
		if !ok {
			continue
		}
		if !bindable(port) {
			unlock(f)
			continue
		}
		held = append(held, f)
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	if len(addrs) < n {
		release()
		return nil, nil, fmt.Errorf("testports: only %d of %d ports free in [%d, %d)", len(addrs), n, lo, hi)
	}
	return addrs, sync.OnceFunc(release), nil
}

// Addrs is Reserve for one test: it fails tb on error and releases the ports
// when tb ends.
func Addrs(tb testing.TB, n int) []string {
	tb.Helper()
	addrs, release, err := Reserve(n)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(release)
	return addrs
}

// portRange returns [lo, hi): below the ephemeral range when it leaves at
// least 4096 ports there, else above it.
func portRange() (lo, hi int) {
	elo, ehi := ephemeralRange()
	if elo-minPort >= 4096 {
		return minPort, elo
	}
	if 65536-(ehi+1) >= 4096 {
		return ehi + 1, 65536
	}
	// No room outside the range: share it, checked free at least.
	return minPort, 65536
}

// ephemeralRange is the kernel's range for port 0 and outgoing connections:
// Linux's setting, or IANA's 49152-65535 where there is none to read.
func ephemeralRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l <= h {
				return l, h
			}
		}
	}
	return 49152, 65535
}

func bindable(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	p, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	p.Close()
	return true
}

// lock takes port's lock file, one per port in a directory every test
// process shares, without waiting. flock's lock belongs to the open file, so
// it also keeps this process's other Reserve calls off the port, and the
// kernel drops it when the process exits. (paxosd builds on Unix only.)
func lock(port int) (*os.File, bool) {
	d := filepath.Join(os.TempDir(), "paxosd-test-ports")
	if err := os.MkdirAll(d, 0o777); err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(d, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

func unlock(f *os.File) { f.Close() }
