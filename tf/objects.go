package tf

import "sync/atomic"

// Objects counts C objects of each kind this package owns: tensors,
// graphs and sessions.
type Objects struct {
	Tensors, Graphs, Sessions int64
}

var live, leaked struct {
	tensors, graphs, sessions atomic.Int64
}

// Live returns the objects created and not yet freed. Every kind is freed
// the same way: by its Close, explicitly; tests compare Live before and
// after to prove that nothing was kept.
func Live() Objects {
	return Objects{Tensors: live.tensors.Load(), Graphs: live.graphs.Load(), Sessions: live.sessions.Load()}
}

// Leaked returns the objects that were garbage collected without Close
// (and freed then). A correct program keeps every count at zero: the
// collector is a leak detector, not the way to free C memory.
func Leaked() Objects {
	return Objects{Tensors: leaked.tensors.Load(), Graphs: leaked.graphs.Load(), Sessions: leaked.sessions.Load()}
}
