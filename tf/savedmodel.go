package tf

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

import (
	"context"
	"unsafe"
)

// LoadSavedModel loads the MetaGraph tagged with tags from the SavedModel in
// exportDir into a new graph and session (restoring variables). It returns
// the serialized MetaGraphDef, which holds the signatures. Package
// savedmodel builds the user-facing API on top of this.
func LoadSavedModel(exportDir string, tags []string, opts ...SessionOption) (*Session, *Graph, []byte, error) {
	if len(tags) == 0 {
		return nil, nil, nil, errorf(InvalidArgument, "LoadSavedModel", "at least one tag is required")
	}
	copts, err := newCSessionOptions(opts)
	if err != nil {
		return nil, nil, nil, err
	}
	defer C.TF_DeleteSessionOptions(copts)
	cdir := C.CString(exportDir)
	defer C.free(unsafe.Pointer(cdir))
	ctags := make([]*C.char, len(tags))
	for i, t := range tags {
		ctags[i] = C.CString(t)
		defer C.free(unsafe.Pointer(ctags[i]))
	}
	g := newGraph()
	meta := C.TF_NewBuffer()
	defer C.TF_DeleteBuffer(meta)
	st := newStatus()
	defer st.delete()
	c := C.TF_LoadSessionFromSavedModel(copts, nil, cdir, &ctags[0], C.int(len(ctags)), g.c, meta, st.c)
	if err := st.err("LoadSavedModel"); err != nil {
		g.Close()
		return nil, nil, nil, err
	}
	return newSession(c, g), g, C.GoBytes(meta.data, C.int(meta.length)), nil
}

// Restore runs a TF1 Saver's restore operation: it feeds the checkpoint
// prefix to filenameTensor (SaverDef.filename_tensor_name) and runs restoreOp
// (SaverDef.restore_op_name). Used for the checkpoint-only loading style.
func (s *Session) Restore(ctx context.Context, restoreOp, filenameTensor, checkpointPrefix string) error {
	op, err := s.graph.Operation(restoreOp)
	if err != nil {
		return err
	}
	fn, err := s.graph.Output(filenameTensor)
	if err != nil {
		return err
	}
	t, err := NewStringTensor(nil, [][]byte{[]byte(checkpointPrefix)})
	if err != nil {
		return err
	}
	defer t.Close()
	_, err = s.Run(ctx, []Feed{{Output: fn, Tensor: t}}, nil, []*Operation{op})
	return err
}
