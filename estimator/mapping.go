package estimator

import (
	"fmt"
	"sort"

	"github.com/gotflow/gotflow/feeder"
)

// byTensor looks the column → tensor mappings up the other way: for every
// tensor that full or one of the short maps (InputMapping, LabelMapping)
// names, the feeder input that feeds it. Entries of full are kept as they
// are, a short map's entries become feeder.Input{Column, Tensor}. A tensor
// named twice, in one map or across them, is an error naming both columns
// (short maps are read in column order, then full).
func byTensor(full feeder.Mapping, short ...map[string]string) (map[string]feeder.Input, error) {
	out := map[string]feeder.Input{}
	add := func(in feeder.Input) error {
		if prev, dup := out[in.Tensor]; dup {
			return fmt.Errorf("columns %q and %q are both mapped to %q", prev.Column, in.Column, in.Tensor)
		}
		out[in.Tensor] = in
		return nil
	}
	for _, m := range short {
		cols := make([]string, 0, len(m))
		for col := range m {
			cols = append(cols, col)
		}
		sort.Strings(cols)
		for _, col := range cols {
			if err := add(feeder.Input{Column: col, Tensor: m[col]}); err != nil {
				return nil, err
			}
		}
	}
	for _, in := range full {
		if err := add(in); err != nil {
			return nil, err
		}
	}
	return out, nil
}
