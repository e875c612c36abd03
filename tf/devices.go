package tf

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

// Device is a device a session can place operations on.
type Device struct {
	Name        string // e.g. "/job:localhost/replica:0/task:0/device:CPU:0"
	Type        string // "CPU" or "GPU"
	MemoryBytes int64
}

// Devices lists the devices available to the session.
func (s *Session) Devices() ([]Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	st := newStatus()
	defer st.delete()
	list := C.TF_SessionListDevices(s.c, st.c)
	if err := st.err("SessionListDevices"); err != nil {
		return nil, err
	}
	defer C.TF_DeleteDeviceList(list)
	n := int(C.TF_DeviceListCount(list))
	out := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		d := Device{
			Name:        C.GoString(C.TF_DeviceListName(list, C.int(i), st.c)),
			Type:        C.GoString(C.TF_DeviceListType(list, C.int(i), st.c)),
			MemoryBytes: int64(C.TF_DeviceListMemoryBytes(list, C.int(i), st.c)),
		}
		if err := st.err("DeviceList"); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// LocalDevices lists the devices of this process (CPU, and GPUs when the
// CUDA build of libtensorflow finds any).
func LocalDevices() ([]Device, error) {
	g := newGraph()
	defer g.Close()
	s, err := NewSession(g)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Devices()
}

// HasGPU reports whether a GPU device is visible to TensorFlow.
func HasGPU() bool {
	ds, err := LocalDevices()
	if err != nil {
		return false
	}
	for _, d := range ds {
		if d.Type == "GPU" {
			return true
		}
	}
	return false
}
