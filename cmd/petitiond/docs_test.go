package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	manPage    = filepath.Join("..", "..", "deploy", "petitiond.8")
	completion = filepath.Join("..", "..", "deploy", "petitiond.bash")
)

// commandNames are the commands the binary lists, sorted.
func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	slices.Sort(names)
	return names
}

// commandFlags are the flags a command's -h lists, sorted, -h included.
func commandFlags(t *testing.T, name string) []string {
	t.Helper()
	_, _, usage := cli(context.Background(), name, "-h")
	flags := []string{"-h"}
	for _, m := range regexp.MustCompile(`(?m)^  (-[a-z]+)`).FindAllStringSubmatch(usage, -1) {
		flags = append(flags, m[1])
	}
	slices.Sort(flags)
	return flags
}

// manCommands reads the COMMANDS section of the man page: each entry's tag
// names "petitiond COMMAND [ACTION]"; it returns the commands and the
// actions of each, sorted.
func manCommands(t *testing.T) ([]string, map[string][]string) {
	t.Helper()
	data, err := os.ReadFile(manPage)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	fonts := strings.NewReplacer(`\fB`, "", `\fR`, "", `\fI`, "", `\-`, "-", `"`, "")
	var cmds []string
	actions := map[string][]string{}
	in := false
	for i, line := range lines {
		if strings.HasPrefix(line, ".SH ") {
			in = line == ".SH COMMANDS"
		}
		if !in || line != ".TP" || i+1 >= len(lines) {
			continue
		}
		tag := fonts.Replace(lines[i+1])
		tag = strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(tag, ".BI "), ".BR "), ".B ")
		f := strings.Fields(tag)
		if len(f) < 2 || f[0] != "petitiond" {
			t.Errorf("man page COMMANDS entry %q does not start with petitiond COMMAND", lines[i+1])
			continue
		}
		if !slices.Contains(cmds, f[1]) {
			cmds = append(cmds, f[1])
		}
		if len(f) > 2 && !strings.HasPrefix(f[2], "-") && !strings.HasPrefix(f[2], "[") {
			for _, a := range strings.Split(f[2], "|") {
				if !slices.Contains(actions[f[1]], a) {
					actions[f[1]] = append(actions[f[1]], a)
				}
			}
		}
	}
	slices.Sort(cmds)
	for _, a := range actions {
		slices.Sort(a)
	}
	return cmds, actions
}

// TestManPageListsEveryCommand: every command the binary lists has an entry
// in the man page, with each of its action words, and every entry is a
// command the binary has; every flag of every command is in the page.
func TestManPageListsEveryCommand(t *testing.T) {
	cmds, actions := manCommands(t)
	if want := commandNames(); !slices.Equal(cmds, want) {
		t.Errorf("man page commands %v\nbinary commands   %v", cmds, want)
	}
	for cmd, want := range commandActions() {
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(actions[cmd], want) {
			t.Errorf("man page: %s actions %v, binary %v", cmd, actions[cmd], want)
		}
	}
	for cmd, got := range actions {
		if _, ok := commandActions()[cmd]; !ok {
			t.Errorf("man page gives %s actions %v it does not have", cmd, got)
		}
	}
	page, err := os.ReadFile(manPage)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range commandNames() {
		for _, flag := range commandFlags(t, cmd) {
			if !strings.Contains(string(page), `\`+flag) {
				t.Errorf("man page does not mention %s %s", cmd, flag)
			}
		}
	}
}

// complete runs the bash completion for the words typed so far (the last
// one is being typed) and returns its candidates, sorted.
func complete(t *testing.T, words ...string) []string {
	t.Helper()
	script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _petitiond; printf '%s\n' "${COMPREPLY[@]}"`
	out, err := exec.Command("bash", append([]string{"-c", script, "bash", completion, "petitiond"}, words...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s", words, err, out)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	return got
}

// TestCompletionListsEveryCommand: the bash completion offers exactly the
// commands the binary lists, each command's action words and each
// command's flags.
func TestCompletionListsEveryCommand(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		if os.Getenv("PETITIOND_CI") != "" {
			t.Fatal("bash is needed to test the completion")
		}
		t.Skip("no bash")
	}
	want := append(commandNames(), "-h", "-version")
	slices.Sort(want)
	if got := complete(t, ""); !slices.Equal(got, want) {
		t.Errorf("petitiond <TAB>: %v\nwant %v", got, want)
	}
	for _, cmd := range commandNames() {
		if got, want := complete(t, cmd, "-"), commandFlags(t, cmd); !slices.Equal(got, want) {
			t.Errorf("petitiond %s -<TAB>: %v\nwant %v", cmd, got, want)
		}
		actions := slices.Sorted(slices.Values(commandActions()[cmd]))
		if got := complete(t, cmd, ""); !slices.Equal(got, actions) {
			t.Errorf("petitiond %s <TAB>: %v, want %v", cmd, got, actions)
		}
	}
	// After an action, no other; flag values that are a fixed set.
	for _, c := range []struct {
		words []string
		want  []string
	}{
		{[]string{"held", "-json", "release", ""}, nil},
		{[]string{"held", "-json", ""}, []string{"drop", "release", "show"}},
		{[]string{"held", "drop", "-all", "-reason", "p"}, []string{"postmaster"}},
		{[]string{"dkim-keygen", "-algo", ""}, []string{"ed25519", "rsa"}},
		{[]string{"st"}, []string{"stats"}},
	} {
		if got := complete(t, c.words...); !slices.Equal(got, c.want) {
			t.Errorf("petitiond %s<TAB>: %v, want %v", strings.Join(c.words, " "), got, c.want)
		}
	}
}
