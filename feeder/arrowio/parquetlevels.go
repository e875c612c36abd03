package arrowio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// This file reads Parquet's RLE / bit-packing hybrid encoding, which holds
// definition and repetition levels and dictionary indices, for the direct
// decoder in parquetfast.go. Levels are checked run by run against what a
// column without nulls must hold, without expanding them.

var errHybrid = errors.New("corrupt RLE/bit-packed run")

// hybrid walks the runs of one RLE / bit-packing hybrid stream of values of
// bw bits.
type hybrid struct {
	data []byte // the stream after the current run
	bw   uint
	// the current run
	rle    bool
	val    uint64 // an RLE run's value
	packed []byte // a bit-packed run's bytes
	i, n   int    // values consumed from the current run, and its length
}

func newHybrid(data []byte, bw uint) hybrid { return hybrid{data: data, bw: bw} }

// next loads the next run; false at the end of the stream.
func (h *hybrid) next() (bool, error) {
	if len(h.data) == 0 {
		return false, nil
	}
	hdr, k := binary.Uvarint(h.data)
	if k <= 0 || hdr>>1 > 1<<31 {
		return false, errHybrid
	}
	h.data = h.data[k:]
	h.i = 0
	if hdr&1 == 0 { // RLE run: a count and one value of ceil(bw/8) bytes
		nb := int(h.bw+7) / 8
		if len(h.data) < nb {
			return false, errHybrid
		}
		var v uint64
		for j := nb - 1; j >= 0; j-- {
			v = v<<8 | uint64(h.data[j])
		}
		h.data = h.data[nb:]
		h.rle, h.val, h.n = true, v, int(hdr>>1)
		return true, nil
	}
	// bit-packed run: groups of 8 values, bw bytes each; a writer may
	// truncate the last group's padding at the end of the stream
	nb := int(hdr>>1) * int(h.bw)
	if nb > len(h.data) {
		nb = len(h.data)
	}
	h.rle, h.packed = false, h.data[:nb]
	h.data = h.data[nb:]
	if h.bw == 0 {
		h.n = int(hdr>>1) * 8
	} else {
		h.n = nb * 8 / int(h.bw)
	}
	return true, nil
}

// get returns the j-th value of the current bit-packed run.
func (h *hybrid) get(j int) uint64 {
	if h.bw == 0 {
		return 0
	}
	bit := uint(j) * h.bw
	b := bit >> 3
	var w uint64
	if int(b)+8 <= len(h.packed) {
		w = binary.LittleEndian.Uint64(h.packed[b:])
	} else {
		for k := len(h.packed) - 1; k >= int(b); k-- {
			w = w<<8 | uint64(h.packed[k])
		}
	}
	return (w >> (bit & 7)) & (1<<h.bw - 1)
}

// levelWidth is the bit width of levels up to max.
func levelWidth(max int16) uint { return uint(bits.Len16(uint16(max))) }

// checkDefLevels checks that the n levels of data (bit width of maxDef) all
// equal maxDef: no value in the page is null.
func checkDefLevels(data []byte, n int64, maxDef int16) error {
	h := newHybrid(data, levelWidth(maxDef))
	want := uint64(maxDef)
	for n > 0 {
		ok, err := h.next()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %d levels missing", errHybrid, n)
		}
		c := min(int64(h.n), n)
		if h.rle {
			if h.val != want && c > 0 {
				return errNulls
			}
		} else {
			for j := range int(c) {
				if h.get(j) != want {
					return errNulls
				}
			}
		}
		n -= c
	}
	return nil
}

var errNulls = errors.New("holds nulls although its statistics say none")

// checkRepLevels checks that the n repetition levels of data (maxRep 1, one
// bit each), starting at level pos of the column chunk, start a list exactly
// every width values: the lists are all width long. Writers encode such
// levels as a short bit-packed run and an RLE run per list, so this loop
// reads the run headers inline.
func checkRepLevels(data []byte, n, pos, width int64) error {
	if pos%width == 0 && n >= 3*width {
		// Writers encode every list the same way, so the runs of a page
		// that starts at a list usually repeat with the bytes of one list:
		// check the first list's runs, then that the bytes repeat (all but
		// the last list, whose runs may end differently).
		if p := listBytes(data, width); p > 0 {
			m := min(n/width, int64(len(data))/p) - 1
			if m > 1 && bytes.Equal(data[p:m*p], data[:(m-1)*p]) {
				data, n, pos = data[m*p:], n-m*width, pos+m*width
			}
		}
	}
	return checkRepRuns(data, n, pos, width)
}

// listBytes returns how many bytes of data encode exactly the first list's
// width repetition levels in whole runs, matching the list pattern; 0 when
// its runs do not end with the list.
func listBytes(data []byte, width int64) int64 {
	var got int64
	rest := data
	for got < width {
		if len(rest) == 0 || rest[0] >= 0x80 {
			return 0
		}
		hdr := int64(rest[0])
		var c int64
		if hdr&1 == 0 { // RLE
			c = hdr >> 1
			if len(rest) < 2 || c == 0 || got+c > width || checkRepRuns(rest[:2], c, got, width) != nil {
				return 0
			}
			rest = rest[2:]
		} else {
			nb := hdr >> 1
			c = nb * 8
			if int64(len(rest)) < 1+nb || got+c > width || checkRepRuns(rest[:1+nb], c, got, width) != nil {
				return 0
			}
			rest = rest[1+nb:]
		}
		got += c
	}
	return int64(len(data) - len(rest))
}

// checkRepRuns is checkRepLevels run by run.
func checkRepRuns(data []byte, n, pos, width int64) error {
	off := pos % width // the position of the next level in its list
	for n > 0 {
		if len(data) == 0 {
			return fmt.Errorf("%w: %d levels missing", errHybrid, n)
		}
		hdr := uint64(data[0])
		if hdr < 0x80 {
			data = data[1:]
		} else {
			var k int
			if hdr, k = binary.Uvarint(data); k <= 0 || hdr>>1 > 1<<31 {
				return errHybrid
			}
			data = data[k:]
		}
		var c int64
		if hdr&1 == 0 { // RLE: the value in one byte
			if len(data) == 0 {
				return errHybrid
			}
			v := data[0]
			data = data[1:]
			if c = min(int64(hdr>>1), n); c == 0 {
				continue
			}
			switch {
			case v == 1 && off != 0 && off+c <= width:
			case v == 0 && (width == 1 || (c == 1 && off == 0)):
			default:
				return errListWidth
			}
			if off += c; off >= width {
				off %= width
			}
		} else { // bit-packed: groups of 8 levels, a byte each
			nb := min(int(hdr>>1), len(data))
			c = min(int64(nb)*8, n)
			if !repBytesMatch(data[:nb], c, off, width) {
				return errListWidth
			}
			data = data[nb:]
			off = (off + c) % width
		}
		n -= c
	}
	return nil
}

var errListWidth = errors.New("lists are not all of the fixed-size list's width")

// repBytesMatch compares the first c one-bit levels of packed with the
// pattern of lists of width values, the first level being at position off
// of its list.
func repBytesMatch(packed []byte, c, off, width int64) bool {
	for b := int64(0); b*8 < c; b++ {
		want := byte(0xff)
		// list starts at positions j of this byte: (off+j) % width == 0
		j := width - off
		if off == 0 {
			j = 0
		}
		for ; j < 8; j += width {
			want &^= 1 << j
		}
		got := packed[b]
		if rest := c - b*8; rest < 8 {
			mask := byte(1)<<rest - 1
			want &= mask
			got &= mask
		}
		if got != want {
			return false
		}
		if off += 8; off >= width {
			if off -= width; off >= width {
				off %= width
			}
		}
	}
	return true
}
