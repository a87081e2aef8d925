package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/e2e/internal/testca"
)

// A node with --auth-tokens-file answers a caller without a token with
// Unauthenticated and one whose role does not allow the call with
// PermissionDenied, and changes nothing; reader reads, writer appends,
// admin trims. A node that is not the master forwards the caller's token,
// which the master checks again.
func TestAuthRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# token role\nr-secret reader\nw-secret writer\na-secret admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 3, "--auth-tokens-file", tokens)
	as := func(token string, addrs ...string) *client.Client {
		cl, err := client.New(addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 30, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	m := waitMaster(t, c, as("r-secret", c.addrs...))
	other := c.addrs[(m+1)%3] // forwards to the master
	ctx := context.Background()
	code := func(err error) codes.Code {
		var ue *client.UnknownOutcomeError
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return status.Code(err)
	}

	if _, err := as("", other).Append(ctx, []byte("anonymous")); code(err) != codes.Unauthenticated {
		t.Errorf("append without a token: %v, want Unauthenticated", err)
	}
	if _, err := as("", other).Read(ctx, 0, 10, true); code(err) != codes.Unauthenticated {
		t.Errorf("read without a token: %v, want Unauthenticated", err)
	}
	if _, err := as("wrong", other).Read(ctx, 0, 10, true); code(err) != codes.Unauthenticated {
		t.Errorf("read with an unknown token: %v, want Unauthenticated", err)
	}
	if _, err := as("r-secret", other).Append(ctx, []byte("by-reader")); code(err) != codes.PermissionDenied {
		t.Errorf("append as reader: %v, want PermissionDenied", err)
	}
	if _, err := as("w-secret", other).Append(ctx, []byte("a"), []byte("b"), []byte("c")); err != nil {
		t.Fatalf("append as writer through a node that forwards: %v", err)
	}
	if r, err := as("r-secret", other).Read(ctx, 0, 10, false); err != nil || len(r.Entries) != 3 {
		t.Fatalf("read as reader: %v, %d entries, want 3", err, len(r.Entries))
	}
	if _, err := as("w-secret", other).Trim(ctx, 1); code(err) != codes.PermissionDenied {
		t.Errorf("trim as writer: %v, want PermissionDenied", err)
	}
	if _, err := as("a-secret", other).Trim(ctx, 1); err != nil {
		t.Fatalf("trim as admin through a node that forwards: %v", err)
	}

	// The CLI: --token and PAXOSD_TOKEN; refusals exit 1 and say why.
	out, errb, ec := runCLI(t, "", "append", "--endpoints", other, "no-token")
	if ec != 1 || !strings.Contains(errb, "authentication") {
		t.Errorf("paxosd append without a token: exit %d, %q %q: want exit 1 and a word on authentication", ec, out, errb)
	}
	out, errb, ec = runCLI(t, "", "trim", "--endpoints", other, "--token", "w-secret", "--before", "2")
	if ec != 1 || !strings.Contains(errb, "admin") {
		t.Errorf("paxosd trim as writer: exit %d, %q %q: want exit 1 naming the role it needs", ec, out, errb)
	}
	t.Setenv("PAXOSD_TOKEN", "w-secret")
	if out, errb, ec = runCLI(t, "", "append", "--endpoints", other, "by-cli"); ec != 0 {
		t.Errorf("paxosd append with PAXOSD_TOKEN=w-secret: exit %d, %q %q", ec, out, errb)
	}
	// Nothing the refused calls carried is in the log: a, b, c (trimmed to
	// b, c) and by-cli.
	r, err := as("r-secret", c.addrs[m]).Read(ctx, 1, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.Entries {
		got = append(got, string(e.Value))
	}
	if strings.Join(got, ",") != "b,c,by-cli" {
		t.Errorf("log from index 1: %q, want b, c, by-cli", got)
	}
	// snapshot save (admin) takes the token too.
	snap := filepath.Join(t.TempDir(), "log.snap")
	if out, errb, ec = runCLI(t, "", "snapshot", "save", "--endpoints", other, "--token", "r-secret", snap); ec == 0 || !strings.Contains(errb, "needs role admin") {
		t.Errorf("paxosd snapshot save as reader: exit %d, %q %q: want a refusal naming role admin", ec, out, errb)
	}
	if out, errb, ec = runCLI(t, "", "snapshot", "save", "--endpoints", other, "--token", "a-secret", snap); ec != 0 {
		t.Errorf("paxosd snapshot save as admin: exit %d, %q %q", ec, out, errb)
	}
	if b, _ := os.ReadFile(c.logPath(0)); !strings.Contains(string(b), "authentication required") {
		t.Errorf("node 1's start-up line does not say it requires authentication:\n%s", b)
	}
}

// A client that pins its cluster's name is refused, before anything is
// done, by a node of another cluster: the Go client with FailedPrecondition,
// the CLI with exit 1; with the right name it is served.
func TestClusterPin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 1, "--cluster", "blue")
	waitMaster(t, c, c.client(t))
	pinned := func(name string) *client.Client {
		cl, err := client.New(c.addrs, client.Options{CallTimeout: 2 * time.Second, Cluster: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	ctx := context.Background()
	_, err := pinned("green").Append(ctx, []byte("wrong-cluster"))
	var ue *client.UnknownOutcomeError
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("append pinned to cluster green on cluster blue: %v, want FailedPrecondition", err)
	}
	out, errb, ec := runCLI(t, "", "append", "--endpoints", c.addrs[0], "--cluster-name", "green", "wrong-cluster-cli")
	if ec != 1 || !strings.Contains(errb, `"blue"`) {
		t.Errorf("paxosd append --cluster-name green on cluster blue: exit %d, %q %q: want exit 1 naming the cluster", ec, out, errb)
	}
	t.Setenv("PAXOSD_CLUSTER", "green")
	if _, _, ec := runCLI(t, "", "trim", "--endpoints", c.addrs[0], "--before", "0"); ec != 1 {
		t.Errorf("paxosd trim with PAXOSD_CLUSTER=green on cluster blue: exit %d, want 1", ec)
	}
	if _, err := pinned("blue").Append(ctx, []byte("right-cluster")); err != nil {
		t.Fatalf("append pinned to cluster blue on cluster blue: %v", err)
	}
	if got := readLocal(t, c.addrs[0]); strings.Join(got, ",") != "right-cluster" {
		t.Errorf("log %q: want only right-cluster", got)
	}
}

// A caller without a token is known by its client certificate's common
// name (cert:NAME in the tokens file). A node that forwards such a call to
// the master does so as itself, with its own certificate (cert:node admin);
// it forwards only what the caller's role allows.
func TestAuthCertNames(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	ca := testca.New(t, dir, "paxosd")
	cert, key := ca.Issue("node", "node")
	alice, aliceKey := ca.Issue("alice", "alice")
	mallory, malloryKey := ca.Issue("mallory", "mallory")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("cert:alice writer\ncert:node admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 3, "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca.File, "--auth-tokens-file", tokens)
	m := waitMaster(t, c, tlsClient(t, c.addrs, ca.File, cert, key))
	other := c.addrs[(m+1)%3]
	ctx := context.Background()
	code := func(err error) codes.Code {
		var ue *client.UnknownOutcomeError
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return status.Code(err)
	}
	as := tlsClient(t, []string{other}, ca.File, alice, aliceKey)
	if _, err := as.Append(ctx, []byte("by-alice")); err != nil {
		t.Fatalf("append as cert:alice (writer) through a node that forwards: %v", err)
	}
	if _, err := as.Trim(ctx, 1); code(err) != codes.PermissionDenied {
		t.Errorf("trim as cert:alice (writer): %v, want PermissionDenied", err)
	}
	if _, err := tlsClient(t, []string{other}, ca.File, mallory, malloryKey).Append(ctx, []byte("by-mallory")); code(err) != codes.Unauthenticated {
		t.Errorf("append as an unlisted certificate: %v, want Unauthenticated", err)
	}
	if _, err := tlsClient(t, []string{other}, ca.File, "", "").Read(ctx, 0, 10, true); code(err) != codes.Unauthenticated {
		t.Errorf("read with neither token nor certificate: %v, want Unauthenticated", err)
	}
	r, err := as.Read(ctx, 0, 10, false)
	if err != nil || len(r.Entries) != 1 || string(r.Entries[0].Value) != "by-alice" {
		t.Fatalf("read as alice: %v %v, want just by-alice", r.Entries, err)
	}
}

// When the master refuses a forwarded append for its caller's token (the
// nodes' tokens files differ), the caller learns that nothing was applied:
// Unauthenticated, not "outcome unknown".
func TestAuthForwardRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	c := newStoppedCluster(t, 3)
	for i := range 3 {
		f := filepath.Join(dir, fmt.Sprintf("tokens%d", i+1))
		if err := os.WriteFile(f, fmt.Appendf(nil, "r-secret reader\nonly-%d writer\n", i+1), 0o600); err != nil {
			t.Fatal(err)
		}
		c.flags[i] = []string{"--auth-tokens-file", f}
		c.start(i)
	}
	cl, err := client.New(c.addrs, client.Options{CallTimeout: 2 * time.Second, Token: "r-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	m := waitMaster(t, c, cl)
	o := (m + 1) % 3
	w, err := client.New([]string{c.addrs[o]}, client.Options{CallTimeout: 2 * time.Second, Token: fmt.Sprintf("only-%d", o+1)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, err = w.Append(context.Background(), []byte("x"))
	if errors.Is(err, client.ErrUnknownOutcome) || status.Code(err) != codes.Unauthenticated {
		t.Errorf("append forwarded with a token only node %d knows: %v, want Unauthenticated (nothing applied)", o+1, err)
	}
}
