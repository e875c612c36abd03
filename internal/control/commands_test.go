package control

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPrefixWriter(t *testing.T) {
	var sb strings.Builder
	lw := &lockedWriter{w: &sb}
	p := &prefixWriter{prefix: []byte("[x] "), out: lw}
	p.Write([]byte("one\ntw"))
	p.Write([]byte("o\nthree"))
	require.Equal(t, "[x] one\n[x] two\n", sb.String())
	p.Write(bytes.Repeat([]byte("a"), maxLine))
	require.Equal(t, "[x] one\n[x] two\n[x] three"+strings.Repeat("a", maxLine)+"\n", sb.String())
}
