package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"unsafe"
)

// The apply floor: a parameter server over a plain TCP socket that does
// only the work a shard cannot skip. It reads the gradient, checks every
// element is finite (two elements per word, 256 KiB at a time while the
// data is in cache), applies SGD on two goroutines writing the new values
// straight into the reply buffer, and writes the reply; the client reads
// the reply straight into its destination. No framing, no validation of
// names or shapes, no idempotency, no locks. It shows how much of the gap
// to the TCP echo is the shard's own work on this machine.

// startFloor serves the apply floor on a loopback port.
func startFloor() (net.Listener, error) { return serveTCP(serveFloor) }

func serveFloor(conn net.Conn) {
	var w, g, out []float32
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return
		}
		n := int(binary.LittleEndian.Uint64(hdr[:]))
		if len(w) != n {
			w, g, out = make([]float32, n), make([]float32, n), make([]float32, n)
		}
		const piece = 64 << 10 // elements
		for off := 0; off < n; off += piece {
			p := g[off:min(off+piece, n)]
			if _, err := io.ReadFull(conn, floatBytes(p)); err != nil {
				return
			}
			if !finite(p) {
				return
			}
		}
		var wg sync.WaitGroup
		for h := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lo, hi := h*n/2, (h+1)*n/2
				ww, gg, oo := w[lo:hi], g[lo:hi], out[lo:hi]
				gg, oo = gg[:len(ww)], oo[:len(ww)]
				for i := range ww {
					v := ww[i] - gg[i]*1e-6
					ww[i], oo[i] = v, v
				}
			}()
		}
		wg.Wait()
		if _, err := conn.Write(floatBytes(out)); err != nil {
			return
		}
	}
}

// floorRoundTrip pushes grad to the apply floor and reads the new values
// into dst.
func floorRoundTrip(conn net.Conn, grad, dst []float32) error {
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(len(grad)))
	if _, err := conn.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := conn.Write(floatBytes(grad)); err != nil {
		return err
	}
	if _, err := io.ReadFull(conn, floatBytes(dst)); err != nil {
		return fmt.Errorf("apply floor: %w", err)
	}
	return nil
}

func floatBytes(v []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}

// finite reports whether no element of v is NaN or infinite: an element's
// exponent bits are all ones exactly when adding one to them carries into
// the sign bit.
func finite(v []float32) bool {
	var acc uint64
	words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(v))), len(v)/2)
	for _, x := range words {
		acc |= (x&0x7f8000007f800000 + 0x0080000000800000) & 0x8000000080000000
	}
	if len(v)%2 == 1 {
		acc |= uint64((floatBits(v[len(v)-1])&0x7f800000 + 0x00800000) & 0x80000000)
	}
	return acc == 0
}

func floatBits(f float32) uint32 { return *(*uint32)(unsafe.Pointer(&f)) }
