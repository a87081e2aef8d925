// Package deploy holds the deployment files (Dockerfile, systemd unit,
// Prometheus rules, Grafana dashboard); its tests check what can be checked
// without Docker or systemd running: the Dockerfile's build steps and
// instructions, and the unit's keys (and systemd-analyze verify where it
// exists).
package deploy

import (
	"bufio"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instructions returns the Dockerfile's instructions by stage (a FROM
// starts one), each joined across continuation lines, comments dropped.
func instructions(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s)
			continue
		}
		cur.WriteString(line)
		ins := cur.String()
		cur.Reset()
		if strings.HasPrefix(ins, "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %q before the first FROM", ins)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], ins)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

func find(ins []string, prefix string) []string {
	var out []string
	for _, i := range ins {
		if strings.HasPrefix(i, prefix) {
			out = append(out, strings.TrimPrefix(i, prefix))
		}
	}
	return out
}

// TestDockerfileBuild runs the Dockerfile's build stage as written, without
// Docker: the module download from go.mod, go.sum and third_party alone
// (the layer it makes), then its go build line, and checks that the
// binary is static (no ELF interpreter, no shared library), that it runs,
// and that the final stage copies it to where ENTRYPOINT and HEALTHCHECK
// look, as a non-root user with the data directory a volume.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds paxosd")
	}
	stages := instructions(t)
	if len(stages) != 2 {
		t.Fatalf("Dockerfile has %d stages, want 2 (build, final)", len(stages))
	}
	build, final := stages[0], stages[1]
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	// The module layer: only what is copied before go mod download.
	modDir := t.TempDir()
	for _, c := range find(build, "COPY ") {
		if c == ". ." {
			break
		}
		f := strings.Fields(c)
		for _, src := range f[:len(f)-1] {
			if out, err := exec.Command("cp", "-r", filepath.Join(root, src), modDir).CombinedOutput(); err != nil {
				t.Fatalf("cp %s: %v\n%s", src, err, out)
			}
		}
	}
	runs := find(build, "RUN ")
	if !slices.Contains(runs, "go mod download") {
		t.Fatalf("the build stage runs no go mod download: %q", runs)
	}
	dl := exec.Command("go", "mod", "download")
	dl.Dir = modDir
	if out, err := dl.CombinedOutput(); err != nil {
		t.Fatalf("go mod download with only what the Dockerfile copies first: %v\n%s", err, out)
	}

	// The build line, as written but for the output path.
	var line string
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			line = r
		}
	}
	out := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(line)
	if out == nil || !strings.HasPrefix(line, "CGO_ENABLED=0 ") {
		t.Fatalf("the build line %q: want CGO_ENABLED=0 go build ... -o FILE", line)
	}
	bin := filepath.Join(t.TempDir(), "paxosd")
	cmd := exec.Command("sh", "-c", strings.Replace(line, out[0], "-o "+bin, 1))
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: the binary has an ELF interpreter: it is not static", line)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("%s: the binary needs shared libraries %v (%v)", line, libs, err)
	}
	if b, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		t.Errorf("the built paxosd version: %v\n%s", err, b)
	}

	// The final stage.
	var dest string
	for _, c := range find(final, "COPY ") {
		if strings.Contains(c, "--from=build "+out[1]+" ") {
			dest = c[strings.LastIndex(c, " ")+1:]
		}
	}
	if dest == "" {
		t.Fatalf("the final stage does not copy %s from the build stage", out[1])
	}
	if u := find(final, "USER "); len(u) != 1 || strings.HasPrefix(u[0], "root") || strings.HasPrefix(u[0], "0") {
		t.Errorf("USER %q: want one non-root user", u)
	}
	if v := find(final, "VOLUME "); len(v) != 1 || !strings.Contains(v[0], "/var/lib/paxosd") {
		t.Errorf("VOLUME %q: want the data directory /var/lib/paxosd", v)
	}
	if e := find(final, "EXPOSE "); len(e) != 1 || !strings.Contains(e[0], "7001") {
		t.Errorf("EXPOSE %q: want the node's port 7001", e)
	}
	if e := find(final, "ENTRYPOINT "); len(e) != 1 || !strings.Contains(e[0], `"`+dest+`"`) {
		t.Errorf("ENTRYPOINT %q: want %s", e, dest)
	}
	// The health check names the binary, and its flags are paxosd status's:
	// against a closed port it exits 4 (unavailable), not 2 (usage).
	hc := find(final, "HEALTHCHECK ")
	if len(hc) != 1 {
		t.Fatalf("HEALTHCHECK %q: want one", hc)
	}
	args := regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(hc[0][strings.Index(hc[0], "CMD "):], -1)
	if len(args) < 2 || args[0][1] != dest || args[1][1] != "status" {
		t.Fatalf("HEALTHCHECK %q: want CMD [%q, \"status\", ...]", hc[0], dest)
	}
	var check []string
	for _, a := range args[1:] {
		check = append(check, a[1])
	}
	for i, a := range check {
		if a == "--endpoints" && i+1 < len(check) {
			check[i+1] = "127.0.0.1:1" // nothing listens there
		}
	}
	var ee *exec.ExitError
	if b, err := exec.Command(bin, check...).CombinedOutput(); !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("the health check's command paxosd %q against a closed port: %v, want exit 4\n%s", check, err, b)
	}
}

// unitKeys parses a systemd unit into section.key -> values.
func unitKeys(t *testing.T, file string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", file, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

// TestSystemdUnit checks the unit's limits, restart policy, user, state
// directory and hardening, and that it stops no sooner than a master's
// handover; where systemd-analyze exists, it also verifies the unit.
func TestSystemdUnit(t *testing.T) {
	keys := unitKeys(t, "systemd/paxosd.service")
	for k, want := range map[string]string{
		"Service.User":                     "paxosd",
		"Service.Restart":                  "on-failure",
		"Service.RestartSec":               "5s",
		"Service.RestartPreventExitStatus": "2",
		"Service.LimitNOFILE":              "65536",
		"Service.StateDirectory":           "paxosd",
		"Service.ReadWritePaths":           "/var/lib/paxosd",
		"Service.NoNewPrivileges":          "yes",
		"Service.ProtectSystem":            "strict",
		"Service.PrivateTmp":               "yes",
		"Service.ProtectHome":              "yes",
		"Service.KillSignal":               "SIGTERM",
		"Service.TimeoutStopSec":           "30s",
		"Service.EnvironmentFile":          "/etc/paxosd/paxosd.env",
		"Install.WantedBy":                 "multi-user.target",
	} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	start := keys["Service.ExecStart"]
	if len(start) != 1 || !strings.Contains(start[0], " server ") || !strings.Contains(start[0], "--data-dir /var/lib/paxosd") {
		t.Fatalf("ExecStart=%q: want paxosd server with --data-dir /var/lib/paxosd", start)
	}
	// Every variable ExecStart uses is set in the example environment file.
	env := map[string]bool{}
	b, err := os.ReadFile("systemd/paxosd.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = true
		}
	}
	for _, m := range regexp.MustCompile(`\$\{?(\w+)\}?`).FindAllStringSubmatch(start[0], -1) {
		if !env[m[1]] {
			t.Errorf("ExecStart uses $%s, which systemd/paxosd.env does not set", m[1])
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze: the unit's keys are checked, not verified")
	}
	// verify wants the binary to exist: point the copy at a real file.
	unit, err := os.ReadFile("systemd/paxosd.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "paxosd")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile := filepath.Join(dir, "paxosd.service")
	if err := os.WriteFile(copyFile, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/paxosd", fake)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", copyFile).CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
