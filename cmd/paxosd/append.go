package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
)

// What one append request carries. The server refuses an append of more
// than max(4 MiB, --max-entry-bytes) bytes of entries (node.Config
// MaxAppendBytes), so requests are packed up to 4 MiB, which every server
// accepts; an entry larger than that goes alone. The server has no limit on
// the number of entries of an append: maxRequestEntries is the CLI's own,
// the most a read returns, so that one request stays a modest proposal.
const (
	maxRequestBytes   = api.DefaultMaxAppendBytes
	maxRequestEntries = 10000
	// flushAfter: entries read from standard input are sent at most this
	// long after the first of them arrived, so that a slow stream (tail -F)
	// is appended as it comes.
	flushAfter = 100 * time.Millisecond
)

func appendCommand() *cli.Command {
	return &cli.Command{
		Name:      "append",
		Usage:     "append entries; prints the index of each as soon as it is known",
		ArgsUsage: "[VALUE...]   (no VALUE: entries from standard input, one per line)",
		Description: `Entries are bytes: any bytes go in, the same bytes come out. Examples:
  paxosd append hello world              # two entries, from the arguments (one append: all or none)
  paxosd append --file photo.jpg         # the exact bytes of a file, as one entry
  seq 1 100 | paxosd append              # one entry per line: every byte but the "\n" ("\r" is kept)
  find . -print0 | paxosd append -0      # NUL-separated entries
  paxosd read --from 0 -w json | paxosd append --json   # JSON Lines: copies any log exactly
  tail -F app.log | paxosd append        # streams: sends what arrived within 100 ms, prints indexes as it goes

Standard input is read as it arrives: what came in is sent when the input pauses (within about
100 ms) or a request is full (4 MiB or 10000 entries); input of any length is split into requests,
in order. An empty line (or NUL record) is an error naming it, as is an entry over the cluster's
--max-entry-bytes: the entries before it were appended, and the message says how many.
--json reads one object per line, {"value":"text"} or {"value_base64":"..."} (an "index" field
is ignored), as read -w json and tail -w json print them.`,
		Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
			&cli.StringFlag{Name: "file", Usage: "append the exact bytes of this file as one entry (- for standard input)"},
			&cli.BoolFlag{Name: "null", Aliases: []string{"0"}, Usage: "standard input holds NUL-separated entries (as find -print0 writes)"},
			&cli.BoolFlag{Name: "json", Usage: `standard input holds JSON Lines: {"value":"text"} or {"value_base64":"..."} (as read -w json prints)`},
			&cli.Uint64Flag{Name: "client-id", Usage: "exactly-once: this client's ID (with --seq); the input must fit in one append"},
			&cli.Uint64Flag{Name: "seq", Usage: "exactly-once: the sequence number of this append (with --client-id); a repeat returns the original indexes"},
		),
		Action: runAppend,
	}
}

// appender sends entries in requests, in order, and prints their indexes.
type appender struct {
	cl      *client.Client
	timeout time.Duration
	json    bool
	out     *bufio.Writer
	unit    string // "line", "record" or "entry": what the input numbers
	done    int    // entries appended so far
	// first is the input number of the next entry to send.
	first int
}

func runAppend(c *cli.Context) error {
	if err := flagsAfterValues(c); err != nil {
		return usageErr(err)
	}
	modes := 0
	for _, f := range []string{"file", "null", "json"} {
		if c.IsSet(f) {
			modes++
		}
	}
	if modes > 1 || (modes == 1 && c.NArg() > 0) {
		return usageErr(errors.New("give one of VALUEs, --file, -0 or --json"))
	}
	if (c.Uint64("client-id") == 0) != (c.Uint64("seq") == 0) {
		return usageErr(errors.New("--client-id and --seq go together (both non-zero)"))
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	a := &appender{cl: cl, timeout: c.Duration("timeout"), json: c.String("write-out") == "json", out: bufio.NewWriter(os.Stdout), unit: "entry", first: 1}
	defer a.out.Flush()

	switch {
	case c.NArg() > 0:
		var values [][]byte
		for i, v := range c.Args().Slice() {
			if v == "" {
				return fmt.Errorf("entry %d is empty: entries must hold at least one byte; nothing was appended", i+1)
			}
			values = append(values, []byte(v))
		}
		// Arguments go in one append, all or nothing. The OS bounds them
		// (2 MiB in all by default on Linux) below what a request carries;
		// past the cluster's limit the append is refused whole.
		return a.once(c, values)
	case c.IsSet("file"):
		v, err := readFile(c.String("file"))
		if err != nil {
			return err
		}
		return a.once(c, [][]byte{v})
	}

	var rd *recordReader
	switch {
	case c.Bool("null"):
		rd, a.unit = newRecordReader(os.Stdin, 0, "record"), "record"
	case c.Bool("json"):
		rd, a.unit = newRecordReader(os.Stdin, '\n', "line"), "line"
		rd.decode = decodeJSONLine
	default:
		rd, a.unit = newRecordReader(os.Stdin, '\n', "line"), "line"
	}
	if c.Uint64("client-id") != 0 {
		// An explicit (client ID, seq) names one append: read it all, send it once.
		var values [][]byte
		for {
			v, err := rd.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("%w; nothing was appended", err)
			}
			values = append(values, v)
		}
		if len(values) == 0 {
			return errors.New("nothing to append: standard input is empty")
		}
		return a.once(c, values)
	}
	return a.stream(rd)
}

// readFile returns the bytes of the file to append as one entry.
func readFile(name string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--file: %w", err))
		}
		defer f.Close()
		r = f
	}
	// One byte over the largest entry any server takes is enough to refuse it.
	v, err := io.ReadAll(io.LimitReader(r, maxEntryLimit+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("--file %s: %w", name, err)
	case len(v) == 0:
		return nil, fmt.Errorf("--file %s is empty: entries must hold at least one byte; nothing was appended", name)
	case len(v) > maxEntryLimit:
		return nil, fmt.Errorf("--file %s is over %d bytes, more than any server accepts in one entry (see --max-entry-bytes); nothing was appended", name, maxEntryLimit)
	}
	return v, nil
}

// once appends values in one request, with --client-id/--seq if given.
func (a *appender) once(c *cli.Context, values [][]byte) error {
	if id := c.Uint64("client-id"); id != 0 {
		var size int
		for _, v := range values {
			size += len(v)
		}
		if len(values) > 1 && (size > maxRequestBytes || len(values) > maxRequestEntries) {
			return fmt.Errorf("%d entries of %d bytes do not fit in one append (at most %d entries, %d bytes), which --client-id and --seq name; "+
				"nothing was appended: split the input, one --seq each", len(values), size, maxRequestEntries, maxRequestBytes)
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		res, err := a.cl.AppendSeq(ctx, id, c.Uint64("seq"), values...)
		if err != nil {
			return a.failed(err, len(values))
		}
		a.print(res)
		if res.Duplicate {
			a.out.Flush()
			fmt.Fprintln(os.Stderr, "duplicate: this (client-id, seq) was already applied; these are the original indexes")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	res, err := a.cl.Append(ctx, values...)
	if err != nil {
		return a.failed(err, len(values))
	}
	a.print(res)
	return nil
}

// print writes the indexes of an append and flushes them.
func (a *appender) print(res client.AppendResult) {
	for i := res.First; i <= res.Last; i++ {
		if a.json {
			fmt.Fprintf(a.out, `{"index":%d,"duplicate":%v}`+"\n", i, res.Duplicate)
		} else {
			fmt.Fprintln(a.out, i)
		}
	}
	a.out.Flush()
}

// failed explains a failed append of the n entries from a.first: for
// input streamed from stdin, which ones, and how many before them were
// appended.
func (a *appender) failed(err error, n int) error {
	streamed := a.unit != "entry"
	var uo *client.UnknownOutcomeError
	if errors.As(err, &uo) {
		what := "the append"
		if streamed {
			what = "the append of " + a.span(n)
		}
		msg := fmt.Sprintf("outcome unknown: %s may or may not have been applied (%v)", what, uo.Err)
		if uo.ClientID != 0 {
			msg += fmt.Sprintf("; paxosd append --client-id %d --seq %d with the same values applies it at most once and prints its indexes", uo.ClientID, uo.Seq)
		}
		if streamed {
			msg += a.earlier() + "; nothing after it was sent"
		}
		return &codedError{exitUnknown, errors.New(msg)}
	}
	if !streamed {
		return err
	}
	return fmt.Errorf("%s: %w%s", a.span(n), err, a.earlier())
}

// span names the n entries from a.first by their input numbers.
func (a *appender) span(n int) string {
	if n == 1 {
		return fmt.Sprintf("%s %d", a.unit, a.first)
	}
	return fmt.Sprintf("%ss %d to %d", a.unit, a.first, a.first+n-1)
}

// earlier says how many entries were appended before a failure.
func (a *appender) earlier() string {
	switch a.done {
	case 0:
		return "; nothing was appended"
	case 1:
		return "; 1 earlier entry was appended (its index is printed)"
	}
	return fmt.Sprintf("; %d earlier entries were appended (their indexes are printed)", a.done)
}

// stream reads entries as they arrive and appends them in requests, sent
// when the input pauses or a request is full.
func (a *appender) stream(rd *recordReader) error {
	type rec struct {
		v   []byte
		err error
	}
	recs := make(chan rec, 64)
	go func() {
		for {
			v, err := rd.next()
			recs <- rec{v, err}
			if err != nil {
				return
			}
		}
	}()
	var (
		batch [][]byte
		size  int
		timer *time.Timer
		due   <-chan time.Time
	)
	flush := func() error {
		if timer != nil {
			timer.Stop()
			timer, due = nil, nil
		}
		b := batch
		batch, size = nil, 0
		return a.send(b)
	}
	for {
		select {
		case <-due:
			if err := flush(); err != nil {
				return err
			}
		case r := <-recs:
			if r.err != nil {
				if err := flush(); err != nil {
					return err
				}
				if r.err == io.EOF {
					if a.done == 0 {
						return errors.New("nothing to append: give VALUEs, --file, or entries on standard input")
					}
					return nil
				}
				return fmt.Errorf("%w%s", r.err, a.earlier())
			}
			if len(batch) > 0 && (size+len(r.v) > maxRequestBytes || len(batch) == maxRequestEntries) {
				if err := flush(); err != nil {
					return err
				}
			}
			batch, size = append(batch, r.v), size+len(r.v)
			if size >= maxRequestBytes || len(batch) == maxRequestEntries {
				if err := flush(); err != nil {
					return err
				}
			} else if timer == nil {
				timer = time.NewTimer(flushAfter)
				due = timer.C
			}
		}
	}
}

// send appends batch, in order. An entry too large for the cluster is
// found by halving the request (a refused request applies nothing), so
// that the entries before it are appended and the error names it.
func (a *appender) send(batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	res, err := a.cl.Append(ctx, batch...)
	cancel()
	if errors.Is(err, client.ErrTooLarge) && len(batch) > 1 {
		h := len(batch) / 2
		if err := a.send(batch[:h]); err != nil {
			return err
		}
		return a.send(batch[h:])
	}
	if errors.Is(err, client.ErrTooLarge) {
		// The cluster's message numbers the entry within the request;
		// name it by its place in the input instead.
		limit := ""
		if m := limitRE.FindStringSubmatch(err.Error()); m != nil {
			limit = fmt.Sprintf(" of %s bytes", m[1])
		}
		return fmt.Errorf("%s is too large: %d bytes, over the cluster's entry limit%s (paxosd server --max-entry-bytes)%s",
			a.span(1), len(batch[0]), limit, a.earlier())
	}
	if err != nil {
		return a.failed(err, len(batch))
	}
	a.print(res)
	a.done += len(batch)
	a.first += len(batch)
	return nil
}

// limitRE finds the limit in the cluster's message about an entry too large.
var limitRE = regexp.MustCompile(`the limit is (\d+)`)

// recordReader splits standard input into entries at delim, keeping every
// other byte; decode, when set, turns a record into the entry (--json).
type recordReader struct {
	r      *bufio.Reader
	delim  byte
	unit   string
	n      int // records read
	decode func([]byte) ([]byte, error)
}

func newRecordReader(r io.Reader, delim byte, unit string) *recordReader {
	return &recordReader{r: bufio.NewReaderSize(r, 64<<10), delim: delim, unit: unit}
}

// next returns the next entry, io.EOF at the end, or an error naming the
// record. The last record needs no delimiter after it.
func (rd *recordReader) next() ([]byte, error) {
	var rec []byte
	for {
		chunk, err := rd.r.ReadSlice(rd.delim)
		if len(rec)+len(chunk) > maxEntryLimit+1 {
			return nil, fmt.Errorf("%s %d is over %d bytes, more than any server accepts in one entry (see --max-entry-bytes)", rd.unit, rd.n+1, maxEntryLimit)
		}
		rec = append(rec, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(rec) == 0 {
			return nil, io.EOF
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading standard input after %s %d: %w", rd.unit, rd.n, err)
		}
		break
	}
	rd.n++
	rec = bytes.TrimSuffix(rec, []byte{rd.delim})
	if len(rec) == 0 {
		if rd.delim == '\n' {
			return nil, fmt.Errorf("line %d is blank: entries must hold at least one byte (an empty entry is not one)", rd.n)
		}
		return nil, fmt.Errorf("%s %d is empty: entries must hold at least one byte", rd.unit, rd.n)
	}
	if rd.decode != nil {
		v, err := rd.decode(rec)
		if err != nil {
			return nil, fmt.Errorf("%s %d: %w", rd.unit, rd.n, err)
		}
		rec = v
	}
	return rec, nil
}

// decodeJSONLine decodes one line of --json input.
func decodeJSONLine(line []byte) ([]byte, error) {
	if !utf8.Valid(line) {
		return nil, errors.New(`not valid UTF-8 (JSON text is UTF-8; give other bytes as "value_base64")`)
	}
	var e struct {
		Index       *uint64 `json:"index"`
		Value       *string `json:"value"`
		ValueBase64 *string `json:"value_base64"`
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return nil, fmt.Errorf(`not a JSON object {"value":"..."} or {"value_base64":"..."}: %v`, err)
	}
	if d.More() {
		return nil, errors.New("more than one JSON value on the line")
	}
	var v []byte
	switch {
	case (e.Value == nil) == (e.ValueBase64 == nil):
		return nil, errors.New(`give exactly one of "value" and "value_base64"`)
	case e.Value != nil:
		v = []byte(*e.Value)
	default:
		var err error
		if v, err = base64.StdEncoding.DecodeString(*e.ValueBase64); err != nil {
			return nil, fmt.Errorf(`"value_base64" is not standard base64: %v`, err)
		}
	}
	if len(v) == 0 {
		return nil, errors.New("the entry is empty: entries must hold at least one byte")
	}
	return v, nil
}
