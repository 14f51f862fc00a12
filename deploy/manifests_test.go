// Kubernetes and compose checks: every manifest decoded strictly into the
// real k8s.io/api types, compose.yaml loaded and validated by compose-go.

package deploy_test

import (
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/stepup-dev/stepup/internal/config"
)

// manifests is every object under deploy/k8s, decoded into its real type.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
	where       map[any]string // object -> file, for messages
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadManifests decodes each document strictly: a misspelt or misplaced
// field, which kubectl would reject (or, with older clients, silently
// drop), fails here. The kinds listed are the only ones deploy/k8s uses;
// any other is an error, so that a new kind comes with its checks.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := manifests{where: map[any]string{}}
	for _, f := range files {
		if f == kustomization {
			continue // not a Kubernetes object; TestKustomization reads it
		}
		for i, doc := range docSeparator.Split(string(readFile(t, f)), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			name := f + " document " + strconv.Itoa(i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				d := &appsv1.Deployment{}
				m.deployments, obj = append(m.deployments, d), d
			case "v1 Service":
				s := &corev1.Service{}
				m.services, obj = append(m.services, s), s
			case "v1 ConfigMap":
				c := &corev1.ConfigMap{}
				m.configMaps, obj = append(m.configMaps, c), c
			case "v1 Secret":
				s := &corev1.Secret{}
				m.secrets, obj = append(m.secrets, s), s
			case "policy/v1 PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				m.pdbs, obj = append(m.pdbs, p), p
			default:
				t.Fatalf("%s: apiVersion %q kind %q is not one this test knows; add it with its checks", name, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			m.where[obj] = name
		}
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func (m manifests) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	for _, d := range m.deployments {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no Deployment %q under deploy/k8s", name)
	return nil
}

func (m manifests) secret(name string) *corev1.Secret {
	for _, s := range m.secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// selects reports whether a selector picks pods with the given labels.
func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false // an empty selector here is a mistake, not "everything"
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func labelSelector(t *testing.T, ls *metav1.LabelSelector, where string) map[string]string {
	t.Helper()
	if ls == nil {
		t.Fatalf("%s has no selector", where)
	}
	if len(ls.MatchExpressions) > 0 {
		t.Fatalf("%s uses matchExpressions, which this test does not evaluate", where)
	}
	return ls.MatchLabels
}

// containerPort resolves a probe's or Service's port (a number or a name)
// against a container's ports.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func TestKubernetes(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment(t, "stepupd")
	where := m.where[d]
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want one container, got %d", where, len(pod.Containers))
	}
	c := pod.Containers[0]
	addrPort := configPort(t, readFile(t, exampleConfig))

	t.Run("replicas", func(t *testing.T) {
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("%s: replicas %v; want 2 or more", where, d.Spec.Replicas)
		}
	})

	t.Run("probes", func(t *testing.T) {
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
			path  string
		}{
			{"readinessProbe", c.ReadinessProbe, "/readyz"},
			{"livenessProbe", c.LivenessProbe, "/healthz"},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: %s is not an httpGet probe", where, p.kind)
				continue
			}
			if p.probe.HTTPGet.Path != p.path {
				t.Errorf("%s: %s asks %s; want %s", where, p.kind, p.probe.HTTPGet.Path, p.path)
			}
			port, ok := containerPort(c, p.probe.HTTPGet.Port)
			if !ok {
				t.Errorf("%s: %s port %s is none of the container's ports", where, p.kind, p.probe.HTTPGet.Port.String())
			} else if strconv.Itoa(int(port)) != addrPort {
				t.Errorf("%s: %s asks port %d; %s listens on %s", where, p.kind, port, exampleConfig, addrPort)
			}
		}
	})

	t.Run("security", func(t *testing.T) {
		for _, dep := range m.deployments {
			ps := dep.Spec.Template.Spec.SecurityContext
			for _, ctr := range dep.Spec.Template.Spec.Containers {
				cs := ctr.SecurityContext
				nonRoot := (cs != nil && cs.RunAsNonRoot != nil && *cs.RunAsNonRoot) ||
					(ps != nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot)
				if !nonRoot {
					t.Errorf("%s: container %s: runAsNonRoot is not true", m.where[dep], ctr.Name)
				}
				if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem {
					t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", m.where[dep], ctr.Name)
				}
				if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
					t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", m.where[dep], ctr.Name)
				}
				if ctr.Resources.Requests.Memory().IsZero() || ctr.Resources.Limits.Memory().IsZero() || ctr.Resources.Requests.Cpu().IsZero() {
					t.Errorf("%s: container %s: want cpu and memory requests and a memory limit", m.where[dep], ctr.Name)
				}
			}
		}
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		grace := int64(30) // Kubernetes' default
		if pod.TerminationGracePeriodSeconds != nil {
			grace = *pod.TerminationGracePeriodSeconds
		}
		// preStop runs inside the grace period, before SIGTERM reaches
		// stepupd, whose drain then needs its 20 s.
		var preStop int64
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = c.Lifecycle.PreStop.Sleep.Seconds
		}
		if grace <= preStop+drainSeconds {
			t.Errorf("%s: terminationGracePeriodSeconds %d; want more than preStop %d s + stepupd's %d s drain", where, grace, preStop, drainSeconds)
		}
	})

	t.Run("selectors", func(t *testing.T) {
		for _, dep := range m.deployments {
			sel := labelSelector(t, dep.Spec.Selector, m.where[dep])
			if !selects(sel, dep.Spec.Template.Labels) {
				t.Errorf("%s: selector %v does not match its own pod labels %v", m.where[dep], sel, dep.Spec.Template.Labels)
			}
		}
		for _, svc := range m.services {
			var target *appsv1.Deployment
			for _, dep := range m.deployments {
				if selects(svc.Spec.Selector, dep.Spec.Template.Labels) {
					target = dep
				}
			}
			if target == nil {
				t.Errorf("%s: Service %s selector %v matches no Deployment's pods", m.where[svc], svc.Name, svc.Spec.Selector)
				continue
			}
			for _, p := range svc.Spec.Ports {
				tp := p.TargetPort
				if tp.Type == intstr.Int && tp.IntVal == 0 {
					tp = intstr.FromInt32(p.Port) // the default
				}
				if _, ok := containerPort(target.Spec.Template.Spec.Containers[0], tp); !ok {
					t.Errorf("%s: Service %s targetPort %s is none of %s's container ports", m.where[svc], svc.Name, tp.String(), target.Name)
				}
			}
		}
		var covered bool
		for _, pdb := range m.pdbs {
			if selects(labelSelector(t, pdb.Spec.Selector, m.where[pdb]), d.Spec.Template.Labels) {
				covered = true
				if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
					t.Errorf("%s: neither minAvailable nor maxUnavailable", m.where[pdb])
				}
			}
		}
		if !covered {
			t.Errorf("no PodDisruptionBudget selects stepupd's pods %v", d.Spec.Template.Labels)
		}
	})

	t.Run("secret references", func(t *testing.T) {
		for _, dep := range m.deployments {
			for _, ctr := range dep.Spec.Template.Spec.Containers {
				for _, e := range ctr.Env {
					if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
						continue
					}
					ref := e.ValueFrom.SecretKeyRef
					s := m.secret(ref.Name)
					if s == nil {
						t.Errorf("%s: %s reads Secret %q, which %s does not define", m.where[dep], e.Name, ref.Name, exampleSecret)
						continue
					}
					if _, ok := secretData(s)[ref.Key]; !ok {
						t.Errorf("%s: %s reads key %q of Secret %s, which has %v", m.where[dep], e.Name, ref.Key, ref.Name, keys(secretData(s)))
					}
				}
			}
		}
		for _, s := range m.secrets {
			if m.where[s] != exampleSecret+" document 1" {
				t.Errorf("%s: a Secret outside %s; real secrets do not belong in the repository", m.where[s], exampleSecret)
			}
			for k, v := range secretData(s) {
				if !strings.Contains(v, "REPLACE") {
					t.Errorf("%s: %s = %q does not look like a placeholder; write REPLACE-ME…", m.where[s], k, v)
				}
			}
		}
	})

	t.Run("config", func(t *testing.T) {
		path, ok := configArg(c.Args)
		if !ok {
			t.Fatalf("%s: args %q have no --config", where, c.Args)
		}
		data := configFromVolumes(t, m, pod, c, path)
		env := containerEnv(t, m, c)
		cfg, err := config.Load(writeTemp(t, data), lookup(env))
		if err != nil {
			t.Fatalf("the ConfigMap's config with the Deployment's environment does not load:\n%v", err)
		}
		// The store must be the Redis these manifests run (or a managed
		// one, which README.md tells to put here).
		u, err := url.Parse(cfg.Store)
		if err != nil {
			t.Fatalf("store: %v", err)
		}
		host, port, _ := net.SplitHostPort(u.Host)
		var found bool
		for _, svc := range m.services {
			for _, p := range svc.Spec.Ports {
				if svc.Name == host && strconv.Itoa(int(p.Port)) == port {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("store %s:%s is no Service and port in deploy/k8s", host, port)
		}
		if u.User == nil {
			t.Errorf("the store URL has no password")
		}
	})
}

func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

func keys(m map[string]string) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

// configArg finds the file stepupd is told to read.
func configArg(args []string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v, true
		}
		if a == "--config" && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// configFromVolumes follows path through the container's mounts to the
// ConfigMap key that supplies it.
func configFromVolumes(t *testing.T, m manifests, pod corev1.PodSpec, c corev1.Container, path string) []byte {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") || vm.SubPath != "" {
			continue
		}
		if !vm.ReadOnly {
			t.Errorf("the config mount %s is not readOnly", vm.MountPath)
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			key := rel
			for _, it := range v.ConfigMap.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			for _, cm := range m.configMaps {
				if cm.Name == v.ConfigMap.Name {
					data, ok := cm.Data[key]
					if !ok {
						t.Fatalf("ConfigMap %s has no key %q for %s", cm.Name, key, path)
					}
					return []byte(data)
				}
			}
			t.Fatalf("volume %s names ConfigMap %q, which deploy/k8s does not define", v.Name, v.ConfigMap.Name)
		}
	}
	t.Fatalf("no ConfigMap volume is mounted where --config %s points", path)
	return nil
}

var dependentVar = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv computes the container's environment as the kubelet would,
// with secrets from the example Secret: $(VAR) refers to a variable defined
// earlier in the list and is left as written otherwise.
func containerEnv(t *testing.T, m manifests, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = dependentVar.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if v, ok := env[dependentVar.FindStringSubmatch(ref)[1]]; ok {
					return v
				}
				return ref
			})
		case e.ValueFrom.SecretKeyRef != nil:
			if s := m.secret(e.ValueFrom.SecretKeyRef.Name); s != nil {
				env[e.Name] = secretData(s)[e.ValueFrom.SecretKeyRef.Key]
			}
		case e.ValueFrom.ResourceFieldRef != nil, e.ValueFrom.FieldRef != nil:
			// Known only in a running pod; none of them is a STEPUP_ key.
			if strings.HasPrefix(e.Name, "STEPUP_") {
				t.Errorf("%s comes from the pod's runtime fields, which this test cannot evaluate", e.Name)
			}
		default:
			t.Errorf("%s: a valueFrom this test does not know", e.Name)
		}
	}
	return env
}

// composeEnv is the example env file compose interpolates from.
func composeEnv(t *testing.T) map[string]string {
	t.Helper()
	env, err := dotenv.Read(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func loadCompose(env map[string]string) (*types.Project, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, "compose.yaml")}},
		Environment: env,
	}, func(o *loader.Options) {
		o.SkipValidation = false // the compose-spec JSON schema, and consistency checks
		o.ResolvePaths = true
	})
}

func TestCompose(t *testing.T) {
	p, err := loadCompose(composeEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	svc := func(name string) types.ServiceConfig {
		t.Helper()
		s, err := p.GetService(name)
		if err != nil {
			t.Fatalf("compose.yaml: %v", err)
		}
		return s
	}
	stepupd, lb, redis := svc("stepupd"), svc("lb"), svc("redis")

	t.Run("replicas", func(t *testing.T) {
		if stepupd.Deploy == nil || stepupd.Deploy.Replicas == nil || *stepupd.Deploy.Replicas < 2 {
			t.Errorf("stepupd: want deploy.replicas of 2 or more")
		}
		if _, ok := lb.DependsOn["stepupd"]; !ok {
			t.Errorf("lb does not depend on stepupd")
		}
		if dep, ok := stepupd.DependsOn["redis"]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("stepupd does not wait for a healthy redis")
		}
		if !strings.HasPrefix(redis.Image, "redis:") {
			t.Errorf("redis runs image %q", redis.Image)
		}
	})

	t.Run("health checks", func(t *testing.T) {
		hc := stepupd.HealthCheck
		if hc == nil || hc.Disable || !strings.Contains(strings.Join(hc.Test, " "), "/readyz") {
			t.Errorf("stepupd's health check does not ask /readyz: %+v", hc)
		} else if hc.Test[0] == "CMD" && !strings.HasPrefix(hc.Test[1], "/usr/local/bin/") {
			t.Errorf("stepupd's health check runs %q, which is not in the image", hc.Test[1])
		}
		if redis.HealthCheck == nil || redis.HealthCheck.Disable {
			t.Errorf("redis has no health check, so depends_on: service_healthy never holds")
		}
		if g := stepupd.StopGracePeriod; g == nil || time.Duration(*g) <= drainSeconds*time.Second {
			t.Errorf("stepupd stop_grace_period %v; want more than its %d s drain", g, drainSeconds)
		}
	})

	t.Run("config", func(t *testing.T) {
		path, ok := configArg(stepupd.Command)
		if !ok {
			t.Fatalf("stepupd command %q has no --config", stepupd.Command)
		}
		var source string
		for _, v := range stepupd.Volumes {
			if v.Type == types.VolumeTypeBind && v.Target == path {
				source = v.Source
				if !v.ReadOnly {
					t.Errorf("the config mount %s is not read-only", path)
				}
			}
		}
		if source == "" {
			t.Fatalf("nothing is mounted at %s", path)
		}
		if abs, _ := filepath.Abs(exampleConfig); source != abs {
			t.Errorf("stepupd mounts %s at %s; want %s", source, path, abs)
		}
		env := map[string]string{}
		for k, v := range stepupd.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		cfg, err := config.Load(source, lookup(env))
		if err != nil {
			t.Fatalf("%s with compose's environment does not load:\n%v", source, err)
		}
		u, err := url.Parse(cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		if u.Hostname() != "redis" || u.User == nil {
			t.Errorf("store %s is not the redis service with a password", u.Redacted())
		}
		if _, port, _ := net.SplitHostPort(cfg.Addr); !strings.Contains(strings.Join(stepupd.HealthCheck.Test, " "), ":"+port+"/") {
			t.Errorf("the health check does not ask port %s, where stepupd listens", port)
		}

		// The balancer must send to this service's port, and be the one
		// proxy stepupd believes.
		cfgText := string(readFile(t, "haproxy.cfg"))
		want := "stepupd:" + configPort(t, readFile(t, exampleConfig))
		if !regexp.MustCompile(`(?m)^\s*server-template\s+\S+\s+\S+\s+` + regexp.QuoteMeta(want) + `(\s|$)`).MatchString(cfgText) {
			t.Errorf("haproxy.cfg has no server-template for %s", want)
		}
		var lbAddr string
		for _, n := range lb.Networks {
			if n != nil && n.Ipv4Address != "" {
				lbAddr = n.Ipv4Address
			}
		}
		if lbAddr == "" || !slices.Contains(cfg.TrustedProxies, lbAddr) {
			t.Errorf("trusted_proxies %q do not name the balancer's address %q", cfg.TrustedProxies, lbAddr)
		}
		var mounted bool
		for _, v := range lb.Volumes {
			if abs, _ := filepath.Abs("haproxy.cfg"); v.Source == abs {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("lb does not mount haproxy.cfg")
		}
	})

	t.Run("secrets are required", func(t *testing.T) {
		// Missing any of the env file's values, compose must refuse to
		// start rather than run with an empty secret or a Redis without a
		// password.
		full := composeEnv(t)
		for k := range full {
			env := maps.Clone(full)
			delete(env, k)
			if _, err := loadCompose(env); err == nil {
				t.Errorf("compose.yaml loads without %s; write ${%s:?message} wherever it is used", k, k)
			}
		}
	})
}
