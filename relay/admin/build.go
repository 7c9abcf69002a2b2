package admin

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Build says what this binary was built from, as the Go toolchain recorded
// it (runtime/debug.ReadBuildInfo), for `petitiond version` and the
// petitiond_build_info metric.
type Build struct {
	// Version is the module version: "v1.2.0" for a build of a tagged
	// module, "(devel)" for a build from a checkout.
	Version string `json:"version"`
	// Revision is the commit built from, "" when the toolchain did not
	// record one (go run, -buildvcs=false, no VCS).
	Revision string `json:"revision,omitempty"`
	// Time is the commit's time, RFC 3339.
	Time string `json:"time,omitempty"`
	// Modified: the checkout had changes that were not committed.
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go"`
}

// ReadBuild reads the binary's build information.
func ReadBuild() Build {
	b := Build{Version: "(unknown)", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if info.Main.Version != "" {
		b.Version = info.Main.Version
	}
	if info.GoVersion != "" {
		b.GoVersion = info.GoVersion
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is the build on one line, e.g. "petitiond (devel) commit
// 3f2a9c1d0e4b (modified, 2026-11-27T10:00:00Z) go1.26.8".
func (b Build) String() string {
	var s strings.Builder
	s.WriteString("petitiond " + b.Version)
	if b.Revision != "" {
		s.WriteString(" commit " + b.Revision)
		var notes []string
		if b.Modified {
			notes = append(notes, "modified")
		}
		if b.Time != "" {
			notes = append(notes, b.Time)
		}
		if len(notes) > 0 {
			s.WriteString(" (" + strings.Join(notes, ", ") + ")")
		}
	}
	s.WriteString(" " + b.GoVersion)
	return s.String()
}
