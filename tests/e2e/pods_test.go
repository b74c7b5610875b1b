package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// obj is a Kubernetes object as generic JSON.
type obj = map[string]any

// pod is the part of a Pod this suite looks at; the rest is compared as obj.
type pod struct {
	Metadata struct {
		Name         string            `json:"name"`
		GenerateName string            `json:"generateName"`
		Namespace    string            `json:"namespace"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string      `json:"serviceAccountName"`
		Containers         []container `json:"containers"`
		InitContainers     []container `json:"initContainers"`
	} `json:"spec"`
	raw obj
}

type container struct {
	Name string   `json:"name"`
	Env  []envVar `json:"env"`
}

type envVar struct {
	Name      string          `json:"name"`
	Value     *string         `json:"value,omitempty"`
	ValueFrom json.RawMessage `json:"valueFrom,omitempty"`
}

func (e envVar) String() string {
	switch {
	case e.ValueFrom != nil:
		return fmt.Sprintf("%s (valueFrom %s)", e.Name, e.ValueFrom)
	case e.Value != nil:
		return fmt.Sprintf("%s=%q", e.Name, *e.Value)
	default:
		return e.Name + " (no value)"
	}
}

// blank: neither valueFrom nor a non-empty value.
func (e envVar) blank() bool { return e.ValueFrom == nil && (e.Value == nil || *e.Value == "") }

func parsePod(t *testing.T, data []byte) pod {
	t.Helper()
	var p pod
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("parsing pod: %v\n%s", err, data)
	}
	if err := json.Unmarshal(data, &p.raw); err != nil {
		t.Fatal(err)
	}
	return p
}

// readYAMLObject reads a single-document YAML (or JSON) file as JSON.
func readYAMLObject(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return j
}

// withNamespace returns the object JSON with metadata.namespace replaced.
func withNamespace(t *testing.T, objJSON []byte, ns string) []byte {
	t.Helper()
	var o obj
	must(t, json.Unmarshal(objJSON, &o))
	o["metadata"].(obj)["namespace"] = ns
	out, err := json.Marshal(o)
	must(t, err)
	return out
}

func (p pod) containers(kind string) []container {
	if kind == "initContainers" {
		return p.Spec.InitContainers
	}
	return p.Spec.Containers
}

func (p pod) container(kind, name string) (container, bool) {
	for _, c := range p.containers(kind) {
		if c.Name == name {
			return c, true
		}
	}
	return container{}, false
}

func (c container) entries(name string) []envVar {
	var out []envVar
	for _, e := range c.Env {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// ---- expectations (tests/fixtures/expectations.yaml, format in docs/CONTRACTS.md) ----

type expectations struct {
	Pods map[string]podExpectation `json:"pods"`
}

type podExpectation struct {
	Mutated            bool                            `json:"mutated"`
	ServiceAccountName string                          `json:"serviceAccountName"`
	Containers         map[string]containerExpectation `json:"containers"`
	InitContainers     map[string]containerExpectation `json:"initContainers"`
	// withFacts: the same pod mutated by a webhook that knows the named
	// ConfigMaps. The main webhook runs without facts; the cluster-aware
	// specs (cluster_aware_test.go) check withFacts with facts on.
	WithFacts json.RawMessage `json:"withFacts"`
}

type containerExpectation struct {
	Env    map[string]string `json:"env"`
	Blank  []string          `json:"blank"`
	Absent []string          `json:"absent"`
}

// names lists every env name the expectation talks about.
func (c containerExpectation) names() map[string]bool {
	m := map[string]bool{}
	for n := range c.Env {
		m[n] = true
	}
	for _, n := range c.Blank {
		m[n] = true
	}
	for _, n := range c.Absent {
		m[n] = true
	}
	return m
}

func loadExpectations(t *testing.T, path string) expectations {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	var e expectations
	if err := yaml.UnmarshalStrict(data, &e); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return e
}

// checkContainers checks one container kind of got against want.
func checkContainers(t *testing.T, got pod, kind string, want map[string]containerExpectation) {
	t.Helper()
	for name, ce := range want {
		c, ok := got.container(kind, name)
		if !ok {
			t.Errorf("%s %q: not in the admitted pod", kind, name)
			continue
		}
		for _, n := range sortedKeys(ce.Env) {
			es := c.entries(n)
			switch {
			case len(es) != 1:
				t.Errorf("%s %q: env %s: want exactly one entry %q, got %d: %v", kind, name, n, ce.Env[n], len(es), es)
			case es[0].ValueFrom != nil || es[0].Value == nil || *es[0].Value != ce.Env[n]:
				t.Errorf("%s %q: env %s: want value %q, got %v", kind, name, n, ce.Env[n], es[0])
			}
		}
		for _, n := range ce.Blank {
			es := c.entries(n)
			if len(es) == 0 {
				t.Errorf("%s %q: env %s: want a blank entry, got none", kind, name, n)
			}
			for _, e := range es {
				if !e.blank() {
					t.Errorf("%s %q: env %s: want blank, got %v", kind, name, n, e)
				}
			}
		}
		for _, n := range ce.Absent {
			if es := c.entries(n); len(es) != 0 {
				t.Errorf("%s %q: env %s: want absent, got %v", kind, name, n, es)
			}
		}
	}
}

// checkOnlyOwnedFieldsDiffer compares a pod admitted in the opted-in
// namespace (got) with the same pod admitted where the webhook does not run
// (plain): apart from the env entries the expectation names, the
// ServiceAccount and the status annotation, they must be identical.
func checkOnlyOwnedFieldsDiffer(t *testing.T, got, plain pod, exp podExpectation) {
	t.Helper()
	for _, kind := range []string{"containers", "initContainers"} {
		want := exp.Containers
		if kind == "initContainers" {
			want = exp.InitContainers
		}
		for _, pc := range plain.containers(kind) {
			gc, ok := got.container(kind, pc.Name)
			if !ok {
				t.Errorf("%s %q disappeared", kind, pc.Name)
				continue
			}
			owned := want[pc.Name].names()
			a, b := envOutside(pc.Env, owned), envOutside(gc.Env, owned)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s %q: env entries the expectation does not name changed:\n without webhook: %v\n with webhook:    %v", kind, pc.Name, a, b)
			}
		}
	}
	if d := diff(normalised(plain.raw, true), normalised(got.raw, true)); d != "" {
		t.Errorf("fields outside env, serviceAccountName and the status annotation differ from the unmutated pod:\n%s", d)
	}
}

// IRSA web-identity injection (the EKS pod-identity-webhook's names) is the
// webhook's too when it sets the ServiceAccount: AWS_* env entries and the
// aws-iam-token volume and mounts.
const irsaVolume = "aws-iam-token"

func envOutside(env []envVar, owned map[string]bool) []string {
	out := []string{}
	for _, e := range env {
		if !owned[e.Name] && !strings.HasPrefix(e.Name, "AWS_") {
			out = append(out, e.String())
		}
	}
	sort.Strings(out)
	return out
}

// normalised strips what differs between two admissions of the same pod:
// server-set identity and timestamps, and with ownedToo the fields the
// webhook owns.
func normalised(o obj, ownedToo bool) obj {
	c := deepCopy(o)
	md := c["metadata"].(obj)
	for _, k := range []string{"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"} {
		delete(md, k)
	}
	delete(c, "status")
	// The ServiceAccount plugin names its token volume kube-api-access-<random>.
	spec := c["spec"].(obj)
	renameTokenVolume(spec["volumes"])
	for _, kind := range []string{"containers", "initContainers"} {
		if cs, ok := spec[kind].([]any); ok {
			for _, ci := range cs {
				renameTokenVolume(ci.(obj)["volumeMounts"])
			}
		}
	}
	if !ownedToo {
		return c
	}
	if ann, ok := md["annotations"].(obj); ok {
		delete(ann, "harbor-iam-webhook/status")
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	delete(spec, "serviceAccountName")
	delete(spec, "serviceAccount")
	spec["volumes"] = withoutNamed(spec["volumes"], irsaVolume)
	for _, kind := range []string{"containers", "initContainers"} {
		if cs, ok := spec[kind].([]any); ok {
			for _, ci := range cs {
				delete(ci.(obj), "env")
				ci.(obj)["volumeMounts"] = withoutNamed(ci.(obj)["volumeMounts"], irsaVolume)
			}
		}
	}
	return c
}

func renameTokenVolume(list any) {
	l, _ := list.([]any)
	for _, x := range l {
		if m, ok := x.(obj); ok {
			if n, _ := m["name"].(string); strings.HasPrefix(n, "kube-api-access-") {
				m["name"] = "kube-api-access-*"
			}
		}
	}
}

// withoutNamed drops list entries whose name is name; an emptied or absent
// list becomes nil so that "absent" and "only ours" compare equal.
func withoutNamed(list any, name string) any {
	l, _ := list.([]any)
	var out []any
	for _, x := range l {
		if m, ok := x.(obj); ok && m["name"] == name {
			continue
		}
		out = append(out, x)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func deepCopy(o obj) obj {
	data, _ := json.Marshal(o)
	var c obj
	_ = json.Unmarshal(data, &c)
	return c
}

// diff returns "" when a and b are equal, else one line per differing
// path: "- path: value" for a's side, "+ path: value" for b's.
func diff(a, b obj) string {
	var out []string
	diffAt(&out, "", a, b)
	return strings.Join(out, "\n")
}

func diffAt(out *[]string, path string, a, b any) {
	if reflect.DeepEqual(a, b) {
		return
	}
	show := func(v any) string {
		j, _ := json.Marshal(v)
		return string(j)
	}
	switch x := a.(type) {
	case obj:
		if y, ok := b.(obj); ok {
			keys := map[string]bool{}
			for k := range x {
				keys[k] = true
			}
			for k := range y {
				keys[k] = true
			}
			for _, k := range sortedKeys(keys) {
				va, inA := x[k]
				vb, inB := y[k]
				switch {
				case !inA:
					*out = append(*out, fmt.Sprintf("+ %s.%s: %s", path, k, show(vb)))
				case !inB:
					*out = append(*out, fmt.Sprintf("- %s.%s: %s", path, k, show(va)))
				default:
					diffAt(out, path+"."+k, va, vb)
				}
			}
			return
		}
	case []any:
		if y, ok := b.([]any); ok && len(x) == len(y) {
			for i := range x {
				diffAt(out, fmt.Sprintf("%s[%d]", path, i), x[i], y[i])
			}
			return
		}
	}
	*out = append(*out, fmt.Sprintf("- %s: %s", path, show(a)), fmt.Sprintf("+ %s: %s", path, show(b)))
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
