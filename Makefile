# paxosd build helpers.
#
# `make proto` regenerates the committed Go code in rpc/paxosdpb from
# rpc/paxosdpb/*.proto. The generated files were produced with exactly these
# tool versions; use them so that a regeneration without .proto changes is a
# no-op diff:
#
#   protoc              libprotoc 3.21.12   Debian bookworm package:
#                                           apt-get update && apt-get install -y protobuf-compiler
#   protoc-gen-go       v1.36.12            go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   protoc-gen-go-grpc  v1.6.2              go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
#
# `make proto-tools` runs the two go install commands; `make proto` runs it
# first and then checks the versions before generating. Protos are compiled
# with the module root as the include path, so they register in the global
# protobuf registry as "rpc/paxosdpb/log.proto" and "rpc/paxosdpb/peer.proto"
# (unique names, no clash with some other library's "log.proto").

PROTOC                     ?= protoc
PROTOC_VERSION             := libprotoc 3.21.12
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

GOBIN  := $(shell go env GOBIN)
ifeq ($(GOBIN),)
GOBIN  := $(shell go env GOPATH)/bin
endif

PROTOS := rpc/paxosdpb/log.proto rpc/paxosdpb/peer.proto

.PHONY: proto proto-tools

proto-tools:
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: proto-tools
	@test "$$($(PROTOC) --version)" = "$(PROTOC_VERSION)" || \
		{ echo "want $(PROTOC_VERSION), have $$($(PROTOC) --version)" >&2; exit 1; }
	PATH="$(GOBIN):$$PATH" $(PROTOC) -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		$(PROTOS)
