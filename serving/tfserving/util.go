package tfserving

import (
	"sort"
	"unicode/utf8"
)

func sortStrings(s []string) { sort.Strings(s) }

func utf8Valid(b []byte) bool { return utf8.Valid(b) }
