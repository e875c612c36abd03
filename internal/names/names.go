// Package names finds the names closest to a misspelt one, for "not found"
// errors that list what exists.
package names

import (
	"fmt"
	"sort"
	"strings"
)

// Closest returns up to k of have, nearest to name by edit distance (ties
// keep have's order).
func Closest(name string, have []string, k int) []string {
	type cand struct {
		s string
		d int
	}
	cs := make([]cand, 0, len(have))
	for _, h := range have {
		cs = append(cs, cand{h, distance(name, h)})
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].d < cs[j].d })
	out := make([]string, 0, k)
	for i := 0; i < len(cs) && i < k; i++ {
		out = append(out, cs[i].s)
	}
	return out
}

// NotFound formats `<kind> "name" not found (closest: a, b, c)`.
func NotFound(kind, name string, have []string) string {
	c := Closest(name, have, 5)
	if len(c) == 0 {
		return fmt.Sprintf("%s %q not found (there are none)", kind, name)
	}
	return fmt.Sprintf("%s %q not found (closest: %s)", kind, name, strings.Join(c, ", "))
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
