package main

// The CLI's data edges (any bytes in, the same bytes out), streamed stdin,
// exit codes, status, version and dev's flags: issue 14. Real processes, as
// in cli_test.go, whose helpers these tests use.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// entryBytes is one line of read -w json, decoded to the entry's bytes.
type entryBytes struct {
	index uint64
	value []byte
}

// readBytes reads entries from index from on with read -w json and decodes
// "value" or "value_base64" (exactly one must be there).
func readBytes(t *testing.T, eps string, from uint64) ([]entryBytes, string) {
	t.Helper()
	r := run(t, "", "read", "--endpoints", eps, "--from", fmt.Sprint(from), "--count", "10000", "-w", "json")
	ok(t, "read -w json", r)
	var out []entryBytes
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		var e struct {
			Index       *uint64 `json:"index"`
			Value       *string `json:"value"`
			ValueBase64 *string `json:"value_base64"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Index == nil || (e.Value == nil) == (e.ValueBase64 == nil) {
			t.Fatalf("read -w json: line %q is not {\"index\":N,\"value\" or \"value_base64\":...} (%v)", line, err)
		}
		v := []byte(nil)
		if e.Value != nil {
			v = []byte(*e.Value)
		} else {
			b, err := base64.StdEncoding.DecodeString(*e.ValueBase64)
			if err != nil {
				t.Fatalf("read -w json: line %q: bad base64: %v", line, err)
			}
			v = b
		}
		out = append(out, entryBytes{*e.Index, v})
	}
	return out, r.stdout
}

// indexes parses the indexes append printed, one per line.
func indexes(t *testing.T, stdout string) []uint64 {
	t.Helper()
	var out []uint64
	for _, l := range strings.Fields(stdout) {
		var i uint64
		if _, err := fmt.Sscan(l, &i); err != nil {
			t.Fatalf("append printed %q, not one index per line", stdout)
		}
		out = append(out, i)
	}
	return out
}

// wantLog checks that the entries from index from on are exactly want.
func wantLog(t *testing.T, eps string, from uint64, want [][]byte) {
	t.Helper()
	// A read returns a page (up to 4 MiB or so): read on until an empty one.
	var got []entryBytes
	var raw string
	for {
		page, r := readBytes(t, eps, from+uint64(len(got)))
		if len(page) == 0 {
			break
		}
		got, raw = append(got, page...), raw+r
	}
	if len(got) != len(want) {
		t.Fatalf("read from %d: %d entries, want %d\n%.2000s", from, len(got), len(want), raw)
	}
	for i, e := range got {
		if e.index != from+uint64(i) || !bytes.Equal(e.value, want[i]) {
			t.Errorf("entry %d is %q, want %q", from+uint64(i), e.value, want[i])
		}
	}
}

// Any bytes in, the same bytes out: --file, -0, line mode (\r kept),
// --json, and read -w json | append --json copies a log exactly.
func TestAnyBytesRoundTrip(t *testing.T) {
	c := startCluster(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	var next uint64
	appended := func(what string, r result, n int) {
		t.Helper()
		ok(t, what, r)
		if idx := indexes(t, r.stdout); len(idx) != n || idx[0] != next {
			t.Fatalf("%s printed indexes %v, want %d from %d", what, idx, n, next)
		}
	}

	// --file: the exact bytes of a file, every byte value, \r\n and NUL.
	file := append(append([]byte(nil), all...), "\r\n\x00\r\n"...)
	path := filepath.Join(t.TempDir(), "bytes")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	appended("append --file", run(t, "", "append", "--endpoints", c.eps, "--file", path), 1)
	wantLog(t, c.eps, next, [][]byte{file})
	next++

	// -0: NUL-separated; each record has every other byte, \r\n included.
	noNUL := all[1:]
	recs := [][]byte{noNUL, []byte("a\r\n"), []byte("\n")}
	appended("append -0", run(t, string(noNUL)+"\x00a\r\n\x00\n\x00", "append", "--endpoints", c.eps, "-0"), 3)
	wantLog(t, c.eps, next, recs)
	next += 3

	// Line mode: every byte but the "\n" that ends a line, "\r" kept; the
	// last line needs no "\n".
	noNL := bytes.ReplaceAll(all, []byte("\n"), nil)
	lines := [][]byte{[]byte("b\r"), []byte("\xff\xfe\x80"), noNL, []byte("\r"), []byte("last")}
	appended("append (lines)", run(t, "b\r\n\xff\xfe\x80\n"+string(noNL)+"\n\r\nlast", "append", "--endpoints", c.eps), 5)
	wantLog(t, c.eps, next, lines)
	next += 5

	// --json: "value" (text) and "value_base64" (any bytes); "index" is ignored.
	jsonIn := `{"value":"caf\u00e9 \"q\" \\ \n"}` + "\n" +
		`{"index":7,"value_base64":"` + base64.StdEncoding.EncodeToString(all) + `"}` + "\n"
	appended("append --json", run(t, jsonIn, "append", "--endpoints", c.eps, "--json"), 2)
	wantLog(t, c.eps, next, [][]byte{[]byte("café \"q\" \\ \n"), all})
	next += 2

	// read -w json | append --json copies the whole log exactly.
	before, raw := readBytes(t, c.eps, 0)
	if uint64(len(before)) != next {
		t.Fatalf("the log holds %d entries, want %d", len(before), next)
	}
	appended("read -w json | append --json", run(t, raw, "append", "--endpoints", c.eps, "--json"), len(before))
	var want [][]byte
	for _, e := range before {
		want = append(want, e.value)
	}
	wantLog(t, c.eps, next, want)

	// Plain output: one line per entry, control characters and backslash
	// escaped, so that the text is unambiguous.
	r := run(t, "", "read", "--endpoints", c.eps, "--from", "0", "--count", "10000")
	ok(t, "read", r)
	if n := strings.Count(r.stdout, "\n"); n != 2*len(before) {
		t.Errorf("read printed %d lines for %d entries:\n%q", n, 2*len(before), r.stdout)
	}
	if !strings.Contains(r.stdout, "\n4\tb\\r\n5\t\\xff\\xfe\\x80\n") {
		t.Errorf(`read does not print entries 4 and 5 as "b\r" and "\xff\xfe\x80":\n%q`, r.stdout)
	}
	if !strings.Contains(r.stdout, "\n9\tcafé \"q\" \\\\ \\n\n") {
		t.Errorf(`read does not print entry 9 as café "q" \\ \n:\n%q`, r.stdout)
	}
	if !strings.HasPrefix(r.stdout, `0	\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e`) {
		t.Errorf("read does not escape entry 0's control characters:\n%q", r.stdout)
	}

	// Bad --json lines are errors that name the line; nothing after them is sent.
	for _, tc := range []struct{ in, want string }{
		{`{"value":1}` + "\n", "line 1"},
		{`{"valu":"x"}` + "\n", "line 1"},
		{`{"value":"x","value_base64":"eA=="}` + "\n", "exactly one"},
		{`{"value_base64":"%%"}` + "\n", "base64"},
		{"{\"value\":\"\xff\"}\n", "UTF-8"},
	} {
		refused(t, "append --json "+tc.in, run(t, tc.in, "append", "--endpoints", c.eps, "--json"), tc.want)
	}
}

// appendProc is an append reading from a pipe, its stdout read line by line.
type appendProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	errb  bytes.Buffer
}

func startAppend(t *testing.T, args ...string) *appendProc {
	t.Helper()
	p := &appendProc{cmd: exec.Command(binary, append([]string{"append"}, args...)...), lines: make(chan string, 100)}
	p.cmd.Env = env()
	p.cmd.Stderr = &p.errb
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { p.in.Close(); p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

// line waits for the next line append prints.
func (p *appendProc) line(t *testing.T, what string) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("%s: append exited without printing it; stderr: %q", what, p.errb.String())
		}
		return l
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: append printed nothing within 15s of the input (it waits for the end of stdin?)", what)
	}
	return ""
}

// Standard input is appended as it arrives: an index is printed while the
// pipe stays open, so tail -F app.log | paxosd append works.
func TestAppendStreams(t *testing.T) {
	c := startCluster(t)
	t.Run("input larger than one request is split", func(t *testing.T) {
		// 100 lines of 100 KB: 10 MB, more than the 4 MiB one append takes.
		var in strings.Builder
		var want [][]byte
		for i := 0; i < 100; i++ {
			v := strings.Repeat(fmt.Sprintf("%03d", i), 100000/3) + "x"
			in.WriteString(v + "\n")
			want = append(want, []byte(v))
		}
		_, last := c.bounds(t)
		r := run(t, in.String(), "append", "--endpoints", c.eps)
		ok(t, "append of 100 lines of 100 KB", r)
		idx := indexes(t, r.stdout)
		if len(idx) != 100 || int64(idx[0]) != last+1 || int64(idx[99]) != last+100 {
			t.Fatalf("append of 100 lines printed indexes %v, want %d to %d", idx, last+1, last+100)
		}
		wantLog(t, c.eps, uint64(last+1), want)
	})

	t.Run("a blank line stops the input, after the lines before it", func(t *testing.T) {
		first, last := c.bounds(t)
		r := run(t, "x1\nx2\n\nx3\n", "append", "--endpoints", c.eps)
		if r.code != exitRefused {
			t.Errorf("exit %d, want %d\n%v", r.code, exitRefused, r)
		}
		for _, w := range []string{"line 3", "blank", "2 earlier entries were appended"} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("stderr does not say %q\n%v", w, r)
			}
		}
		if idx := indexes(t, r.stdout); len(idx) != 2 || int64(idx[0]) != last+1 {
			t.Errorf("printed indexes %v, want 2 from %d", idx, last+1)
		}
		wantLog(t, c.eps, uint64(last+1), [][]byte{[]byte("x1"), []byte("x2")})
		if f, _ := c.bounds(t); f != first {
			t.Errorf("first index moved from %d to %d", first, f)
		}
	})

	t.Run("an entry over the limit stops the input, after the lines before it", func(t *testing.T) {
		_, last := c.bounds(t)
		big := strings.Repeat("z", 2<<20) // over the default 1 MiB entry limit
		r := run(t, "y1\ny2\ny3\n"+big+"\ny4\n", "append", "--endpoints", c.eps)
		if r.code != exitRefused {
			t.Errorf("exit %d, want %d\n%v", r.code, exitRefused, r)
		}
		for _, w := range []string{"line 4", "too large", "1048576", "3 earlier entries were appended"} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("stderr does not say %q\n%v", w, r)
			}
		}
		wantLog(t, c.eps, uint64(last+1), [][]byte{[]byte("y1"), []byte("y2"), []byte("y3")})
	})

	// Streaming: each line is written only once the previous one's index
	// is out.
	_, last := c.bounds(t)
	p := startAppend(t, "--endpoints", c.eps)
	for i := 0; i < 3; i++ {
		if _, err := fmt.Fprintf(p.in, "s%d\n", i); err != nil {
			t.Fatal(err)
		}
		// The next line is written only once this one's index is out.
		if l := p.line(t, fmt.Sprintf("the index of line %d", i+1)); l != fmt.Sprint(last+1+int64(i)) {
			t.Fatalf("line %d: append printed %q, want %d", i+1, l, last+1+int64(i))
		}
	}
	p.in.Close()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("append after stdin closed: %v; stderr: %q", err, p.errb.String())
	}
	wantLog(t, c.eps, uint64(last+1), [][]byte{[]byte("s0"), []byte("s1"), []byte("s2")})
}

// status exits 4 when a node asked does not answer or no node knows a
// master; --cluster asks every member, not only the endpoints given.
func TestStatusExitsNonZero(t *testing.T) {
	c := startCluster(t)
	r := run(t, "", "status", "--endpoints", c.addrs[0], "--cluster", "-w", "json")
	ok(t, "status --cluster", r)
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var s statusLine
		if json.Unmarshal([]byte(l), &s) != nil {
			t.Fatalf("status --cluster -w json printed %q", r.stdout)
		}
		seen[s.Endpoint] = true
	}
	for _, a := range c.addrs {
		if !seen[a] {
			t.Errorf("status --cluster with one endpoint does not show member %s:\n%s", a, r.stdout)
		}
	}

	c.procs[1].stop(t)
	c.procs[2].stop(t)
	r = run(t, "", "status", "--endpoints", c.eps, "--timeout", "2s")
	if r.code != exitUnavailable || !strings.Contains(r.stderr, "did not answer") {
		t.Errorf("status with 2 of 3 endpoints down: want exit %d saying they did not answer\n%v", exitUnavailable, r)
	}
	// Node 1 alone: once it knows no master (its lease, if it had it,
	// runs out), status says so and exits 4.
	for deadline := time.Now().Add(20 * time.Second); ; {
		r = run(t, "", "status", "--endpoints", c.addrs[0], "-w", "json", "--timeout", "2s")
		var s statusLine
		if json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &s) != nil || s.Master == nil {
			t.Fatalf("status -w json of node 1 printed %q\n%v", r.stdout, r)
		}
		if *s.Master == 0 {
			if r.code != exitUnavailable || !strings.Contains(r.stderr, "no master known") {
				t.Errorf("status of a node that knows no master: want exit %d saying so\n%v", exitUnavailable, r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1 alone still names master %d after 20s", *s.Master)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Every exit code, with real processes where one can be provoked.
func TestExitCodes(t *testing.T) {
	needProcesses(t)
	dead := strings.Join(testports.Addrs(t, 2), ",") // closed again: nothing listens there
	// dev's flags are checked before it binds anything; should that break,
	// it must not bind the default ports.
	base, held := consecutivePorts(t, 5)
	for _, l := range held {
		l.Close()
	}
	shortKey := filepath.Join(t.TempDir(), "gossip.key") // 5 bytes, in base64
	if err := os.WriteFile(shortKey, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		code int
		args []string
	}{
		{exitUsage, []string{"read", "--endpoints", dead, "--from", "x"}},
		{exitUsage, []string{"read", "--endpoints", dead}}, // --from missing
		{exitUsage, []string{"append", "--endpoints", dead, "--bogus"}},
		{exitUsage, []string{"append", "--endpoints", dead, "--file", "f", "x"}},
		{exitUsage, []string{"status", "--endpoints", dead, "extra"}},
		{exitUsage, []string{"bogus-command"}},
		{exitUsage, []string{"append", "--endpoints", dead, "--cert", "c.pem", "x"}}, // --key missing
		{exitUsage, []string{"append", "--endpoints", dead, "--cacert", filepath.Join(t.TempDir(), "none.pem"), "x"}},
		{exitUsage, []string{"server", "--id", "1", "--peers", "1=" + strings.Split(dead, ",")[0], "--data-dir", t.TempDir(), "--cert-file", "c.pem"}},
		{exitUsage, []string{"server", "--id", "1", "--peers", "1=" + strings.Split(dead, ",")[0], "--data-dir", t.TempDir(), "--peer-cert-file", "c.pem", "--peer-key-file", "k.pem"}},
		{exitUsage, []string{"server", "--id", "1", "--peers", "1=" + strings.Split(dead, ",")[0], "--data-dir", t.TempDir(), "--auth-tokens-file", filepath.Join(t.TempDir(), "none")}},
		{exitUsage, []string{"append", "--endpoints", dead, "--token", "secret\n", "x"}}, // a token read from a file with its newline
		{exitUsage, []string{"status", "--endpoints", dead, "--cluster-name", "a\tb"}},
		{exitUsage, []string{"server", "--id", "1", "--peers", "1=" + strings.Split(dead, ",")[0], "--data-dir", t.TempDir(), "--gossip-key-file", filepath.Join(t.TempDir(), "none")}},
		{exitUsage, []string{"server", "--id", "1", "--peers", "1=" + strings.Split(dead, ",")[0], "--data-dir", t.TempDir(), "--gossip-key-file", shortKey}},
		{exitUsage, []string{"dev", "--nodes", "4", "--base-port", fmt.Sprint(base), "--data-dir", t.TempDir()}},
		{exitUnavailable, []string{"append", "--endpoints", dead, "--timeout", "1s", "x"}},
		{exitUnavailable, []string{"read", "--endpoints", dead, "--timeout", "1s", "--from", "0"}},
		{exitUnavailable, []string{"trim", "--endpoints", dead, "--timeout", "1s", "--before", "1"}},
		{exitUnavailable, []string{"status", "--endpoints", dead, "--timeout", "1s"}},
		{exitRefused, []string{"append", "--endpoints", dead, "a", ""}},
	} {
		r := run(t, "", tc.args...)
		if r.code != tc.code {
			t.Errorf("paxosd %q: exit %d, want %d\n%v", tc.args, r.code, tc.code, r)
		}
	}

	// Outcome unknown (3): a server that breaks every append after it arrived.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	paxosdpb.RegisterLogServiceServer(srv, &brokenLog{})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()
	for _, in := range []string{"", "l1\nl2\n"} {
		args := []string{"append", "--endpoints", lis.Addr().String(), "--timeout", "1s"}
		if in == "" {
			args = append(args, "x")
		}
		r := run(t, in, args...)
		if r.code != exitUnknown || !strings.Contains(r.stderr, "outcome unknown") {
			t.Errorf("append of unknown outcome (stdin %q): want exit %d\n%v", in, exitUnknown, r)
		}
		if in != "" && !strings.Contains(r.stderr, "lines 1 to 2") {
			t.Errorf("append of unknown outcome from stdin does not name the lines\n%v", r)
		}
	}
}

// Nodes that answer but refuse (no credentials) make status exit 1, as
// they do read: the command was refused, the nodes are not unavailable.
func TestStatusRefusedExitsOne(t *testing.T) {
	needProcesses(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
		return nil, status.Error(codes.Unauthenticated, "this node requires a token")
	}))
	paxosdpb.RegisterLogServiceServer(srv, &brokenLog{})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()
	for _, args := range [][]string{{"status"}, {"read", "--from", "0"}} {
		r := run(t, "", append(args, "--endpoints", lis.Addr().String(), "--timeout", "2s")...)
		if r.code != exitRefused || !strings.Contains(r.stderr, "requires a token") {
			t.Errorf("paxosd %v against a node refusing it: want exit %d naming the refusal\n%v", args, exitRefused, r)
		}
	}
}

// exitCode maps each kind of failure to its code.
func TestExitCodeMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("line 2 is blank"), exitRefused},
		{fmt.Errorf("%w: entry 0 is 9 bytes", client.ErrTooLarge), exitRefused},
		{&client.ConflictError{End: 3}, exitRefused},
		{&client.TrimmedError{First: 3}, exitRefused},
		{&client.TrimPastEndError{End: 3}, exitRefused},
		{status.Error(codes.ResourceExhausted, "no space"), exitRefused},
		{usageErr(errors.New("--count 0")), exitUsage},
		{errors.New(`Required flag "from" not set`), exitUsage},
		{&client.UnknownOutcomeError{ClientID: 1, Seq: 2, Err: context.DeadlineExceeded}, exitUnknown},
		{fmt.Errorf("lines 1 to 3: %w", &client.UnknownOutcomeError{Err: status.Error(codes.Unavailable, "broken")}), exitUnknown},
		{fmt.Errorf("%w (last error: connection refused)", context.DeadlineExceeded), exitUnavailable},
		{fmt.Errorf("client: gave up: %w", status.Error(codes.Unavailable, "connection refused")), exitUnavailable},
		{unavailableErr(errors.New("no endpoint answered")), exitUnavailable},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	needProcesses(t)
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := run(t, "", args...)
		ok(t, strings.Join(args, " "), r)
		if !strings.HasPrefix(r.stdout, "paxosd ") || !strings.Contains(r.stdout, "revision ") || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("paxosd %s printed %q, want one line: paxosd VERSION, revision REV", args[0], r.stdout)
		}
	}
}

// runTmp runs paxosd with TMPDIR set to tmp.
func runTmp(t *testing.T, tmp string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(env(), "TMPDIR="+tmp)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil || cmd.ProcessState == nil {
		t.Fatalf("paxosd %q: %v; stderr: %q", args, err, errb.String())
	}
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// noDevDirs checks that dev left no temporary directory in tmp.
func noDevDirs(t *testing.T, what, tmp string) {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(tmp, "paxosd-dev-*")); len(m) != 0 {
		t.Errorf("%s left %v behind", what, m)
	}
}

func TestDevFlags(t *testing.T) {
	needProcesses(t)
	tmp := t.TempDir()
	base, ls := consecutivePorts(t, 9)
	for _, l := range ls {
		l.Close()
	}
	for _, n := range []string{"1", "2", "4", "9"} {
		r := runTmp(t, tmp, "dev", "--nodes", n, "--base-port", fmt.Sprint(base))
		if r.code != exitUsage || !strings.Contains(r.stderr, "--nodes "+n) || !strings.Contains(r.stderr, "3 or 5") {
			t.Errorf("dev --nodes %s: want exit %d naming it and 3 or 5\n%v", n, exitUsage, r)
		}
	}
	noDevDirs(t, "dev --nodes with a bad count", tmp)

	// A busy port: dev suggests --base-port (it has no --listen) and leaves
	// no temporary directory.
	base, ls = consecutivePorts(t, 3)
	ls[0].Close()
	ls[2].Close()
	r := runTmp(t, tmp, "dev", "--base-port", fmt.Sprint(base))
	ls[1].Close()
	if r.code == 0 || !strings.Contains(r.stderr, ls[1].Addr().String()) || !strings.Contains(r.stderr, "--base-port") || strings.Contains(r.stderr, "--listen") {
		t.Errorf("dev on a busy port: want an error naming it and suggesting --base-port, not --listen\n%v", r)
	}
	noDevDirs(t, "dev on a busy port", tmp)

	// Other ports: dev prints the PAXOSD_ENDPOINTS line that makes the
	// commands it suggests reach it.
	base, ls = consecutivePorts(t, 3)
	for _, l := range ls {
		l.Close()
	}
	p := startProc(t, filepath.Join(tmp, "dev.log"), "dev", "--base-port", fmt.Sprint(base), "--data-dir", filepath.Join(tmp, "data"))
	defer p.stop(t)
	want := fmt.Sprintf("export PAXOSD_ENDPOINTS=127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d\n", base, base+1, base+2)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.output(), "Ctrl-C stops the cluster"); {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("dev --base-port %d did not start within 20s:\n%s", base, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(p.output(), want) {
		t.Errorf("dev --base-port %d does not print %q:\n%s", base, want, p.output())
	}
}

// paxosd dev --metrics serves each node's metrics on consecutive ports from
// --metrics-base-port and prints them; a busy one fails the start before
// anything is created, naming it.
func TestDevMetrics(t *testing.T) {
	needProcesses(t)
	tmp := t.TempDir()
	base, ls := consecutivePorts(t, 3)
	for _, l := range ls {
		l.Close()
	}
	mbase, mls := consecutivePorts(t, 3)
	mls[0].Close()
	mls[2].Close()
	r := runTmp(t, tmp, "dev", "--base-port", fmt.Sprint(base), "--metrics", "--metrics-base-port", fmt.Sprint(mbase))
	mls[1].Close()
	if r.code == 0 || !strings.Contains(r.stderr, mls[1].Addr().String()) || !strings.Contains(r.stderr, "--metrics-base-port") {
		t.Errorf("dev with a busy metrics port: want an error naming it and suggesting --metrics-base-port\n%v", r)
	}
	noDevDirs(t, "dev on a busy metrics port", tmp)
	if r := runTmp(t, tmp, "dev", "--base-port", fmt.Sprint(base), "--metrics-base-port", fmt.Sprint(mbase)); r.code != exitUsage {
		t.Errorf("dev --metrics-base-port without --metrics: want exit %d\n%v", exitUsage, r)
	}

	p := startProc(t, filepath.Join(tmp, "dev.log"), "dev", "--base-port", fmt.Sprint(base), "--data-dir", filepath.Join(tmp, "data"),
		"--metrics", "--metrics-base-port", fmt.Sprint(mbase))
	defer p.stop(t)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.output(), "Ctrl-C stops the cluster"); {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("dev --metrics did not start within 20s:\n%s", p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	masters := 0
	for i := range 3 {
		host := fmt.Sprintf("127.0.0.1:%d", mbase+i)
		url := "http://" + host + "/metrics"
		if want := fmt.Sprintf("node %d: status page http://%s/, metrics %s\n", i+1, host, url); !strings.Contains(p.output(), want) {
			t.Errorf("dev --metrics does not print %q:\n%s", want, p.output())
		}
		// Each node's status page, with its own node's events.
		if body := waitHTTP(t, "http://"+host+"/api/status", http.StatusOK); !strings.Contains(body, fmt.Sprintf(`"node":{"id":%d,`, i+1)) {
			t.Errorf("node %d's status page /api/status does not name it:\n%.300s", i+1, body)
		}
		if body := waitHTTP(t, url, http.StatusOK); !strings.Contains(body, "paxosd_node_up 1") {
			t.Errorf("%s: no paxosd_node_up 1 in:\n%s", url, body)
		} else if strings.Contains(body, "\npaxosd_is_master 1\n") {
			masters++
		}
	}
	if masters > 1 {
		t.Errorf("%d nodes' metrics say they are the master: the nodes do not have a registry each", masters)
	}
}
