// Package converter carries the sources of the Python model converter
// (this directory's *.py), so that an installed gotflow binary runs
// `gotflow convert` from any directory: it writes them to a cache
// directory and runs them with the user's Python.
package converter

import "embed"

// Sources are the converter's Python modules, at the root of the FS.
//
//go:embed *.py
var Sources embed.FS
