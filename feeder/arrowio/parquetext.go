package arrowio

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Arrow's IPC format keeps an extension type as its storage type plus two
// entries of the field's metadata; pyarrow writes extension columns to
// Parquet the same way.
const (
	extensionNameKey     = "ARROW:extension:name"
	extensionMetadataKey = "ARROW:extension:metadata"
)

// parquetStorageSchema returns schema with every top-level extension column
// (arrow.fixed_shape_tensor, as outputs with Output.TensorType are) turned
// into its storage type, a fixed-size list, with the extension's name and
// metadata kept in the field's metadata: arrow-go's Parquet writer cannot
// write the extension type itself, while the stored Arrow schema then
// brings the type back for readers that know it (pyarrow, and arrow-go
// once package feeder has registered arrow.fixed_shape_tensor). ok is
// false when no column needs it.
func parquetStorageSchema(schema *arrow.Schema) (out *arrow.Schema, ok bool) {
	fields := schema.Fields()
	for i, f := range fields {
		ext, isExt := f.Type.(arrow.ExtensionType)
		if !isExt {
			continue
		}
		keys, vals := []string{extensionNameKey, extensionMetadataKey}, []string{ext.ExtensionName(), ext.Serialize()}
		for j, k := range f.Metadata.Keys() {
			if k != extensionNameKey && k != extensionMetadataKey {
				keys, vals = append(keys, k), append(vals, f.Metadata.Values()[j])
			}
		}
		fields[i] = arrow.Field{Name: f.Name, Type: ext.StorageType(), Nullable: f.Nullable, Metadata: arrow.NewMetadata(keys, vals)}
		ok = true
	}
	if !ok {
		return schema, false
	}
	md := schema.Metadata()
	return arrow.NewSchema(fields, &md), true
}

// storageRecord returns rec under the storage schema made by
// parquetStorageSchema: extension columns replaced by their storage arrays
// (shared, not copied). The caller releases the result.
func storageRecord(rec arrow.RecordBatch, schema *arrow.Schema) arrow.RecordBatch {
	cols := make([]arrow.Array, rec.NumCols())
	for i, c := range rec.Columns() {
		if e, ok := c.(array.ExtensionArray); ok {
			cols[i] = e.Storage()
			continue
		}
		cols[i] = c
	}
	return array.NewRecordBatch(schema, cols, rec.NumRows())
}
