// Package paxosdpb holds the protobuf and gRPC definitions of paxosd and the
// Go code generated from them: log.proto (package paxosd.v1, the client API
// LogService and its error details) and peer.proto (package paxosd.peer.v1,
// the node-to-node transport).
//
// The generated files (*.pb.go) are committed; regenerate them with
// `make proto` from the module root (the Makefile pins the tool versions),
// never by hand. This package must never hold hand-written logic: the
// behaviour lives in package rpc. Its one invariant: the committed code is
// exactly what `make proto` produces from the committed .proto files.
package paxosdpb

//go:generate make -C ../.. proto
