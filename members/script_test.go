package members_test

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/members"
)

var rewrite = flag.Bool("rewrite", false, "write each testdata script's output in place of what it expects")

// A script (testdata/*.txt) is a sequence of steps, each a command line,
// input lines, a "----" line and the output expected, ended by a blank line
// (outputs hold no blank line). Lines starting with # between steps are
// comments. go test ./members -rewrite replaces every expected output by
// what the code printed: read the diff before committing it.
//
// Commands (arguments as key=value):
//
//	init k=K delay=D [from=I]   one voter a line, "ID ADDR [inc=N]": a new cluster
//	apply i=I                    one change a line, chosen in instance I, in order
//	check applied=I [lag=L max-lag=M]  one change: may the master propose it?
//	at i=I                       the configuration deciding instance I
//	prepare from=I               the configurations a phase 1 from I needs a quorum of
//	quorum i=I                   one line of acking IDs: a quorum for instance I?
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

type step struct {
	line   int // of the command
	cmd    string
	args   map[string]string
	input  []string
	want   string
	header []string // comments and blank lines before the command, kept by -rewrite
}

func parseScript(t *testing.T, path string) []step {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []step
	var header []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	n := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		n++
		return sc.Text(), true
	}
	for {
		l, ok := next()
		if !ok {
			break
		}
		if l == "" || strings.HasPrefix(l, "#") {
			header = append(header, l)
			continue
		}
		s := step{line: n, args: map[string]string{}, header: header}
		header = nil
		fields := strings.Fields(l)
		s.cmd = fields[0]
		for _, a := range fields[1:] {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				t.Fatalf("%s:%d: argument %q is not key=value", path, n, a)
			}
			s.args[k] = v
		}
		for {
			l, ok := next()
			if !ok {
				t.Fatalf("%s:%d: no ---- after %q", path, s.line, s.cmd)
			}
			if l == "----" {
				break
			}
			s.input = append(s.input, l)
		}
		var want []string
		for {
			l, ok := next()
			if !ok || l == "" {
				break
			}
			want = append(want, l)
		}
		s.want = strings.Join(want, "\n")
		steps = append(steps, s)
		header = []string{""}
	}
	return steps
}

func runScript(t *testing.T, path string) {
	steps := parseScript(t, path)
	var h members.History
	var rules members.Rules
	started := false
	var out strings.Builder
	for i, s := range steps {
		num := func(key string) uint64 {
			v, ok := s.args[key]
			if !ok {
				t.Fatalf("%s:%d: %s needs %s=", path, s.line, s.cmd, key)
			}
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("%s:%d: %s=%q: %v", path, s.line, key, v, err)
			}
			return x
		}
		opt := func(key string) uint64 {
			if _, ok := s.args[key]; !ok {
				return 0
			}
			return num(key)
		}
		if s.cmd != "init" && !started {
			t.Fatalf("%s:%d: %s before init", path, s.line, s.cmd)
		}
		var got string
		switch s.cmd {
		case "init":
			var vs []members.Member
			for _, l := range s.input {
				f := strings.Fields(l)
				if len(f) < 2 {
					t.Fatalf("%s:%d: voter line %q: want ID ADDR [inc=N]", path, s.line, l)
				}
				id, err := strconv.ParseUint(f[0], 10, 64)
				if err != nil {
					t.Fatalf("%s:%d: %v", path, s.line, err)
				}
				vs = append(vs, members.Member{ID: id, Addr: f[1], Incarnation: incarnation(t, f[2:])})
			}
			rules = members.Rules{Delay: num("delay"), K: num("k")}
			c, err := members.New(vs...)
			if err != nil {
				got = "error: " + err.Error()
				break
			}
			h, started = members.NewHistory(c, opt("from")), true
			got = c.String()
		case "apply":
			var lines []string
			for _, l := range s.input {
				ch := parseChange(t, path, s.line, l)
				next, err := h.Apply(num("i"), ch, rules)
				if err != nil {
					lines = append(lines, fmt.Sprintf("%s: refused: %v", ch, err))
				} else {
					h = next
					from, _ := h.Pending()
					lines = append(lines, fmt.Sprintf("%s: decides from instance %d", ch, from))
				}
			}
			got = strings.Join(lines, "\n")
		case "check":
			if len(s.input) != 1 {
				t.Fatalf("%s:%d: check takes one change", path, s.line)
			}
			ch := parseChange(t, path, s.line, s.input[0])
			got = "ok"
			if err := h.Check(num("applied"), ch, opt("lag"), opt("max-lag"), rules); err != nil {
				got = "refused: " + err.Error()
			}
		case "at":
			got = h.At(num("i")).String()
		case "prepare":
			var parts []string
			for _, c := range h.ForPrepare(num("from")) {
				parts = append(parts, fmt.Sprintf("voters %v, quorum %d", c.Voters(), c.Quorum()))
			}
			got = strings.Join(parts, "\n")
		case "quorum":
			acks := map[uint64]bool{}
			for _, l := range s.input {
				for _, f := range strings.Fields(l) {
					id, err := strconv.ParseUint(f, 10, 64)
					if err != nil {
						t.Fatalf("%s:%d: %v", path, s.line, err)
					}
					acks[id] = true
				}
			}
			got = fmt.Sprint(h.At(num("i")).HasQuorum(acks))
		default:
			t.Fatalf("%s:%d: unknown command %q", path, s.line, s.cmd)
		}
		if !*rewrite && got != s.want {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, s.line, s.cmd, got, s.want)
		}
		steps[i].want = got
		for _, l := range s.header {
			out.WriteString(l + "\n")
		}
		args := ""
		for _, a := range strings.Fields(lineOf(path, s.line))[1:] {
			args += " " + a
		}
		fmt.Fprintf(&out, "%s%s\n", s.cmd, args)
		for _, l := range s.input {
			out.WriteString(l + "\n")
		}
		fmt.Fprintf(&out, "----\n%s\n", got)
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// lineOf returns line n (from 1) of the file at path.
func lineOf(path string, n int) string {
	data, _ := os.ReadFile(path)
	return strings.Split(string(data), "\n")[n-1]
}

func incarnation(t *testing.T, fields []string) uint64 {
	for _, f := range fields {
		if v, ok := strings.CutPrefix(f, "inc="); ok {
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return x
		}
	}
	return 0
}

// parseChange reads "add-follower ID ADDR [inc=N]", "promote ID" or
// "remove ID".
func parseChange(t *testing.T, path string, line int, l string) members.Change {
	f := strings.Fields(l)
	if len(f) < 2 {
		t.Fatalf("%s:%d: change %q: want KIND ID ...", path, line, l)
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatalf("%s:%d: %v", path, line, err)
	}
	ch := members.Change{ID: id}
	switch f[0] {
	case "add-follower":
		if len(f) < 3 {
			t.Fatalf("%s:%d: add-follower ID ADDR [inc=N]", path, line)
		}
		ch.Kind, ch.Addr, ch.Incarnation = members.AddFollower, f[2], incarnation(t, f[3:])
	case "promote":
		ch.Kind = members.Promote
	case "remove":
		ch.Kind = members.Remove
	default:
		t.Fatalf("%s:%d: unknown change %q", path, line, f[0])
	}
	return ch
}
