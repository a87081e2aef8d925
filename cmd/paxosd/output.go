package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/paxosd/paxosd/client"
)

// printEntries writes entries in the chosen format: -w json as JSON Lines
// with "value" when the entry is valid UTF-8 and "value_base64" otherwise
// (append --json reads both back), and otherwise one line per entry,
// INDEX<TAB>VALUE, with the value escaped (escapeValue).
func printEntries(w io.Writer, format string, ents []client.Entry) {
	for _, e := range ents {
		switch format {
		case "json":
			var b []byte
			if utf8.Valid(e.Value) {
				b, _ = json.Marshal(struct {
					Index uint64 `json:"index"`
					Value string `json:"value"`
				}{e.Index, string(e.Value)})
			} else {
				b, _ = json.Marshal(struct {
					Index       uint64 `json:"index"`
					ValueBase64 string `json:"value_base64"`
				}{e.Index, base64.StdEncoding.EncodeToString(e.Value)})
			}
			fmt.Fprintf(w, "%s\n", b)
		default:
			fmt.Fprintf(w, "%d\t%s\n", e.Index, escapeValue(e.Value))
		}
	}
}

// escapeValue makes an entry one unambiguous line of text: a backslash is
// written \\, a tab, newline and carriage return \t, \n and \r, any other
// control character (C0, DEL, C1) and every byte that is not valid UTF-8
// \xHH (\u0080 to \u009f for C1 characters). Everything else is as is.
func escapeValue(v []byte) string {
	var b strings.Builder
	for len(v) > 0 {
		r, n := utf8.DecodeRune(v)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, v[0])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.Write(v[:n])
		}
		v = v[n:]
	}
	return b.String()
}
