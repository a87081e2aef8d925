package storage

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// TestChosenRefTag: a full chosen record (core's encoding of a value) never
// begins with the tag of a record that leaves entries in the log.
func TestChosenRefTag(t *testing.T) {
	for _, v := range []core.Value{{}, userValue("x"), {Commands: []core.Command{{Kind: core.CmdNoop}}}} {
		if b := core.AppendValue(nil, v); b[0] == chosenRef {
			t.Fatalf("core.AppendValue(%+v) begins with chosenRef %#x", v, chosenRef)
		}
	}
}

// userCmd is a user command of client c with the given entries.
func userCmd(c uint64, entries ...string) core.Command {
	cmd := core.Command{Kind: core.CmdUser, ClientID: c, Seq: 1, Origin: 1, Req: c}
	for _, e := range entries {
		cmd.Entries = append(cmd.Entries, []byte(e))
	}
	return cmd
}

// TestChosenRefs: a chosen value whose user entries the same Save puts in
// the log is written without them and read back whole, whichever of its
// commands applied: a duplicate or a failed conditional append (not in the
// log) stays in the record, also beside an applied command with the same
// entries; a reading crosses values, Saves and blocks, stops at maxBytes,
// and survives a reopen and a trim.
func TestChosenRefs(t *testing.T) {
	defer withTrimChunk(1)()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	vals := []core.Value{
		// Applied, a duplicate (another client's retry, not applied), a
		// lease, applied.
		{Commands: []core.Command{userCmd(1, "a1", "a2"), userCmd(2, "zz"), {Kind: core.CmdLease, Holder: 1}, userCmd(3, "c1")}},
		// A duplicate with the same entries as the applied command after it.
		{Commands: []core.Command{userCmd(4, "d1"), userCmd(5, "d1")}},
		// Nothing applied: a failed conditional append.
		{Commands: []core.Command{{Kind: core.CmdUser, ClientID: 6, Expect: 99, Entries: [][]byte{[]byte("no")}}}},
		// Applied entries that differ from the ones in the log: kept whole.
		{Commands: []core.Command{userCmd(7, "e1")}},
	}
	ents := []core.Entry{{Index: 0, Data: []byte("a1")}, {Index: 1, Data: []byte("a2")}, {Index: 2, Data: []byte("c1")}, {Index: 3, Data: []byte("d1")}, {Index: 4, Data: []byte("other")}}
	st := core.ApplyState{Applied: 4, NextIndex: 5}
	rd := instance.Ready{Entries: ents, State: &st}
	for i, v := range vals {
		rd.Chosen = append(rd.Chosen, core.InstanceValue{Instance: uint64(i), Value: v})
	}
	save(t, s, rd)
	for i, ref := range []bool{true, true, false, false} {
		k := key(prefixChosen, uint64(i))
		v, err := s.db.Get(k, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := v[4] == chosenRef; got != ref {
			t.Errorf("c/%d leaves entries in the log: %v, want %v", i, got, ref)
		}
	}
	// A second Save: another block.
	vals = append(vals, core.Value{Commands: []core.Command{userCmd(8, "f1", "f2", "f3")}})
	st2 := core.ApplyState{Applied: 5, NextIndex: 8}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 4, Value: vals[4]}},
		Entries: []core.Entry{{Index: 5, Data: []byte("f1")}, {Index: 6, Data: []byte("f2")}, {Index: 7, Data: []byte("f3")}}, State: &st2})

	check := func(what string, from uint64) {
		t.Helper()
		got, err := s.Chosen(from, 10, 0)
		if err != nil || len(got) != len(vals)-int(from) {
			t.Fatalf("%s: Chosen(%d): %d values, %v", what, from, len(got), err)
		}
		for i, iv := range got {
			if want := vals[int(from)+i]; iv.Instance != from+uint64(i) || !same(iv.Value, want) {
				t.Fatalf("%s: Chosen(%d)[%d] = %d %+v, want %+v", what, from, i, iv.Instance, iv.Value, want)
			}
		}
	}
	for from := range uint64(len(vals)) {
		check("after the Saves", from)
	}
	if got, err := s.Chosen(0, 10, vals[0].Size()+vals[1].Size()); err != nil || len(got) != 2 {
		t.Fatalf("Chosen with room for two values: %d, %v", len(got), err)
	}
	s.Close()
	s = openT(t, dir, Options{})
	check("after a reopen", 0)

	// A trim: the base moves past the first values; those after it keep
	// their entries.
	trim := core.Value{Commands: []core.Command{{Kind: core.CmdTrim, Before: 4, Origin: 1, Req: 1}}}
	st3 := core.ApplyState{Applied: 6, NextIndex: 8, FirstIndex: 4}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 5, Value: trim}}, State: &st3, Base: &core.Snapshot{State: st3}})
	// c/1, below the base, is not deleted yet (a chunk of one per Save),
	// and its entry is trimmed.
	if got, err := s.Chosen(1, 10, 0); err != nil || len(got) != 0 {
		t.Fatalf("Chosen from below the base, right after the trim: %d values, %v", len(got), err)
	}
	vals = append(vals, trim, core.Value{Commands: []core.Command{userCmd(9, "g1")}})
	st4 := core.ApplyState{Applied: 7, NextIndex: 9, FirstIndex: 4}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 6, Value: vals[6]}},
		Entries: []core.Entry{{Index: 8, Data: []byte("g1")}}, State: &st4})
	if got, err := s.Chosen(0, 10, 0); err != nil || len(got) != 0 {
		t.Fatalf("Chosen from below the base: %d values, %v", len(got), err)
	}
	if got, err := s.Chosen(6, 10, 0); err != nil || len(got) != 1 || !same(got[0].Value, vals[6]) {
		t.Fatalf("Chosen(6) after the trim: %+v, %v", got, err)
	}
}

// TestChosenRefMissingEntries: a chosen record whose entries are not in the
// log is corruption, and fails the store.
func TestChosenRefMissingEntries(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	st := core.ApplyState{Applied: 1, NextIndex: 2}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 0, Value: userValue("a", "b")}}, Entries: logEntries(0, 2), State: &st})
	k := key(prefixChosen, 1)
	if err := s.db.Put(k, seal(k, appendChosen(nil, userValue("x", "y"), logRef{first: 1, counts: []uint64{2}})), nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.Chosen(1, 2, 0)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "c/1") {
		t.Fatalf("Chosen of a record with its entries past the log: %v, want ErrCorrupt naming c/1", err)
	}
	if _, err := s.Entries(0, 0, 0); !errors.Is(err, ErrFailed) {
		t.Fatalf("the store after: %v, want ErrFailed", err)
	}
}

// TestChosenRefEncoding: a record that leaves entries out decodes to its
// value without them and its reference, and every cut of it, a byte more,
// or a reference that does not fit its value is a bad record.
func TestChosenRefEncoding(t *testing.T) {
	v := core.Value{Commands: []core.Command{userCmd(1, "a"), {Kind: core.CmdNoop}, userCmd(2, "b", "c")}}
	ref := logRef{first: 1 << 40, counts: []uint64{1, 0, 2}}
	b := appendChosen(nil, v, ref)
	if full := core.AppendValue(nil, v); len(b) >= len(full)+8 || ref.recordSize(v) < len(b) {
		t.Fatalf("record of %d bytes (the full value %d, the estimate %d)", len(b), len(full), ref.recordSize(v))
	}
	r, err := decodeChosen(3, b)
	want := core.Value{Commands: []core.Command{userCmd(1), {Kind: core.CmdNoop}, userCmd(2)}}
	if err != nil || !same(r.ref, ref) || !same(r.iv.Value, want) || r.iv.Instance != 3 {
		t.Fatalf("decodeChosen: %+v %v", r, err)
	}
	for i := range b {
		if _, err := decodeChosen(3, b[:i]); !errors.Is(err, errRecord) {
			t.Fatalf("decodeChosen of %d of %d bytes: %v", i, len(b), err)
		}
	}
	if _, err := decodeChosen(3, append(bytes.Clone(b), 0)); !errors.Is(err, errRecord) {
		t.Fatalf("decodeChosen with a byte more: %v", err)
	}
	for _, bad := range []logRef{
		{first: 1, counts: []uint64{1, 1, 2}},         // a no-op with entries in the log
		{first: 1, counts: []uint64{1, 0}},            // fewer counts than commands
		{first: 1, counts: []uint64{0, 0, 0}},         // nothing left out
		{first: 1<<64 - 2, counts: []uint64{1, 0, 2}}, // past the last index
	} {
		// Built by hand: appendChosen leaves out only what counts says.
		rec := []byte{chosenRef}
		rec = appendUvarints(rec, bad.first, uint64(len(bad.counts)))
		rec = appendUvarints(rec, bad.counts...)
		rec = core.AppendValue(rec, want)
		if _, err := decodeChosen(3, rec); !errors.Is(err, errRecord) {
			t.Errorf("decodeChosen with reference %+v: %v, want a bad record", bad, err)
		}
	}
	// A command with entries in both the record and the log.
	rec := appendChosen(nil, v, logRef{first: 1, counts: []uint64{1, 0, 2}})
	hand := append(appendUvarints([]byte{chosenRef}, 1, 3, 1, 0, 2), core.AppendValue(nil, v)...)
	if bytes.Equal(rec, hand) {
		t.Fatal("appendChosen kept the entries it leaves out")
	}
	if _, err := decodeChosen(3, hand); !errors.Is(err, errRecord) {
		t.Errorf("decodeChosen of a command with entries in the record and the log: %v", err)
	}
}

// TestChosenRefBelowFirstIndex: entries of the Ready below its first index
// are not stored, so a value's record keeps them, and reads back whole.
func TestChosenRefBelowFirstIndex(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	v := userValue(string(logEntry(0).Data), string(logEntry(1).Data))
	st := core.ApplyState{Applied: 1, NextIndex: 2, FirstIndex: 1}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 0, Value: v}}, Entries: logEntries(0, 2), State: &st})
	if got, err := s.Chosen(0, 1, 0); err != nil || len(got) != 1 || !same(got[0].Value, v) {
		t.Fatalf("Chosen(0): %+v, %v", got, err)
	}
}

// TestUpgradeFormat4: a directory of format 4 (every chosen value whole)
// opens as format 5; its values read as before, beside the records the
// next Saves write without their entries.
func TestUpgradeFormat4(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	old := userValue(string(logEntry(0).Data))
	st := core.ApplyState{Applied: 1, NextIndex: 1}
	save(t, s, instance.Ready{Entries: logEntries(0, 1), State: &st})
	ck := key(prefixChosen, 0)
	if err := s.db.Put(ck, seal(ck, core.AppendValue(nil, old)), nil); err != nil {
		t.Fatal(err)
	}
	s = reopenFromFormat(t, s, dir, 4)
	v := userValue(string(logEntry(1).Data))
	st = core.ApplyState{Applied: 2, NextIndex: 2}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 1, Value: v}}, Entries: logEntries(1, 2), State: &st})
	if r, err := s.db.Get(key(prefixChosen, 1), nil); err != nil || r[4] != chosenRef {
		t.Fatalf("c/1 after the upgrade: %x %v, want a record leaving its entry in the log", r, err)
	}
	if got, err := s.Chosen(0, 2, 0); err != nil || len(got) != 2 || !same(got[0].Value, old) || !same(got[1].Value, v) {
		t.Fatalf("Chosen after the upgrade: %+v, %v", got, err)
	}
}

// TestChosenRefBadReferences: a sealed chosen record whose reference is
// wrong (past the log, below its first index, counts near 2^64 or summing
// past it, more counts than commands) fails the read as corruption, without
// a panic or an allocation its counts ask for.
func TestChosenRefBadReferences(t *testing.T) {
	v := core.Value{Commands: []core.Command{userCmd(1), userCmd(2)}}
	for _, bad := range []logRef{
		{first: 1, counts: []uint64{1 << 62, 0}},       // past the log's end
		{first: 0, counts: []uint64{1, 1}},             // below the first index
		{first: 1<<64 - 3, counts: []uint64{1, 1}},     // near the last index
		{first: 1, counts: []uint64{1 << 63, 1 << 63}}, // the total overflows
		{first: 1, counts: []uint64{1, 1, 1}},          // more counts than commands
	} {
		s := openT(t, t.TempDir(), Options{})
		st := core.ApplyState{Applied: 1, NextIndex: 4, FirstIndex: 1}
		save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 0, Value: userValue("a")}}, Entries: logEntries(0, 4), State: &st})
		rec := appendUvarints([]byte{chosenRef}, bad.first, uint64(len(bad.counts)))
		rec = appendUvarints(rec, bad.counts...)
		rec = core.AppendValue(rec, v)
		k := key(prefixChosen, 1)
		if err := s.db.Put(k, seal(k, rec), nil); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Chosen(1, 2, 0); !errors.Is(err, ErrCorrupt) || len(got) != 0 {
			t.Errorf("Chosen of a record with reference %+v: %d values, %v; want ErrCorrupt", bad, len(got), err)
		}
		s.Close()
	}
}

// TestChosenRefBigEntries: a value whose entries the log holds in several
// blocks, one of them an entry larger than a block, is written without
// them and read back whole; maxBytes counts the whole value.
func TestChosenRefBigEntries(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	big := func(n int, b byte) string { return string(bytes.Repeat([]byte{b}, n)) }
	vals := []core.Value{
		{Commands: []core.Command{
			userCmd(1, big(600<<10, 'a'), big(600<<10, 'b'), big(600<<10, 'c')), // two blocks
			userCmd(2, "dup"),                          // applies nothing
			userCmd(3, big(blockBytes+(500<<10), 'd')), // a block of its own
		}},
		{Commands: []core.Command{userCmd(4, "e")}},
	}
	var ents []core.Entry
	for _, c := range []core.Command{vals[0].Commands[0], vals[0].Commands[2], vals[1].Commands[0]} {
		for _, e := range c.Entries {
			ents = append(ents, core.Entry{Index: uint64(len(ents)), Data: e})
		}
	}
	st := core.ApplyState{Applied: 2, NextIndex: uint64(len(ents))}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 0, Value: vals[0]}, {Instance: 1, Value: vals[1]}}, Entries: ents, State: &st})
	if n := countKeys(t, s, prefixBlock, 0, 1<<62); n < 3 {
		t.Fatalf("%d blocks, want the entries over at least 3", n)
	}
	if r, err := s.db.Get(key(prefixChosen, 0), nil); err != nil || r[4] != chosenRef || len(r) > 1<<10 {
		t.Fatalf("c/0: %d bytes, %v; want a small record leaving its entries in the log", len(r), err)
	}
	for _, c := range []struct{ maxBytes, want int }{
		{0, 2}, {vals[0].Size() + vals[1].Size(), 2}, {vals[0].Size() + vals[1].Size() - 1, 1}, {1, 1},
	} {
		got, err := s.Chosen(0, 2, c.maxBytes)
		if err != nil || len(got) != c.want {
			t.Fatalf("Chosen(0, 2, %d): %d values, %v; want %d", c.maxBytes, len(got), err, c.want)
		}
		for i, iv := range got {
			if !bytes.Equal(core.AppendValue(nil, iv.Value), core.AppendValue(nil, vals[i])) {
				t.Fatalf("Chosen(0, 2, %d)[%d] is not the value saved", c.maxBytes, i)
			}
		}
	}
}

// TestChosenRefAfterTrim: in a Ready that applies values, a trim of their
// entries and values after it, the values after the trim leave their
// entries in the log (those before it, below the base, are not written).
func TestChosenRefAfterTrim(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	vals := []core.Value{
		{Commands: []core.Command{userCmd(1, "a0", "a1")}},
		{Commands: []core.Command{userCmd(2, "b2"), {Kind: core.CmdTrim, Before: 3}}},
		{Commands: []core.Command{userCmd(3, "c3")}},
	}
	st := core.ApplyState{Applied: 3, NextIndex: 4, FirstIndex: 3}
	rd := instance.Ready{Entries: []core.Entry{{Index: 0, Data: []byte("a0")}, {Index: 1, Data: []byte("a1")}, {Index: 2, Data: []byte("b2")}, {Index: 3, Data: []byte("c3")}},
		State: &st, Base: &core.Snapshot{State: core.ApplyState{Applied: 2, NextIndex: 3, FirstIndex: 3}}}
	for i, v := range vals {
		rd.Chosen = append(rd.Chosen, core.InstanceValue{Instance: uint64(i), Value: v})
	}
	save(t, s, rd)
	if r, err := s.db.Get(key(prefixChosen, 2), nil); err != nil || r[4] != chosenRef {
		t.Fatalf("c/2: %x %v, want a record leaving its entry in the log", r, err)
	}
	if got, err := s.Chosen(2, 3, 0); err != nil || len(got) != 1 || !same(got[0].Value, vals[2]) {
		t.Fatalf("Chosen(2): %+v, %v", got, err)
	}
}

// TestChosenRefStagedEntries: a value applied over entries staged by an
// earlier Save (a base fetch that stopped) leaves them in the log, where
// the staged block holds them, and reads back whole.
func TestChosenRefStagedEntries(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	st := core.ApplyState{Applied: 1, NextIndex: 2}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 0, Value: userValue("a", "b")}}, Entries: []core.Entry{{Index: 0, Data: []byte("a")}, {Index: 1, Data: []byte("b")}}, State: &st})
	save(t, s, instance.Ready{Staged: []core.Entry{{Index: 2, Data: []byte("c")}, {Index: 3, Data: []byte("d")}, {Index: 4, Data: []byte("e")}}})
	v := core.Value{Commands: []core.Command{userCmd(1, "c"), userCmd(2, "d", "e", "f")}}
	st2 := core.ApplyState{Applied: 2, NextIndex: 6}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 1, Value: v}}, State: &st2,
		Entries: []core.Entry{{Index: 2, Data: []byte("c")}, {Index: 3, Data: []byte("d")}, {Index: 4, Data: []byte("e")}, {Index: 5, Data: []byte("f")}}})
	if n := countKeys(t, s, prefixBlock, 2, 6); n != 2 {
		t.Fatalf("%d blocks over [2,6), want the staged one and one for index 5", n)
	}
	if r, err := s.db.Get(key(prefixChosen, 1), nil); err != nil || r[4] != chosenRef {
		t.Fatalf("c/1: %x %v, want a record leaving its entries in the log", r, err)
	}
	if got, err := s.Chosen(0, 2, 0); err != nil || len(got) != 2 || !same(got[1].Value, v) {
		t.Fatalf("Chosen: %+v, %v", got, err)
	}
}
