package feeder

import "fmt"

// MemoryBound is the most memory a Stream holds, estimated from the
// dataset's metadata before anything is read.
type MemoryBound struct {
	LargestUnit int64 // decoded bytes of the largest unit
	UnitRows    int64 // rows of the largest unit
	RowBytes    int64 // converted bytes per row (estimated for strings and ragged lists)
	Readers     int
	Shuffle     int64 // the shuffle window's bytes
	Prefetch    int
	BatchBytes  int64
	// Decoder is each reader's fixed overhead: the Parquet decoder's page
	// and decompression buffers, per column read.
	Decoder int64
	Total   int64
}

func (m MemoryBound) String() string {
	return fmt.Sprintf("%s = %d readers × %s (largest unit, decoded and converted, and the decoder's buffers) + %s shuffle window + %d prefetched batches × %s",
		FormatBytes(m.Total), m.Readers, FormatBytes(m.perReader()), FormatBytes(m.Shuffle+3*m.UnitRows*m.RowBytes), m.Prefetch+1, FormatBytes(m.BatchBytes))
}

func (m MemoryBound) perReader() int64 { return m.LargestUnit + m.UnitRows*m.RowBytes + m.Decoder }

// FormatBytes prints n in binary units (KiB, MiB, GiB).
func FormatBytes(n int64) string {
	const k = 1024
	switch {
	case n >= k*k*k:
		return fmt.Sprintf("%.1f GiB", float64(n)/(k*k*k))
	case n >= k*k:
		return fmt.Sprintf("%.1f MiB", float64(n)/(k*k))
	case n >= k:
		return fmt.Sprintf("%.1f KiB", float64(n)/k)
	}
	return fmt.Sprintf("%d B", n)
}
