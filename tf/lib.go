package tf

// #cgo LDFLAGS: -ltensorflow
// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

// Version returns the version of the linked TensorFlow C library, e.g.
// "2.21.0".
func Version() string { return C.GoString(C.TF_Version()) }
