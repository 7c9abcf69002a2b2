package traces

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestFind(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"a.db": "x\x00Ana@Example.TEST\x00y", "sub/b.eml": "nothing here"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	found, err := Find(dir, "ana@example.test", "absent")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`"ana@example.test" in ` + filepath.Join(dir, "a.db")}; !slices.Equal(found, want) {
		t.Errorf("Find = %v, want %v", found, want)
	}
}
