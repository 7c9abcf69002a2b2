// Package traces finds strings in the files below a directory: how tests
// show that what was erased or purged is gone from a store's files, free
// pages included, rather than only from what the store's API answers.
package traces

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Find reports each needle that a file below dir holds, in any ASCII case,
// as "needle" in path; nil when none does.
func Find(dir string, needles ...string) ([]string, error) {
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		data = bytes.ToLower(data)
		for _, n := range needles {
			if bytes.Contains(data, bytes.ToLower([]byte(n))) {
				found = append(found, fmt.Sprintf("%q in %s", n, path))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("traces: read the files below %s: %w", dir, err)
	}
	return found, nil
}
