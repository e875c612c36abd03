package arrowio

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// arrow-go sizes slices from vector lengths in IPC flatbuffers before it
// reads them (schemaFromFB: make([]arrow.Field, FieldsLength())), so a
// crafted schema of a few bytes can make the process run out of memory, which
// no recover catches. The functions here check, before arrow-go sees a
// schema, that every vector it sizes from fits in the bytes that hold it.

var errFlatbuf = errors.New("malformed IPC schema")

const maxIPCMetadata = 64 << 20

type fb []byte

func (b fb) u32(off int) (int, error) {
	if off < 0 || off+4 > len(b) {
		return 0, errFlatbuf
	}
	return int(binary.LittleEndian.Uint32(b[off:])), nil
}

// field returns the position of field slot i of the table at t (0: absent).
func (b fb) field(t, slot int) (int, error) {
	so, err := b.u32(t)
	if err != nil {
		return 0, err
	}
	vt := t - int(int32(so))
	if vt < 0 || vt+4 > len(b) {
		return 0, errFlatbuf
	}
	vtLen := int(binary.LittleEndian.Uint16(b[vt:]))
	// the same test as flatbuffers' Table.Offset: a slot is present when
	// its offset in the vtable is below the vtable's size
	if 4+2*slot >= vtLen {
		return 0, nil
	}
	at := vt + 4 + 2*slot
	if at+2 > len(b) {
		return 0, errFlatbuf
	}
	fo := int(binary.LittleEndian.Uint16(b[at:]))
	if fo == 0 {
		return 0, nil
	}
	if t+fo >= len(b) {
		return 0, errFlatbuf
	}
	return t + fo, nil
}

// ref follows the offset stored at pos (a table, vector or string).
func (b fb) ref(pos int) (int, error) {
	o, err := b.u32(pos)
	if err != nil {
		return 0, err
	}
	p := pos + o
	if p < 0 || p >= len(b) {
		return 0, errFlatbuf
	}
	return p, nil
}

// vector returns the element count and start of the vector in slot of t,
// after checking that count elements of size bytes fit.
func (b fb) vector(t, slot, size int) (n, start int, err error) {
	f, err := b.field(t, slot)
	if err != nil || f == 0 {
		return 0, 0, err
	}
	p, err := b.ref(f)
	if err != nil {
		return 0, 0, err
	}
	n, err = b.u32(p)
	if err != nil {
		return 0, 0, err
	}
	if n > (len(b)-p-4)/size {
		return 0, 0, errFlatbuf
	}
	return n, p + 4, nil
}

func (b fb) checkSchema(t int) error {
	n, start, err := b.vector(t, 1, 4) // fields
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		ft, err := b.ref(start + 4*i)
		if err != nil {
			return err
		}
		if err := b.checkField(ft, 0); err != nil {
			return err
		}
	}
	_, _, err = b.vector(t, 2, 4) // custom_metadata
	return err
}

func (b fb) checkField(t, depth int) error {
	if depth > 64 {
		return errFlatbuf
	}
	n, start, err := b.vector(t, 5, 4) // children
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		ct, err := b.ref(start + 4*i)
		if err != nil {
			return err
		}
		if err := b.checkField(ct, depth+1); err != nil {
			return err
		}
	}
	if _, _, err := b.vector(t, 6, 4); err != nil { // custom_metadata
		return err
	}
	tt, err := b.field(t, 2) // type_type
	if err != nil {
		return err
	}
	if tt != 0 && b[tt] == 14 { // Union: typeIds
		tf, err := b.field(t, 3)
		if err != nil || tf == 0 {
			return err
		}
		ut, err := b.ref(tf)
		if err != nil {
			return err
		}
		if _, _, err := b.vector(ut, 1, 4); err != nil {
			return err
		}
	}
	return nil
}

// checkMessage verifies a Message flatbuffer whose header is a Schema.
func checkMessage(meta []byte) error {
	b := fb(meta)
	root, err := b.ref(0)
	if err != nil {
		return err
	}
	ht, err := b.field(root, 1) // header_type
	if err != nil || ht == 0 || b[ht] != 1 {
		return err // not a schema: arrow-go reports it
	}
	h, err := b.field(root, 2)
	if err != nil || h == 0 {
		return err
	}
	st, err := b.ref(h)
	if err != nil {
		return err
	}
	return b.checkSchema(st)
}

// checkStreamSchema verifies the first message of an IPC stream and
// returns the reader arrow-go must read the stream from: r itself when the
// message fits r's buffer (it was only peeked at), else the message read
// out of r followed by the rest of r.
func checkStreamSchema(r *bufio.Reader) (io.Reader, error) {
	head, err := r.Peek(8)
	if err != nil {
		return r, nil // too short: arrow-go reports it
	}
	start, n := 4, binary.LittleEndian.Uint32(head)
	if n == 0xFFFFFFFF {
		start, n = 8, binary.LittleEndian.Uint32(head[4:])
	}
	if n > maxIPCMetadata {
		return nil, fmt.Errorf("%w: schema message of %d bytes", errFlatbuf, n)
	}
	size := start + int(n)
	if size <= r.Size() {
		buf, err := r.Peek(size)
		if err != nil {
			return r, nil // truncated: arrow-go reports it
		}
		return r, checkMessage(buf[start:])
	}
	// Larger than the buffer: read it (growing with the bytes actually
	// there), check it, and hand it back in front of the rest.
	var msg bytes.Buffer
	if _, err := io.CopyN(&msg, r, int64(size)); err != nil {
		return io.MultiReader(bytes.NewReader(msg.Bytes()), r), nil // truncated: arrow-go reports it
	}
	if err := checkMessage(msg.Bytes()[start:]); err != nil {
		return nil, err
	}
	return io.MultiReader(bytes.NewReader(msg.Bytes()), r), nil
}

// checkFileSchema verifies the schema in an IPC file's footer.
func checkFileSchema(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size < 10 {
		return nil
	}
	tail := make([]byte, 10)
	if _, err := f.ReadAt(tail, size-10); err != nil {
		return err
	}
	n := int64(binary.LittleEndian.Uint32(tail))
	if n <= 0 || n > size-10 || n > maxIPCMetadata {
		return nil // arrow-go reports a bad footer
	}
	footer := make([]byte, n)
	if _, err := f.ReadAt(footer, size-10-n); err != nil && err != io.EOF {
		return err
	}
	b := fb(footer)
	root, err := b.ref(0)
	if err != nil {
		return err
	}
	sf, err := b.field(root, 1)
	if err != nil || sf == 0 {
		return err
	}
	s, err := b.ref(sf)
	if err != nil {
		return err
	}
	return b.checkSchema(s)
}
