package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts are urfave/cli's documented ones
// (autocomplete/bash_autocomplete and zsh_autocomplete in its
// repository), named for paxosd, the bash one also working without the
// bash-completion package: they ask the binary itself
// (--generate-bash-completion, which EnableBashCompletion adds) for the
// commands and flags that may follow the words typed so far.
const bashCompletion = `# bash completion for paxosd (paxosd completion bash)

# Macs have bash3 for which the bash-completion package doesn't include
# _init_completion. This is a minimal version of that function; without
# the bash-completion package at all, it takes the words as bash split them.
_paxosd_init_completion() {
  COMPREPLY=()
  if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
    _get_comp_words_by_ref "$@" cur prev words cword
  else
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
}

_paxosd_bash_autocomplete() {
  if [[ "${COMP_WORDS[0]}" != "source" ]]; then
    local cur opts base words
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    if declare -F _init_completion >/dev/null 2>&1; then
      _init_completion -n "=:" || return
    else
      _paxosd_init_completion -n "=:" || return
    fi
    words=("${words[@]:0:$cword}")
    if [[ "$cur" == "-"* ]]; then
      requestComp="${words[*]} ${cur} --generate-bash-completion"
    else
      requestComp="${words[*]} --generate-bash-completion"
    fi
    opts=$(eval "${requestComp}" 2>/dev/null)
    COMPREPLY=($(compgen -W "${opts}" -- ${cur}))
    return 0
  fi
}

complete -o bashdefault -o default -o nospace -F _paxosd_bash_autocomplete paxosd
`

const zshCompletion = `#compdef paxosd
# zsh completion for paxosd (paxosd completion zsh)

_paxosd_zsh_autocomplete() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi

  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}

compdef _paxosd_zsh_autocomplete paxosd
`

var completionShells = []string{"bash", "zsh", "fish"}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints the script that completes paxosd's commands and flags in the shell named.
The bash and zsh scripts ask the paxosd binary on the PATH what may follow, so they stay
right across upgrades; the fish script lists the commands and flags of this binary
(print it again after an upgrade).
Examples:
  # bash: this shell only, then for every new shell (the bash-completion package loads the directory)
  source <(paxosd completion bash)
  paxosd completion bash | sudo tee /etc/bash_completion.d/paxosd >/dev/null

  # zsh: into a directory of $fpath, before compinit runs in ~/.zshrc
  paxosd completion zsh > "${fpath[1]}/_paxosd"
  #   or, in ~/.zshrc after compinit: source <(paxosd completion zsh)

  # fish
  paxosd completion fish > ~/.config/fish/completions/paxosd.fish`,
		BashComplete: func(c *cli.Context) {
			if c.NArg() == 0 {
				fmt.Fprintln(c.App.Writer, strings.Join(completionShells, "\n"))
			}
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr(fmt.Errorf("paxosd completion takes one shell: %s", strings.Join(completionShells, ", ")))
			}
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				var err error
				if script, err = c.App.ToFishCompletion(); err != nil {
					return err
				}
				// urfave/cli's fish script lists commands and flags only.
				script += "complete -c paxosd -n '__fish_seen_subcommand_from completion' -f -a '" + strings.Join(completionShells, " ") + "'\n"
			default:
				return usageErr(fmt.Errorf("unknown shell %q: pick %s", shell, strings.Join(completionShells, ", ")))
			}
			_, err := fmt.Fprint(os.Stdout, script)
			return err
		},
	}
}
