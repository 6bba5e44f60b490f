package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A second run of the same commit on the same day gets its own file; the
// first run's figures stay.
func TestWriteResultsNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	for i, want := range []string{"d-c.md", "d-c-2.md", "d-c-3.md"} {
		report := "run " + want
		path, err := writeResults(dir, "d-c", report)
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if path != filepath.Join(dir, want) {
			t.Fatalf("run %d wrote %s, want %s", i+1, path, want)
		}
	}
	for _, name := range []string{"d-c.md", "d-c-2.md", "d-c-3.md"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "run "+name {
			t.Errorf("%s holds %q", name, b)
		}
	}
}
