// Package deploy_test checks the files under deploy/ against each other and
// against the code they deploy. Neither Docker nor a Kubernetes cluster is
// available here or in CI, so these tests read the files; see README.md
// for what they can and cannot catch.
//
// This file covers the Dockerfile, the example config and how the files
// refer to each other; manifests_test.go decodes the Kubernetes manifests
// and compose.yaml into their real types.
package deploy_test

import (
	"bytes"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/stepup-dev/stepup/internal/config"
)

// The paths the images, compose.yaml and the Deployment agree on.
const (
	exampleConfig   = "stepupd.yaml"
	drainSeconds    = 20 // cmd/stepupd's shutdown timeout for requests in flight
	configMapFile   = "k8s/configmap.yaml"
	configMapKey    = "stepupd.yaml"
	kustomization   = "k8s/kustomization.yaml"
	exampleSecret   = "k8s/secret.example.yaml"
	dockerfile      = "Dockerfile"
	builderStageTag = "golang:"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goModVersion is go.mod's go line, which the builder image must match:
// an older image cannot build the module, a newer one builds with another
// toolchain than the tests ran on.
func goModVersion(t *testing.T) string {
	t.Helper()
	for line := range strings.Lines(string(readFile(t, "../go.mod"))) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// stage is one FROM … of a Dockerfile, with its instructions.
type stage struct {
	image, name string
	instrs      []instr
}

type instr struct {
	cmd, args string // cmd in upper case; args with continuation lines joined
	line      int
}

func (s stage) all(cmd string) []instr {
	var out []instr
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// parseDockerfile splits a Dockerfile into stages. It understands what
// deploy/Dockerfile uses: comments, backslash continuations, FROM with
// --platform and AS. Heredocs and a changed escape character it does not.
func parseDockerfile(t *testing.T, data []byte) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	start := 0
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			start = i + 1
		} else if strings.HasPrefix(line, "#") {
			continue // comments may sit between continuation lines
		}
		if body, more := strings.CutSuffix(line, `\`); more {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		cur.Reset()
		in := instr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", dockerfile, in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s ends inside a continued line", dockerfile)
	}
	return stages
}

// goBuild is the builder stage's go build command, split like sh would
// split it (only double quotes are handled, which is all it uses).
type goBuild struct {
	env      map[string]string // ENV of the stage and VAR=value before go build
	flags    []string          // up to -o
	out      string
	packages []string
}

var shellWord = regexp.MustCompile(`(?:[^\s"]+|"[^"]*")+`)

func splitWords(s string) []string {
	words := shellWord.FindAllString(s, -1)
	for i, w := range words {
		words[i] = strings.ReplaceAll(w, `"`, "")
	}
	return words
}

func findGoBuild(t *testing.T, st stage) goBuild {
	t.Helper()
	gb := goBuild{env: map[string]string{}}
	for _, in := range st.all("ENV") {
		for _, w := range splitWords(in.args) {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				t.Fatalf("%s:%d: write ENV as KEY=value", dockerfile, in.line)
			}
			gb.env[k] = v
		}
	}
	var found []string
	for _, in := range st.all("RUN") {
		words := splitWords(in.args)
		for i := 0; i+1 < len(words); i++ {
			if words[i] == "go" && words[i+1] == "build" {
				if found != nil {
					t.Fatalf("%s:%d: a second go build; the test expects one", dockerfile, in.line)
				}
				found = words[i+2:]
				for _, w := range words[:i] {
					if k, v, ok := strings.Cut(w, "="); ok && !strings.HasPrefix(w, "-") {
						gb.env[k] = v
					}
				}
			}
		}
	}
	if found == nil {
		t.Fatalf("%s: no go build in the %s stage", dockerfile, st.name)
	}
	for i := 0; i < len(found); i++ {
		switch w := found[i]; {
		case w == "-o" && i+1 < len(found):
			gb.out = found[i+1]
			gb.packages = found[i+2:]
			return gb
		case strings.HasPrefix(w, "-"):
			gb.flags = append(gb.flags, w)
		}
	}
	t.Fatalf("%s: go build has no -o DIR/ before its packages", dockerfile)
	return gb
}

func builderStage(t *testing.T, stages []stage) stage {
	t.Helper()
	for _, st := range stages {
		if strings.HasPrefix(st.image, builderStageTag) {
			return st
		}
	}
	t.Fatalf("%s: no stage FROM %s…", dockerfile, builderStageTag)
	return stage{}
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, readFile(t, dockerfile))
	build := builderStage(t, stages)

	t.Run("builder Go matches go.mod", func(t *testing.T) {
		want := goModVersion(t)
		tag := strings.TrimPrefix(build.image, builderStageTag)
		version, _, _ := strings.Cut(tag, "-") // golang:1.26.8-bookworm and the like
		if version != want {
			t.Errorf("builder image %s has Go %q; go.mod says go %s", build.image, version, want)
		}
	})

	gb := findGoBuild(t, build)
	t.Run("static, trimmed build", func(t *testing.T) {
		if gb.env["CGO_ENABLED"] != "0" {
			t.Errorf("the builder does not set CGO_ENABLED=0 (got %q); the binaries would need a libc distroless/static lacks", gb.env["CGO_ENABLED"])
		}
		if !slices.Contains(gb.flags, "-trimpath") {
			t.Errorf("go build flags %q lack -trimpath", gb.flags)
		}
		for _, p := range gb.packages {
			if _, err := os.Stat(filepath.Join("..", p)); err != nil {
				t.Errorf("go build names %s: %v", p, err)
			}
		}
	})

	builtBy := map[string]bool{} // binaries the build stage leaves in gb.out
	for _, p := range gb.packages {
		builtBy[filepath.Join(gb.out, filepath.Base(p))] = true
	}
	targets := map[string]bool{}
	for _, st := range stages {
		if st.name == build.name {
			continue
		}
		targets[st.name] = true
		t.Run("stage "+st.name, func(t *testing.T) {
			users := st.all("USER")
			if len(users) == 0 {
				t.Fatalf("stage %s sets no USER; it would run as root", st.name)
			}
			last := users[len(users)-1]
			uid, _, _ := strings.Cut(last.args, ":")
			n, err := strconv.Atoi(uid)
			switch {
			case err != nil:
				t.Errorf("%s:%d: USER %s is not numeric; Kubernetes runAsNonRoot cannot verify a name", dockerfile, last.line, last.args)
			case n == 0:
				t.Errorf("%s:%d: USER %s is root", dockerfile, last.line, last.args)
			}
			// Every binary copied from the builder must be one it builds.
			for _, in := range st.all("COPY") {
				w := strings.Fields(in.args)
				if !slices.Contains(w, "--from="+build.name) {
					continue
				}
				w = slices.DeleteFunc(w, func(s string) bool { return strings.HasPrefix(s, "--") })
				for _, src := range w[:len(w)-1] {
					if !builtBy[src] {
						t.Errorf("%s:%d: copies %s, which go build (-o %s %s) does not produce", dockerfile, in.line, src, gb.out, strings.Join(gb.packages, " "))
					}
				}
			}
			if len(st.all("ENTRYPOINT")) == 0 {
				t.Errorf("stage %s has no ENTRYPOINT", st.name)
			}
		})
	}
	for _, want := range []string{"stepupd", "stepup-gateway"} {
		if !targets[want] {
			t.Errorf("%s has no target %q (targets: %v)", dockerfile, want, targets)
		}
	}
	if last := stages[len(stages)-1]; last.name != "stepupd" {
		t.Errorf("the last stage, which a build without --target gives, is %q; want stepupd", last.name)
	}

	t.Run("stepupd exposes the config's port", func(t *testing.T) {
		port := configPort(t, readFile(t, exampleConfig))
		for _, st := range stages {
			if st.name != "stepupd" {
				continue
			}
			var exposed []string
			for _, in := range st.all("EXPOSE") {
				exposed = append(exposed, strings.Fields(in.args)...)
			}
			if !slices.Contains(exposed, port) && !slices.Contains(exposed, port+"/tcp") {
				t.Errorf("stepupd exposes %v; %s listens on %s", exposed, exampleConfig, port)
			}
		}
	})
}

// configPort is the port of the addr key of a stepupd config file.
func configPort(t *testing.T, data []byte) string {
	t.Helper()
	c, err := config.Parse(data, exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		t.Fatalf("%s: addr %q: %v", exampleConfig, c.Addr, err)
	}
	return port
}

// TestNoCgo asks the go command, without compiling, whether every package
// the image builds still builds with cgo off: a dependency that quietly
// needs cgo would otherwise break only the image build.
func TestNoCgo(t *testing.T) {
	gb := findGoBuild(t, builderStage(t, parseDockerfile(t, readFile(t, dockerfile))))
	for _, f := range gb.flags {
		if strings.Contains(f, "linkmode") || strings.Contains(f, "-extldflags") {
			t.Errorf("go build flag %q links externally; the binary might not be static", f)
		}
	}
	args := append([]string{"list", "-deps", "-e", "-f", "{{if .Error}}{{.ImportPath}}: {{.Error}}{{end}}"}, gb.packages...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED="+gb.env["CGO_ENABLED"])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("with CGO_ENABLED=%s these packages do not build:\n%s", gb.env["CGO_ENABLED"], s)
	}
}

// TestStaticBinary builds stepupd the way the Dockerfile does and checks
// that the result needs no dynamic loader, which distroless/static does not
// have. TestNoCgo covers the likely cause cheaply; this is the proof, and
// it costs a full build with flags the other tests do not use (minutes on
// a cold cache, seconds on a warm one), so it runs only when asked:
// STEPUP_TEST_STATIC_BUILD=1.
func TestStaticBinary(t *testing.T) {
	if os.Getenv("STEPUP_TEST_STATIC_BUILD") != "1" {
		t.Skip("set STEPUP_TEST_STATIC_BUILD=1 to build stepupd as the Dockerfile does and check it is static")
	}
	stages := parseDockerfile(t, readFile(t, dockerfile))
	gb := findGoBuild(t, builderStage(t, stages))
	if !slices.Contains(gb.packages, "./cmd/stepupd") {
		t.Fatalf("the Dockerfile does not build ./cmd/stepupd (packages %q)", gb.packages)
	}
	bin := filepath.Join(t.TempDir(), "stepupd")
	args := append([]string{"build"}, gb.flags...)
	args = append(args, "-o", bin, "./cmd/stepupd")
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	// The image runs on Linux whatever the host is; GOARCH stays the
	// host's so that the build cache of the other tests is reused.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=-mod=readonly")
	for k, v := range gb.env {
		if k == "CGO_ENABLED" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	t.Logf("built in %s with go %s", time.Since(start).Round(time.Millisecond), strings.Join(args, " "))

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("stepupd has a PT_INTERP segment: it is dynamically linked and will not start on distroless/static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil {
		t.Error(err)
	} else if len(libs) > 0 {
		t.Errorf("stepupd needs shared libraries %q", libs)
	}
}

// TestExampleConfig checks deploy/stepupd.yaml by itself: it parses, it
// holds no secret (the deployments pass it in the environment), and it is
// only incomplete for want of that secret.
func TestExampleConfig(t *testing.T) {
	data := readFile(t, exampleConfig)
	c, err := config.Parse(data, exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if c.Secret != "" {
		t.Errorf("%s holds the secret; pass it as STEPUP_SECRET from a Secret or the env file", exampleConfig)
	}
	if strings.Contains(c.Store, "@") {
		t.Errorf("%s: store %q holds credentials; pass the URL as STEPUP_STORE", exampleConfig, c.Store)
	}
	if c.SMTP.Password != "" || c.Gateway.ClientSecret != "" || c.Metrics.Token != "" {
		t.Errorf("%s holds a password, client secret or metrics token; pass them in the environment", exampleConfig)
	}
	for i, cl := range c.Clients {
		if cl.Secret != "" {
			t.Errorf("%s: clients[%d] (%s) has a clear secret; use secret_hash", exampleConfig, i, cl.ID)
		}
	}
	for i, u := range c.Users {
		if u.Password != "" {
			t.Errorf("%s: users[%d] (%s) has a clear password; use password_hash", exampleConfig, i, u.Username)
		}
	}
	// With a valid secret supplied, the file must be complete: nothing but
	// the environment's secrets missing.
	env := map[string]string{"STEPUP_SECRET": strings.Repeat("s", 32)}
	if _, err := config.Load(writeTemp(t, data), lookup(env)); err != nil {
		t.Errorf("%s with only STEPUP_SECRET added does not load:\n%v", exampleConfig, err)
	}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stepupd.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// lookup serves STEPUP_* variables from env alone, so that the test
// process's own environment cannot make a config valid.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// TestConfigMapCopy keeps the ConfigMap's copy of the example config equal
// to deploy/stepupd.yaml, which compose mounts, so that what the manifest
// tests load is what both deployments run. It reads the ConfigMap with
// plain YAML; manifests_test.go decodes it into the real type.
func TestConfigMapCopy(t *testing.T) {
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(readFile(t, configMapFile), &cm); err != nil {
		t.Fatal(err)
	}
	got, ok := cm.Data[configMapKey]
	if cm.Kind != "ConfigMap" || !ok {
		t.Fatalf("%s: want a ConfigMap with data.%s", configMapFile, configMapKey)
	}
	if want := string(readFile(t, exampleConfig)); got != want {
		t.Errorf("%s data.%s differs from %s; regenerate it (README.md says how):\n%s", configMapFile, configMapKey, exampleConfig, firstDiff(got, want))
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, gl, wl)
		}
	}
	return "(only line endings differ)"
}

// TestKustomization checks that apply -k applies every manifest but the
// example Secret, which would overwrite the real one with placeholders.
func TestKustomization(t *testing.T) {
	var k struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Resources  []string `yaml:"resources"`
		Images     []struct {
			Name    string `yaml:"name"`
			NewName string `yaml:"newName"`
			NewTag  string `yaml:"newTag"`
		} `yaml:"images"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, kustomization)))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("%s: %v", kustomization, err)
	}
	if k.Kind != "Kustomization" {
		t.Errorf("%s: kind %q", kustomization, k.Kind)
	}
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if f != kustomization && f != exampleSecret {
			want = append(want, filepath.Base(f))
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("%s resources = %q; want every manifest but the example Secret: %q", kustomization, got, want)
	}
}
