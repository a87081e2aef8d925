package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The client is not the server: within this module it may import only the
// API contract (api, rpc/paxosdpb) and idgen, and nothing of the storage
// engine (goleveldb) or gossip (memberlist). A program that links the
// client stays small, and a change to the server cannot reach it.
func TestClientDependsOnNoServerPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/paxosd/paxosd/client").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/paxosd/paxosd/client":       true,
		"github.com/paxosd/paxosd/api":          true,
		"github.com/paxosd/paxosd/rpc/paxosdpb": true,
		"github.com/paxosd/paxosd/idgen":        true,
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/paxosd/paxosd") && !allowed[dep],
			strings.Contains(dep, "goleveldb"), strings.Contains(dep, "memberlist"):
			t.Errorf("the client depends on %s", dep)
		}
	}
}
