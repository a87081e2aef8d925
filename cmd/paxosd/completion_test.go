package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCompletionScripts: paxosd completion prints a script for each shell,
// refuses another name as a usage error (exit 2), and each script, loaded
// by its shell where the shell is installed, completes "paxosd " with the
// commands and "paxosd completion " with the shells.
func TestCompletionScripts(t *testing.T) {
	for _, shell := range completionShells {
		r := run(t, "", "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, "paxosd") {
			t.Errorf("paxosd completion %s: want exit 0 and a script naming paxosd\n%v", shell, r)
		}
	}
	refused(t, "paxosd completion sh", run(t, "", "completion", "sh"), `unknown shell "sh"`)
	refused(t, "paxosd completion", run(t, "", "completion"), "one shell")
	for _, args := range [][]string{{"completion", "sh"}, {"completion"}, {"completion", "bash", "zsh"}} {
		if r := run(t, "", args...); r.code != exitUsage {
			t.Errorf("paxosd %s: exit %d, want %d (usage)", strings.Join(args, " "), r.code, exitUsage)
		}
	}

	// Each shell runs with the test's binary first on its PATH, as an
	// installed paxosd would be.
	path := filepath.Dir(binary) + string(os.PathListSeparator) + os.Getenv("PATH")
	shells := map[string]string{
		// COMP_WORDS as bash splits "paxosd " and "paxosd completion ".
		"bash": `set -e
source <(paxosd completion bash)
COMP_WORDS=(paxosd ""); COMP_CWORD=1; _paxosd_bash_autocomplete; printf '%s\n' "${COMPREPLY[@]}"
COMP_WORDS=(paxosd completion ""); COMP_CWORD=2; _paxosd_bash_autocomplete; printf '%s\n' "${COMPREPLY[@]}"`,
		// compdef and _describe belong to the completion system, which
		// runs only inside the line editor: stand-ins print what the
		// script would offer.
		"zsh": `set -e
compdef() { : }
_describe() { printf '%s\n' "${opts[@]}" }
source <(paxosd completion zsh)
words=(paxosd ""); _paxosd_zsh_autocomplete
words=(paxosd completion ""); _paxosd_zsh_autocomplete`,
		"fish": `paxosd completion fish | source
complete -C 'paxosd '
complete -C 'paxosd completion '`,
	}
	for _, shell := range completionShells {
		t.Run(shell, func(t *testing.T) {
			sh, err := exec.LookPath(shell)
			if err != nil {
				t.Skipf("%s is not installed", shell)
			}
			cmd := exec.Command(sh, "-c", shells[shell])
			cmd.Env = append(env(), "PATH="+path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", shell, err, out)
			}
			var offered []string
			for _, l := range strings.Split(string(out), "\n") {
				offered = append(offered, strings.FieldsFunc(l, func(r rune) bool { return r == '\t' || r == ':' })...)
			}
			for _, want := range []string{"append", "server", "status", "members", "completion", "bash", "zsh", "fish"} {
				if !slices.Contains(offered, want) {
					t.Errorf("%s completion does not offer %q; it offered:\n%s", shell, want, out)
				}
			}
		})
	}
}
