// Package distpb holds the generated protobuf messages and gRPC stubs of the
// coordinator protocol (coordinator.proto). Regenerate with
// scripts/generate-proto.sh; do not edit the .pb.go files.
//
// # Ownership
//
// Messages are plain values owned by whoever holds them.
//
// # Concurrency
//
// As for all generated protobuf code: messages are not safe for concurrent
// mutation; the gRPC client stubs are safe for concurrent use.
//
// # Errors
//
// The stubs return gRPC status errors; package control maps them.
package distpb
