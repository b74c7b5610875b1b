package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The Helm chart (charts/harbor-iam-webhook) and the kustomize tree
// (manifests/) describe the same install; these helpers render both.

const (
	chartRegion  = "eu-west-1"
	chartRelease = "harbor-iam-webhook" // gives the names manifests/ uses
)

// helmTool runs the helm binary run.sh built, with its own config, cache
// and data directories (never the user's).
type helmTool struct {
	bin, home, kubeconfig string
}

func newHelm(t *testing.T, home, kubeconfig string) *helmTool {
	t.Helper()
	must(t, os.MkdirAll(home, 0o700))
	return &helmTool{bin: mustEnv(t, "E2E_HELM"), home: home, kubeconfig: kubeconfig}
}

func (h *helmTool) env() []string {
	env := append(os.Environ(), "HOME="+h.home,
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	if h.kubeconfig != "" {
		env = append(env, "KUBECONFIG="+h.kubeconfig)
	} else {
		// No cluster: a kubeconfig of the machine must not be used.
		env = append(env, "KUBECONFIG="+filepath.Join(h.home, "no-kubeconfig"))
	}
	return env
}

// run runs helm; it never fails the test itself.
func (h *helmTool) run(t *testing.T, args ...string) kubectlResult {
	t.Helper()
	cmd := exec.Command(h.bin, args...)
	cmd.Env = h.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return kubectlResult{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

func (h *helmTool) must(t *testing.T, args ...string) string {
	t.Helper()
	r := h.run(t, args...)
	if r.Err != nil {
		t.Fatalf("helm %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// template renders the chart as release in namespace ns with the region set
// and the extra helm flags given (--set ..., -f ...).
func (h *helmTool) template(t *testing.T, repo, release, ns string, flags ...string) []obj {
	t.Helper()
	args := append([]string{"template", release, chartDir(repo), "--namespace", ns, "--set", "awsRegion=" + chartRegion}, flags...)
	return splitYAML(t, h.must(t, args...))
}

func chartDir(repo string) string { return filepath.Join(repo, "charts", "harbor-iam-webhook") }

// kubectlLocal runs the suite's kubectl without an API server (kustomize).
func kubectlLocal(t *testing.T, args ...string) string {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(mustEnv(t, "E2E_KUBECTL"), args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// kustomizeWithRegion renders base (a kustomization directory under the
// repo) plus components, with AWS_REGION set the way manifests/README.md
// tells users to: a configMapGenerator merge in their own overlay.
func kustomizeWithRegion(t *testing.T, repo, base string, components ...string) []obj {
	t.Helper()
	overlay := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(overlay, filepath.Join(repo, p))
		must(t, err)
		return r
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + rel(base) + "\n"
	if len(components) > 0 {
		k += "components:\n"
		for _, c := range components {
			k += "- " + rel(filepath.Join("manifests", "components", c)) + "\n"
		}
	}
	k += "configMapGenerator:\n- name: harbor-iam-webhook-config\n  namespace: harbor-iam-webhook\n  behavior: merge\n  literals: [AWS_REGION=" + chartRegion + "]\n"
	must(t, os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600))
	return splitYAML(t, kubectlLocal(t, "kustomize", "--load-restrictor", "LoadRestrictionsNone", overlay))
}

// chartPair is one documented values combination and its kustomize twin.
type chartPair struct {
	name       string
	values     []string // --set arguments
	kustomize  string   // directory under the repo
	components []string // manifests/components/<name>
}

// chartPairs: charts/harbor-iam-webhook/README.md, "One truth with manifests/".
var chartPairs = []chartPair{
	{"defaults", nil, "manifests", nil},
	{"cert-manager", []string{"certManager.enabled=true"}, "manifests/overlays/cert-manager", nil},
	{"validating webhook", []string{"validatingWebhook.enabled=true"}, "manifests", []string{"validating-webhook"}},
	{"validating webhook with cert-manager", []string{"certManager.enabled=true", "validatingWebhook.enabled=true"}, "manifests/overlays/cert-manager", []string{"validating-webhook"}},
	{"audit metric", []string{"auditMetric.enabled=true"}, "manifests", []string{"audit-metric"}},
	{"failurePolicy Ignore", []string{"webhook.failurePolicy=Ignore"}, "manifests", []string{"failure-policy-ignore"}},
	{"namespaced facts RBAC", []string{"rbac.clusterWide=false"}, "manifests", []string{"namespaced-facts-rbac"}},
}

func setFlags(values []string) []string {
	var out []string
	for _, v := range values {
		out = append(out, "--set", v)
	}
	return out
}

// helmLabels are the labels the chart adds to every object's metadata
// (allow-list entry 2).
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

var configMapHash = regexp.MustCompile(`^(harbor-iam-webhook-config)-[a-z0-9]{10}$`)

// TestChartMatchesManifests: the chart rendered with awsRegion set equals
// `kubectl kustomize` of the matching kustomize tree, field by field, for
// every documented pair, apart from the written allow-list (chart README,
// "One truth with manifests/").
func TestChartMatchesManifests(t *testing.T) {
	repo := mustEnv(t, "E2E_REPO_ROOT")
	h := newHelm(t, t.TempDir(), "")

	// Every overlay and component has a pair, so none can be added without a chart value.
	covered := map[string]bool{}
	for _, p := range chartPairs {
		covered[p.kustomize] = true
		for _, c := range p.components {
			covered["manifests/components/"+c] = true
		}
	}
	for _, glob := range []string{"manifests/overlays/*/kustomization.yaml", "manifests/components/*/kustomization.yaml"} {
		found, _ := filepath.Glob(filepath.Join(repo, glob))
		for _, k := range found {
			rel, _ := filepath.Rel(repo, filepath.Dir(k))
			if !covered[rel] {
				t.Errorf("%s has no chart values in chartPairs (and the chart README's table)", rel)
			}
		}
	}

	for _, p := range chartPairs {
		t.Run(p.name, func(t *testing.T) {
			chart := h.template(t, repo, chartRelease, "harbor-iam-webhook", setFlags(p.values)...)
			kust := kustomizeWithRegion(t, repo, p.kustomize, p.components...)
			chart, kust, allowed := applyAllowList(t, chart, kust)
			for _, a := range allowed {
				t.Logf("allowed: %s", a)
			}
			compareObjects(t, byID(t, kust), byID(t, chart))
		})
	}
}

// applyAllowList removes, from both renderings, exactly the differences the
// chart README allows, and says what it removed. Everything else must match.
func applyAllowList(t *testing.T, chart, kust []obj) ([]obj, []obj, []string) {
	t.Helper()
	var notes []string
	// 1. The Namespace is kustomize's only.
	for i := 0; i < len(kust); i++ {
		if kust[i]["kind"] == "Namespace" {
			notes = append(notes, "Namespace "+nameOf(kust[i])+" (kustomize only)")
			kust = append(kust[:i], kust[i+1:]...)
			i--
		}
	}
	// 2. Helm's labels, on metadata only.
	for _, o := range chart {
		md := o["metadata"].(obj)
		labels, _ := md["labels"].(obj)
		for _, l := range helmLabels {
			if _, ok := labels[l]; !ok {
				t.Errorf("%v %s: chart label %s missing", o["kind"], nameOf(o), l)
			}
			delete(labels, l)
		}
	}
	notes = append(notes, "labels "+strings.Join(helmLabels, ", ")+" (chart only, metadata)")
	// 3. The ConfigMap's hashed name and the chart's checksum annotation.
	for _, o := range kust {
		if o["kind"] == "ConfigMap" {
			if m := configMapHash.FindStringSubmatch(nameOf(o)); m != nil {
				o["metadata"].(obj)["name"] = m[1]
				notes = append(notes, "ConfigMap name "+m[0]+" -> "+m[1])
			}
		}
		if o["kind"] == "Deployment" {
			for _, ef := range podSpec(o)["containers"].([]any)[0].(obj)["envFrom"].([]any) {
				ref := ef.(obj)["configMapRef"].(obj)
				if m := configMapHash.FindStringSubmatch(ref["name"].(string)); m != nil {
					ref["name"] = m[1]
				}
			}
		}
	}
	for _, o := range chart {
		if o["kind"] != "Deployment" {
			continue
		}
		tmd := o["spec"].(obj)["template"].(obj)["metadata"].(obj)
		ann, _ := tmd["annotations"].(obj)
		if _, ok := ann["checksum/config"]; !ok {
			t.Errorf("Deployment %s: pod annotation checksum/config missing", nameOf(o))
		}
		delete(ann, "checksum/config")
		if len(ann) == 0 {
			delete(tmd, "annotations")
		}
		notes = append(notes, "pod annotation checksum/config (chart only)")
	}
	// 4. The generated certificate: the chart's Secret and the caBundle it
	// puts in the webhook configurations (certs/gen-certs.sh --apply makes
	// them for kustomize).
	var generatedCA any
	for i := 0; i < len(chart); i++ {
		o := chart[i]
		md := o["metadata"].(obj)
		ann, _ := md["annotations"].(obj)
		if o["kind"] == "Secret" && ann["harbor-iam-webhook/generated-by"] == "helm" {
			generatedCA = o["data"].(obj)["ca.crt"]
			notes = append(notes, "Secret "+nameOf(o)+" (generated certificate, chart only)")
			chart = append(chart[:i], chart[i+1:]...)
			i--
		}
	}
	for _, o := range chart {
		if o["kind"] != "MutatingWebhookConfiguration" && o["kind"] != "ValidatingWebhookConfiguration" {
			continue
		}
		for _, h := range o["webhooks"].([]any) {
			cc := h.(obj)["clientConfig"].(obj)
			if b, ok := cc["caBundle"]; ok {
				if generatedCA == nil || b != generatedCA {
					t.Errorf("%v %s: caBundle is not the generated Secret's ca.crt", o["kind"], nameOf(o))
				}
				delete(cc, "caBundle")
				notes = append(notes, fmt.Sprintf("%v %s caBundle (generated certificate)", o["kind"], nameOf(o)))
			}
		}
	}
	// 5. cainjector's annotation on the validating configuration, which the
	// kustomize component always carries and the chart only with cert-manager.
	const inject = "cert-manager.io/inject-ca-from"
	for _, o := range chart {
		if o["kind"] != "ValidatingWebhookConfiguration" {
			continue
		}
		if ann, _ := o["metadata"].(obj)["annotations"].(obj); ann[inject] != nil {
			continue
		}
		for _, k := range kust {
			if k["kind"] == "ValidatingWebhookConfiguration" && nameOf(k) == nameOf(o) {
				md := k["metadata"].(obj)
				ann, _ := md["annotations"].(obj)
				if ann[inject] != nil {
					delete(ann, inject)
					if len(ann) == 0 {
						delete(md, "annotations")
					}
					notes = append(notes, "ValidatingWebhookConfiguration "+inject+" (kustomize only, no cert-manager)")
				}
			}
		}
	}
	return chart, kust, notes
}

func podSpec(o obj) obj {
	return o["spec"].(obj)["template"].(obj)["spec"].(obj)
}

// byID keys objects by kind, namespace and name.
func byID(t *testing.T, objs []obj) map[string]obj {
	t.Helper()
	out := map[string]obj{}
	for _, o := range objs {
		id := fmt.Sprintf("%v %s/%s", o["kind"], namespaceOf(o), nameOf(o))
		if _, dup := out[id]; dup {
			t.Errorf("%s rendered twice", id)
		}
		out[id] = o
	}
	return out
}

func compareObjects(t *testing.T, want, got map[string]obj) {
	t.Helper()
	for _, id := range sortedKeys(want) {
		g, ok := got[id]
		if !ok {
			t.Errorf("%s: rendered by kustomize, not by the chart", id)
			continue
		}
		if d := diff(want[id], g); d != "" {
			t.Errorf("%s differs (- kustomize, + chart):\n%s", id, d)
		}
	}
	for _, id := range sortedKeys(got) {
		if _, ok := want[id]; !ok {
			t.Errorf("%s: rendered by the chart, not by kustomize", id)
		}
	}
	if !t.Failed() {
		t.Logf("%d objects equal: %s", len(want), strings.Join(sortedKeys(want), ", "))
	}
}

// readYAMLFile parses a YAML file into a generic object.
func readYAMLFile(t *testing.T, path string) obj {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	var o obj
	if err := yaml.Unmarshal(data, &o); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return o
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sortedStrings(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
