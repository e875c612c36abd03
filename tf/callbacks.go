package tf

// #include <stddef.h>
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

//export gotflowReleaseBuffer
func gotflowReleaseBuffer(data unsafe.Pointer, length C.size_t, arg unsafe.Pointer) {
	h := cgo.Handle(uintptr(arg))
	release, _ := h.Value().(func())
	h.Delete()
	if release != nil {
		release()
	}
}
