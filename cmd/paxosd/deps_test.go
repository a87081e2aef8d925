package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoEtcdOrZooKeeper: the comparison's etcd and ZooKeeper drivers
// live in their own module (bench/compare); the paxosd binary links
// neither client, nor chromedp, which only the status page's test uses.
func TestLinksNoEtcdOrZooKeeper(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/paxosd/paxosd/cmd/paxosd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "etcd") || strings.Contains(dep, "zookeeper") || strings.Contains(dep, "chromedp") {
			t.Errorf("paxosd depends on %s", dep)
		}
	}
}
