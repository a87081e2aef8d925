package event

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// messages returns the event messages event.go defines: its string
// constants but the attribute keys (Key...).
func messages(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "event.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING || strings.HasPrefix(name.Name, "Key") {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[v] = name.Name
			}
		}
	}
	return out
}

// docRows returns the first cells of the event table of docs/operations.md,
// "Logs and events".
func docRows(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Logs and events\n")
	if start < 0 {
		t.Fatal(`docs/operations.md has no section "## Logs and events"`)
	}
	sec := doc[start+1:]
	if end := strings.Index(sec[3:], "\n## "); end >= 0 {
		sec = sec[:end+3]
	}
	rows := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| (DEBUG|INFO|WARN|ERROR)")
	for _, m := range row.FindAllStringSubmatch(sec, -1) {
		rows[m[1]] = true
	}
	return rows
}

// docs/operations.md lists every event message, with its level, and no
// message the code does not have.
func TestDocListsEveryEvent(t *testing.T) {
	msgs, rows := messages(t), docRows(t)
	if len(msgs) < 40 {
		t.Fatalf("found only %d messages in event.go: is the parse right?", len(msgs))
	}
	for msg, name := range msgs {
		if !rows[msg] {
			t.Errorf("event.%s (%q) is not in docs/operations.md, Logs and events", name, msg)
		}
	}
	for msg := range rows {
		if _, ok := msgs[msg]; !ok {
			t.Errorf("docs/operations.md lists %q, which event.go does not define", msg)
		}
	}
}
