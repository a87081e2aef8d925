package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/paxosd/paxosd/client"
)

// Append, read, and follow the log of a cluster. (The example starts its own
// 3-node cluster in a temporary directory; against a real one, pass its
// endpoints, e.g. "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003" for
// `paxosd dev`.)
func Example() {
	endpoints, stop, err := exampleCluster()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	c, err := client.New(endpoints, client.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx := context.Background()

	// Exactly once: a retry inside Append reuses the client ID and sequence
	// number, so the entries land once.
	res, err := c.Append(ctx, []byte("hello"), []byte("world"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("appended at %d..%d\n", res.First, res.Last)

	page, err := c.Read(ctx, 0, 10, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range page.Entries {
		fmt.Printf("%d %s\n", e.Index, e.Value)
	}

	// Follow the log from index 1: every entry once, in order, even across
	// node failures; break to stop.
	for e, err := range c.Entries(ctx, 1) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("tail: %d %s\n", e.Index, e.Value)
		break
	}
	// Output:
	// appended at 0..1
	// 0 hello
	// 1 world
	// tail: 1 world
}

// A conditional append fails with ErrConflict when the log has moved on.
func ExampleClient_AppendAt() {
	endpoints, stop, err := exampleCluster()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	c, _ := client.New(endpoints, client.Options{})
	defer c.Close()
	ctx := context.Background()

	if _, err := c.AppendAt(ctx, 0, []byte("first")); err != nil {
		fmt.Println(err)
		return
	}
	_, err = c.AppendAt(ctx, 0, []byte("also first?"))
	var conflict *client.ConflictError
	if errors.As(err, &conflict) {
		fmt.Println("conflict: the log ends at", conflict.End)
	}
	// Output:
	// conflict: the log ends at 1
}

// exampleCluster starts a 3-node cluster in a temporary directory and
// returns its endpoints and a function that stops it and removes the data.
func exampleCluster() ([]string, func(), error) {
	dir, err := os.MkdirTemp("", "paxosd-example-")
	if err != nil {
		return nil, nil, err
	}
	cluster, err := startCluster(dir, 3)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return cluster.addrs, func() { cluster.stop(); os.RemoveAll(dir) }, nil
}
