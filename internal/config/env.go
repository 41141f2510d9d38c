package config

import (
	"slices"
	"sort"
	"strings"
)

// otherEnv are BATON_ variables read outside the config: the config file's
// path (cmd/coordinator), the tests' switch for a real Redis, and prefixes
// kept by cmd/bench and the tests' child processes.
var (
	otherEnv         = []string{"BATON_CONFIG", "BATON_REQUIRE_REDIS"}
	otherEnvPrefixes = []string{"BATON_BENCH_", "BATON_CRASH_"}
)

// UnknownVar is a BATON_ environment variable that nothing reads.
type UnknownVar struct {
	// Name is the variable's name.
	Name string
	// Suggestion is the known name closest to it (a likely typo), or "".
	Suggestion string
}

// UnknownEnv lists the BATON_ variables of environ that no config key (and
// no other part of Baton) reads, sorted by name: a mistyped
// BATON_REDIS_UR would otherwise leave the daemon on its embedded Redis
// without a word.
func UnknownEnv(environ []string) []UnknownVar {
	known := slices.Clone(otherEnv)
	for _, key := range Keys() {
		known = append(known, EnvName(key))
	}
	var out []UnknownVar
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || slices.Contains(known, name) ||
			slices.ContainsFunc(otherEnvPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		out = append(out, UnknownVar{Name: name, Suggestion: closest(name, known)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// closest returns the candidate nearest to name in edit distance, if it is
// within a third of name's length (at most 4 edits).
func closest(name string, candidates []string) string {
	best, bestDist := "", min(4, len(name)/3)+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
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
