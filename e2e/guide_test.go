package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
)

// docBlock returns the fenced code block that follows the marker
// "<!-- e2e: name" in docs/operations.md.
func docBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- e2e: " + regexp.QuoteMeta(name) + "[ \n][^\n]*\n```sh\n(.*?)```\n").FindSubmatch(b)
	if m == nil {
		t.Fatalf("docs/operations.md has no ```sh block after <!-- e2e: %s", name)
	}
	return string(m[1])
}

// shell runs script with bash in dir, with env added to the test's
// environment and the test's paxosd first on the PATH.
func shell(dir, script string, env ...string) *exec.Cmd {
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH")), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// TestProductionGuideTLS runs docs/operations.md's production guide as
// written: the openssl procedure (both CAs, node, peer and client
// certificates, the tokens file), the server command on three nodes of
// 127.0.0.1, and the client commands (append with a token, read with a
// client certificate, status, snapshot save); then a client without a token
// is refused, and every node says it serves TLS, peer mutual TLS and
// authentication, as the guide says it will.
func TestProductionGuideTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl: the guide's procedure uses it")
	}
	dir := t.TempDir()
	ports := testports.Addrs(t, 3)
	var nodes, peers []string
	for i, a := range ports {
		nodes = append(nodes, fmt.Sprintf("%d=127.0.0.1", i+1))
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, a))
	}
	if out, err := shell(dir, docBlock(t, "tls-certs"), "NODES="+strings.Join(nodes, " ")).CombinedOutput(); err != nil {
		t.Fatalf("the guide's certificate procedure: %v\n%s", err, out)
	}

	server := docBlock(t, "tls-server")
	for i := range ports {
		logPath := filepath.Join(dir, fmt.Sprintf("node%d.log", i+1))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := shell(dir, strings.ReplaceAll(server, "/var/lib/paxosd", filepath.Join(dir, fmt.Sprintf("data%d", i+1))),
			fmt.Sprintf("ID=%d", i+1), "PEERS="+strings.Join(peers, ","))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); logf.Close(); close(done) }()
		t.Cleanup(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("node %d did not stop within 10s of SIGTERM", i+1)
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
	}
	logs := func(i int) string {
		b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d.log", i+1)))
		return string(b)
	}

	reader, err := os.ReadFile(filepath.Join(dir, "reader.token"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := client.TLSConfig(filepath.Join(dir, "ca.pem"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ports, client.Options{CallTimeout: 2 * time.Second, TLS: cfg, Token: strings.TrimSpace(string(reader))})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitFor(t, "a master over TLS with the guide's files", func() bool {
		for _, a := range ports {
			if st, err := cl.Status(context.Background(), a); err == nil && st.Role == "master" {
				return true
			}
		}
		return false
	})

	out, err := shell(dir, "set -e\n"+docBlock(t, "tls-client"), "ENDPOINTS="+strings.Join(ports, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("the guide's client commands: %v\n%s\nnode logs:\n%s%s%s", err, out, logs(0), logs(1), logs(2))
	}
	if !strings.Contains(string(out), "hello") {
		t.Errorf("the guide's read does not show the appended entry:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "backup.snap")); err != nil || fi.Size() == 0 {
		t.Errorf("the guide's snapshot save left no backup.snap: %v", err)
	}
	// Without a token or certificate: refused (exit 1), nothing served.
	sout, serr, code := runCLI(t, "", "read", "--endpoints", strings.Join(ports, ","), "--cacert", filepath.Join(dir, "ca.pem"), "--from", "0")
	if code != 1 || !strings.Contains(serr, "authentication") || sout != "" {
		t.Errorf("read without a token: exit %d, want 1 and a message about authentication\n%s%s", code, sout, serr)
	}
	for i := range ports {
		if want := `security="TLS, peer mutual TLS, authentication required (3 tokens, 4 certificate names)"`; !strings.Contains(logs(i), want) {
			t.Errorf("node %d's start-up line does not say %q:\n%s", i+1, want, logs(i))
		}
	}
}
