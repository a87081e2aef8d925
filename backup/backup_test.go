package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/core"
)

func sample(t *testing.T) (Header, [][]byte, []core.DedupEntry, []byte) {
	t.Helper()
	h := Header{Cluster: "c1", ClusterID: 7, NodeID: 2, Created: 1700000000000, Applied: 90, FirstIndex: 10, NextIndex: 60,
		LeaseHolder: 2, LeaseVersion: 5, LogTime: 1700000000123, DedupRows: 2}
	var ents [][]byte
	for i := range h.Entries() {
		ents = append(ents, []byte(fmt.Sprintf("entry-%d", h.FirstIndex+i)))
	}
	rows := []core.DedupEntry{
		{ClientID: 3, LastUsed: 99, Recent: []core.SeqIndexes{{Seq: 1, First: 10, Last: 11, Sum: 42}, {Seq: 2, First: 12, Last: 12, Sum: 43}}},
		{ClientID: 1 << 60, LastUsed: 100, Recent: []core.SeqIndexes{{Seq: 9, First: 59, Last: 59, Sum: 7}}},
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := w.Entry(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range rows {
		if err := w.Row(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Bytes != int64(buf.Len()) {
		t.Fatalf("Writer.Bytes %d, wrote %d", w.Bytes, buf.Len())
	}
	return h, ents, rows, buf.Bytes()
}

// readAll reads a whole file as restore does.
func readAll(b []byte) (Header, [][]byte, []core.DedupEntry, error) {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return Header{}, nil, nil, err
	}
	var ents [][]byte
	for {
		e, err := r.Entry()
		if err == io.EOF {
			break
		}
		if err != nil {
			return r.Header, nil, nil, err
		}
		ents = append(ents, append([]byte{}, e...))
	}
	var rows []core.DedupEntry
	for {
		d, err := r.Row()
		if err == io.EOF {
			break
		}
		if err != nil {
			return r.Header, nil, nil, err
		}
		rows = append(rows, d)
	}
	if _, err := r.Finish(); err != nil {
		return r.Header, nil, nil, err
	}
	if r.Bytes != int64(len(b)) {
		return r.Header, nil, nil, fmt.Errorf("Reader.Bytes %d of %d", r.Bytes, len(b))
	}
	return r.Header, ents, rows, nil
}

func TestRoundTrip(t *testing.T) {
	h, ents, rows, b := sample(t)
	gh, gents, grows, err := readAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if gh != h || !reflect.DeepEqual(gents, ents) || !reflect.DeepEqual(grows, rows) {
		t.Fatalf("read back %+v %q %+v, wrote %+v %q %+v", gh, gents, grows, h, ents, rows)
	}
}

// Every truncation, every flipped byte and any trailing byte is refused
// with ErrCorrupt.
func TestDamageIsRefused(t *testing.T) {
	_, _, _, b := sample(t)
	for n := 0; n < len(b); n++ {
		if _, _, _, err := readAll(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrCorrupt", n, len(b), err)
		}
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x20
		if _, _, _, err := readAll(c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v, want ErrCorrupt", i, err)
		}
	}
	if _, _, _, err := readAll(append(bytes.Clone(b), 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a trailing byte: %v, want ErrCorrupt", err)
	}
}

func TestWriterChecksCounts(t *testing.T) {
	w, err := NewWriter(io.Discard, Header{FirstIndex: 1, NextIndex: 2, DedupRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Row(core.DedupEntry{ClientID: 1}); err == nil {
		t.Fatal("a row before the entries was accepted")
	}
	if err := w.Entry([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := w.Entry([]byte("y")); err == nil {
		t.Fatal("an entry past the header's count was accepted")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close with a row missing succeeded")
	}
}
