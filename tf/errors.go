package tf

// #include "tensorflow/c/c_api.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
)

// Code is a TensorFlow status code. Its values equal gRPC's codes
// (google.golang.org/grpc/codes), so a Code can cross the wire unchanged.
type Code uint32

// The TensorFlow status codes.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
	"NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
	"Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("Code(%d)", uint32(c))
}

// Error is an error reported by TensorFlow, or by gotflow on TensorFlow's
// behalf, with its status code.
type Error struct {
	Code Code   // TensorFlow (= gRPC) status code
	Op   string // what failed: a C API call, an operation or a tensor name
	Msg  string // TensorFlow's message, or gotflow's
}

func (e *Error) Error() string {
	if e.Op == "" {
		return fmt.Sprintf("tf: %s: %s", e.Code, e.Msg)
	}
	return fmt.Sprintf("tf: %s: %s: %s", e.Op, e.Code, e.Msg)
}

// Is makes errors.Is(err, ErrNotFound) hold for every *Error with code
// NotFound, and likewise for the other sentinels; codes DeadlineExceeded
// and Canceled also match context.DeadlineExceeded and context.Canceled.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == NotFound
	case ErrDeadlineExceeded, context.DeadlineExceeded:
		return e.Code == DeadlineExceeded
	case context.Canceled:
		return e.Code == Canceled
	case ErrInvalidArgument:
		return e.Code == InvalidArgument
	}
	return false
}

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound: a named operation, tensor, file or device does not exist.
	ErrNotFound = errors.New("tf: not found")
	// ErrClosed: the object was used after Close.
	ErrClosed = errors.New("tf: use of closed object")
	// ErrDeadlineExceeded: a Run took longer than its context allowed.
	ErrDeadlineExceeded = errors.New("tf: deadline exceeded")
	// ErrInvalidArgument: an argument (feed, shape, dtype, proto) is invalid.
	ErrInvalidArgument = errors.New("tf: invalid argument")
)

func errorf(code Code, op, format string, args ...any) *Error {
	return &Error{Code: code, Op: op, Msg: fmt.Sprintf(format, args...)}
}

// status wraps a TF_Status that is freed by its creator with delete.
type status struct{ c *C.TF_Status }

func newStatus() status  { return status{C.TF_NewStatus()} }
func (s status) delete() { C.TF_DeleteStatus(s.c) }

// err returns nil if the status is OK, else an *Error naming op.
func (s status) err(op string) error {
	code := C.TF_GetCode(s.c)
	if code == C.TF_OK {
		return nil
	}
	return &Error{Code: Code(code), Op: op, Msg: C.GoString(C.TF_Message(s.c))}
}

func asError(err error, target **Error) bool { return errors.As(err, target) }
