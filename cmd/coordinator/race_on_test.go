//go:build race

package main

// raceEnabled: the tests run under -race, so the binary they build is built
// with -race too, reusing the packages the test build compiled (and
// checking the daemon for races during the end-to-end tests).
const raceEnabled = true
