package testports

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func ports(t *testing.T, addrs []string) []int {
	t.Helper()
	var out []int
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// The kernel picks ports for port-0 listeners and outgoing connections from
// the ephemeral range only, so a reserved port outside it stays free while
// its server is down.
func TestReservedPortsAreOutsideTheEphemeralRange(t *testing.T) {
	elo, ehi := ephemeralRange()
	addrs := Addrs(t, 50)
	seen := map[int]bool{}
	for _, p := range ports(t, addrs) {
		if p >= elo && p <= ehi {
			t.Errorf("port %d is in the ephemeral range %d-%d", p, elo, ehi)
		}
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("reserved port %d cannot be listened on: %v", p, err)
			continue
		}
		l.Close()
	}
}

// Another test process cannot take a port this one holds, and can once it is
// released.
func TestAnotherProcessCannotTakeAHeldPort(t *testing.T) {
	if os.Getenv("TESTPORTS_CHILD") != "" {
		return
	}
	addrs, release, err := Reserve(20)
	if err != nil {
		t.Fatal(err)
	}
	held := ports(t, addrs)
	try := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=TestChildTriesToLock", "-test.v")
		var list []string
		for _, p := range held {
			list = append(list, strconv.Itoa(p))
		}
		cmd.Env = append(os.Environ(), "TESTPORTS_CHILD="+strings.Join(list, ","))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := try(); !strings.Contains(out, "locked 0 of 20") {
		t.Fatalf("the child took ports this process holds:\n%s", out)
	}
	release()
	if out := try(); !strings.Contains(out, "locked 20 of 20") {
		t.Fatalf("the child could not take released ports:\n%s", out)
	}
}

// TestChildTriesToLock runs in the child of
// TestAnotherProcessCannotTakeAHeldPort.
func TestChildTriesToLock(t *testing.T) {
	list := os.Getenv("TESTPORTS_CHILD")
	if list == "" {
		t.Skip("runs as a child of TestAnotherProcessCannotTakeAHeldPort")
	}
	var n, total int
	for _, s := range strings.Split(list, ",") {
		p, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		total++
		if f, ok := lock(p); ok {
			n++
			unlock(f)
		}
	}
	t.Logf("locked %d of %d", n, total)
}
