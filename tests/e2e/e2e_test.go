// Package e2e runs the webhook against a real kube-apiserver and etcd, through
// the path users take: kubectl create --dry-run=server -o json -f pod.yaml.
//
// Run it with tests/e2e/run.sh, which builds the binaries and sets:
//
//	E2E_ETCD, E2E_KUBE_APISERVER, E2E_KUBECTL   tool binaries (tools/)
//	E2E_WEBHOOK_BIN                             target/debug/harbor-iam-webhook
//	E2E_REPO_ROOT                               the repository (manifests/, certs/, tests/fixtures/)
//	E2E_KUBE_VERSION                            label for logs, e.g. v1.37.2
package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

const (
	nsHarbor = "harbor"         // labelled: the webhook runs here (the fixtures' own namespace)
	nsPlain  = "harbor-plain"   // not labelled: the API server admits pods without the webhook
	nsNoSA   = "harbor-no-irsa" // labelled, but without the IRSA ServiceAccount
	// The webhook's own namespace (manifests/), labelled here too: the
	// namespaceSelector must exclude it anyway.
	nsWebhook = "harbor-iam-webhook"

	injectLabel      = "harbor-iam-webhook/inject"
	statusAnnotation = "harbor-iam-webhook/status"
	optOutAnnotation = "harbor-iam-webhook/inject" // value "disabled"
	irsaSA           = "harbor-sa"
	roleARN          = "arn:aws:iam::111122223333:role/harbor-rds-iam"
)

// env is what every spec below shares: one API server, one webhook.
type env struct {
	c        *cluster
	w        *webhook
	repo     string
	fixtures string // tests/fixtures
	exp      expectations
	pods     []string // fixture file names, sorted
}

func TestWebhookAgainstAPIServer(t *testing.T) {
	e := setUp(t)

	t.Run("fixtures", func(t *testing.T) {
		for _, f := range e.pods {
			t.Run(f, func(t *testing.T) { e.specFixture(t, f) })
		}
	})
	t.Run("unlabelled namespace is left alone", e.specUnlabelledNamespace)
	t.Run("webhook's own namespace is excluded even when labelled", e.specOwnNamespace)
	t.Run("opt-out annotation is honoured", e.specOptOut)
	t.Run("non-Harbor pod is left alone", e.specNonHarborPod)
	t.Run("invalid non-Harbor pod gets the API server's validation error", e.specInvalidPod)
	t.Run("invalid Harbor pod gets the API server's validation error", e.specInvalidHarborPod)
	t.Run("labelled namespace without the IRSA ServiceAccount", e.specMissingServiceAccount)
	t.Run("real create stores the mutated pod and is idempotent", e.specRealCreate)
	t.Run("manifests base passes server-side dry-run", e.specManifestsBase)
	t.Run("manifests overlays render and validate", e.specManifestsOverlays)
	t.Run("manifests components render and pass server-side dry-run", e.specManifestsComponents)
	// Webhooks with --cluster-facts on behind the same configuration; the
	// main webhook is registered again afterwards.
	t.Run("cluster-aware", e.specClusterAware)
	// Last: these stop the webhook.
	t.Run("webhook down with failurePolicy Fail rejects and creates nothing", e.specWebhookDown)
	t.Run("webhook down with the failure-policy-ignore component admits pods unchanged", e.specWebhookDownIgnore)
	// The Helm chart, with a webhook process of its own (the suite's is down now).
	t.Run("helm chart", e.specHelmChart)
	t.Run("helm chart takes over a kustomize install", e.specHelmMigration)
	// Very last: real install, restart and uninstall replace the configuration above.
	t.Run("install journey: apply, certificates, restart, uninstall", e.specInstallJourney)
}

func setUp(t *testing.T) *env {
	repo := mustEnv(t, "E2E_REPO_ROOT")
	fixtures := os.Getenv("E2E_FIXTURES_DIR")
	if fixtures == "" {
		fixtures = filepath.Join(repo, "tests", "fixtures")
	}
	dir, err := os.MkdirTemp(os.Getenv("E2E_WORK_DIR"), "harbor-iam-webhook-e2e-")
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("E2E_KEEP_WORKDIR") == "1" {
			t.Logf("logs of etcd, kube-apiserver and the webhook kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	t.Logf("Kubernetes %s", os.Getenv("E2E_KUBE_VERSION"))

	e := &env{repo: repo, fixtures: fixtures}
	e.exp = loadExpectations(t, filepath.Join(fixtures, "expectations.yaml"))
	entries, err := os.ReadDir(filepath.Join(fixtures, "pods"))
	must(t, err)
	for _, de := range entries {
		if !de.IsDir() && (strings.HasSuffix(de.Name(), ".yaml") || strings.HasSuffix(de.Name(), ".yml")) {
			e.pods = append(e.pods, de.Name())
		}
	}
	sort.Strings(e.pods)
	if len(e.pods) == 0 {
		t.Fatalf("no fixture pods in %s", filepath.Join(fixtures, "pods"))
	}
	for name := range e.exp.Pods {
		if _, err := os.Stat(filepath.Join(fixtures, "pods", name)); err != nil {
			t.Errorf("expectations.yaml names %s, which is not in pods/", name)
		}
	}

	start := time.Now()
	e.c = startCluster(t, dir)
	t.Logf("etcd + kube-apiserver up in %s", time.Since(start).Round(time.Millisecond))
	e.createNamespaces(t)
	e.w = startWebhook(t, repo, dir)
	registerWebhook(t, e.c, repo, dir, e.w)
	e.waitWebhookActive(t)
	t.Logf("cluster and webhook ready in %s", time.Since(start).Round(time.Millisecond))
	return e
}

// createNamespaces creates the namespaces, every ServiceAccount the fixtures
// name (no controller-manager runs, so not even "default" exists) and the
// fixture ConfigMaps.
func (e *env) createNamespaces(t *testing.T) {
	sas := map[string]bool{"default": true}
	for _, f := range e.pods {
		p := parsePod(t, readYAMLObject(t, filepath.Join(e.fixtures, "pods", f)))
		if p.Spec.ServiceAccountName != "" {
			sas[p.Spec.ServiceAccountName] = true
		}
	}
	var items []any
	for _, ns := range []string{nsHarbor, nsPlain, nsNoSA, nsWebhook} {
		md := obj{"name": ns}
		if ns != nsPlain {
			md["labels"] = obj{injectLabel: "enabled"}
		}
		items = append(items, obj{"apiVersion": "v1", "kind": "Namespace", "metadata": md})
		for _, sa := range sortedKeys(sas) {
			items = append(items, obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": sa, "namespace": ns}})
		}
		if ns != nsNoSA {
			items = append(items, obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{
				"name": irsaSA, "namespace": ns, "annotations": obj{"eks.amazonaws.com/role-arn": roleARN}}})
		}
	}
	cms, _ := filepath.Glob(filepath.Join(e.fixtures, "configmaps", "*.yaml"))
	for _, f := range cms {
		for _, ns := range []string{nsHarbor, nsPlain} {
			var o obj
			must(t, json.Unmarshal(withNamespace(t, readYAMLObject(t, f), ns), &o))
			items = append(items, o)
		}
	}
	// Namespaces first: a List is applied in order.
	list, err := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": items})
	must(t, err)
	e.c.mustKubectl(t, list, "create", "-f", "-")
}

// waitWebhookActive waits until the API server calls the webhook: its
// configuration informer picks the new MutatingWebhookConfiguration up
// asynchronously.
func (e *env) waitWebhookActive(t *testing.T) {
	var probe string
	for _, f := range e.pods {
		if e.exp.Pods[f].Mutated {
			probe = f
			break
		}
	}
	if probe == "" {
		t.Fatal("expectations.yaml has no pod with mutated: true to probe the webhook with")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, _, err := e.dryRunCreateFile(t, probe)
		if err == nil && p.Metadata.Annotations[statusAnnotation] == "injected" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server did not apply the webhook to %s within 60s (last error: %v); webhook log:\n%s", probe, err, e.w.proc.tail(30))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- kubectl helpers ----

// dryRunCreate is `kubectl create --dry-run=server -o json -f -` of podJSON
// in namespace ns. It returns the admitted pod, the warnings kubectl printed
// and the API server's error, if any.
func (e *env) dryRunCreate(t *testing.T, ns string, podJSON []byte) (pod, []string, error) {
	t.Helper()
	return e.create(t, withNamespace(t, podJSON, ns), "--dry-run=server", "-o", "json", "-f", "-")
}

// dryRunCreateFile is the exact user command on a fixture file:
// `kubectl create --dry-run=server -o json -f tests/fixtures/pods/<file>`.
func (e *env) dryRunCreateFile(t *testing.T, fixture string) (pod, []string, error) {
	t.Helper()
	return e.create(t, nil, "--dry-run=server", "-o", "json", "-f", filepath.Join(e.fixtures, "pods", fixture))
}

func (e *env) create(t *testing.T, stdin []byte, args ...string) (pod, []string, error) {
	t.Helper()
	r := e.c.kubectl(t, stdin, append([]string{"create"}, args...)...)
	var warnings []string
	for _, l := range strings.Split(r.Stderr, "\n") {
		if w, ok := strings.CutPrefix(l, "Warning: "); ok {
			warnings = append(warnings, w)
		}
	}
	if r.Err != nil {
		return pod{}, warnings, fmt.Errorf("%v: %s", r.Err, strings.TrimSpace(r.Stderr))
	}
	return parsePod(t, []byte(r.Stdout)), warnings, nil
}

func (e *env) fixtureJSON(t *testing.T, f string) []byte {
	return readYAMLObject(t, filepath.Join(e.fixtures, "pods", f))
}

// ---- specs ----

// specFixture: the fixture admitted in the labelled namespace is mutated as
// expectations.yaml says; where it says mutated: false, the result equals the
// admission without the webhook on every field the webhook could own.
func (e *env) specFixture(t *testing.T, f string) {
	exp, ok := e.exp.Pods[f]
	if !ok {
		t.Fatalf("no entry for %s in expectations.yaml", f)
	}
	got, warnings, err := e.dryRunCreateFile(t, f)
	if err != nil {
		t.Fatalf("kubectl create --dry-run=server -f %s: %v", f, err)
	}
	for _, w := range warnings {
		t.Logf("warning: %s", w)
	}
	plain, _, err := e.dryRunCreate(t, nsPlain, e.fixtureJSON(t, f))
	if err != nil {
		t.Fatalf("admission without the webhook (namespace %s): %v", nsPlain, err)
	}

	if !exp.Mutated {
		if s, ok := got.Metadata.Annotations[statusAnnotation]; ok {
			t.Errorf("annotation %s=%q on a pod that must be left alone", statusAnnotation, s)
		}
		if d := diff(normalised(plain.raw, false), normalised(got.raw, false)); d != "" {
			t.Errorf("pod changed, want it unchanged (- without webhook, + with):\n%s", d)
		}
		return
	}

	checkMutated(t, got, plain, exp)
}

// checkMutated: got (admitted with the webhook) carries the status
// annotation, the expected ServiceAccount and env, and differs from plain
// (the same pod admitted without the webhook) only in what the webhook owns.
func checkMutated(t *testing.T, got, plain pod, exp podExpectation) {
	t.Helper()
	if s := got.Metadata.Annotations[statusAnnotation]; s != "injected" {
		t.Errorf("annotation %s = %q, want \"injected\"", statusAnnotation, s)
	}
	if exp.ServiceAccountName != "" && got.Spec.ServiceAccountName != exp.ServiceAccountName {
		t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, exp.ServiceAccountName)
	}
	if sa, _ := got.raw["spec"].(obj)["serviceAccount"].(string); sa != "" && sa != got.Spec.ServiceAccountName {
		t.Errorf("deprecated spec.serviceAccount = %q disagrees with serviceAccountName %q", sa, got.Spec.ServiceAccountName)
	}
	checkContainers(t, got, "containers", exp.Containers)
	checkContainers(t, got, "initContainers", exp.InitContainers)
	checkOnlyOwnedFieldsDiffer(t, got, plain, exp)
}

// A namespace without the opt-in label never reaches the webhook: the pod
// comes back exactly as submitted (plus the API server's own defaulting).
func (e *env) specUnlabelledNamespace(t *testing.T) {
	for _, f := range e.mutatedFixtures() {
		t.Run(f, func(t *testing.T) {
			in := parsePod(t, e.fixtureJSON(t, f))
			got, _, err := e.dryRunCreate(t, nsPlain, e.fixtureJSON(t, f))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := got.Metadata.Annotations[statusAnnotation]; ok {
				t.Errorf("status annotation present in unlabelled namespace")
			}
			if got.Spec.ServiceAccountName != in.Spec.ServiceAccountName {
				t.Errorf("serviceAccountName = %q, want the submitted %q", got.Spec.ServiceAccountName, in.Spec.ServiceAccountName)
			}
			for _, kind := range []string{"containers", "initContainers"} {
				for _, ic := range in.containers(kind) {
					gc, _ := got.container(kind, ic.Name)
					if !equalJSON(ic.Env, gc.Env) {
						t.Errorf("%s %q: env changed:\n submitted: %v\n admitted:  %v", kind, ic.Name, ic.Env, gc.Env)
					}
				}
			}
		})
	}
}

// The shipped namespaceSelector excludes the webhook's own namespace by name,
// so a label there cannot make the webhook depend on itself.
func (e *env) specOwnNamespace(t *testing.T) {
	f := e.mutatedFixtures()[0]
	got, _, err := e.dryRunCreate(t, nsWebhook, e.fixtureJSON(t, f))
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := e.dryRunCreate(t, nsPlain, e.fixtureJSON(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(normalised(plain.raw, false), normalised(got.raw, false)); d != "" {
		t.Errorf("%s mutated in namespace %s (- unlabelled namespace, + %s):\n%s", f, nsWebhook, nsWebhook, d)
	}
}

// A pod annotated harbor-iam-webhook/inject: disabled in the labelled
// namespace is admitted as if the webhook were not there.
func (e *env) specOptOut(t *testing.T) {
	for _, f := range e.mutatedFixtures() {
		t.Run(f, func(t *testing.T) {
			var o obj
			must(t, json.Unmarshal(e.fixtureJSON(t, f), &o))
			md := o["metadata"].(obj)
			ann, _ := md["annotations"].(obj)
			if ann == nil {
				ann = obj{}
			}
			ann[optOutAnnotation] = "disabled"
			md["annotations"] = ann
			data, _ := json.Marshal(o)
			got, _, err := e.dryRunCreate(t, nsHarbor, data)
			if err != nil {
				t.Fatal(err)
			}
			plain, _, err := e.dryRunCreate(t, nsPlain, data)
			if err != nil {
				t.Fatal(err)
			}
			if d := diff(normalised(plain.raw, false), normalised(got.raw, false)); d != "" {
				t.Errorf("opted-out pod changed (- without webhook, + with):\n%s", d)
			}
		})
	}
}

// A pod that is not Harbor's, even one that reads a Secret through envFrom
// and names a *_PASSWORD variable, is left alone.
func (e *env) specNonHarborPod(t *testing.T) {
	data := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","labels":{"app":"web","component":"core"}},
"spec":{"containers":[{"name":"web","image":"nginx:1.27",
"envFrom":[{"secretRef":{"name":"web-secrets"}}],
"env":[{"name":"POSTGRESQL_PASSWORD","valueFrom":{"secretKeyRef":{"name":"web-db","key":"password"}}},{"name":"EMPTY","value":""}]}]}}`)
	got, _, err := e.dryRunCreate(t, nsHarbor, data)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := e.dryRunCreate(t, nsPlain, data)
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(normalised(plain.raw, false), normalised(got.raw, false)); d != "" {
		t.Errorf("non-Harbor pod changed (- without webhook, + with):\n%s", d)
	}
	if got.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName = %q, want the ServiceAccount plugin's default", got.Spec.ServiceAccountName)
	}
}

// An invalid pod that is none of ours must fail with the API server's own
// validation error: the webhook allows it without a patch and validation,
// which runs after mutating admission, rejects it.
func (e *env) specInvalidPod(t *testing.T) {
	data := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"broken","labels":{"app":"web"}},
"spec":{"containers":[{"name":"Not_A_DNS_Label","env":[{"name":"A","value":"1"},{"name":"A","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}},"value":"2"}]}]}}`)
	for _, ns := range []string{nsHarbor, nsPlain} {
		_, _, err := e.dryRunCreate(t, ns, data)
		if err == nil {
			t.Fatalf("namespace %s: invalid pod was accepted", ns)
		}
		msg := err.Error()
		for _, want := range []string{`The Pod "broken" is invalid`, "spec.containers[0].name", "spec.containers[0].image: Required value"} {
			if !strings.Contains(msg, want) {
				t.Errorf("namespace %s: error does not contain %q:\n%s", ns, want, msg)
			}
		}
		if strings.Contains(msg, "admission webhook") || strings.Contains(msg, webhookName) {
			t.Errorf("namespace %s: the webhook, not validation, rejected the pod:\n%s", ns, msg)
		}
	}
}

// An invalid Harbor DB pod is mutated and then refused by the API server's
// validation, with the API server's message: the webhook's patch neither
// hides the problem nor produces an error of its own.
func (e *env) specInvalidHarborPod(t *testing.T) {
	f := e.mutatedFixtures()[0]
	var o obj
	must(t, json.Unmarshal(e.fixtureJSON(t, f), &o))
	c0 := o["spec"].(obj)["containers"].([]any)[0].(obj)
	delete(c0, "image")
	c0["ports"] = []any{obj{"containerPort": 70000, "protocol": "TCP"}}
	data, _ := json.Marshal(o)
	_, _, err := e.dryRunCreate(t, nsHarbor, data)
	if err == nil {
		t.Fatalf("invalid %s was accepted", f)
	}
	msg := err.Error()
	for _, want := range []string{"is invalid", "spec.containers[0].image: Required value", "spec.containers[0].ports[0].containerPort"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "admission webhook") || strings.Contains(msg, webhookName) {
		t.Errorf("the webhook, not validation, rejected the pod:\n%s", msg)
	}
}

// The webhook sets serviceAccountName to the IRSA account without looking at
// the cluster. Where that account does not exist, the API server's
// ServiceAccount admission plugin (validation phase, after our patch) refuses
// the pod and names the missing account. This documents that behaviour.
func (e *env) specMissingServiceAccount(t *testing.T) {
	f := e.mutatedFixtures()[0]
	_, _, err := e.dryRunCreate(t, nsNoSA, e.fixtureJSON(t, f))
	if err == nil {
		t.Fatalf("%s admitted in %s although ServiceAccount %s does not exist there", f, nsNoSA, irsaSA)
	}
	t.Logf("API server: %v", err)
	if !strings.Contains(err.Error(), irsaSA) {
		t.Errorf("error does not name the missing ServiceAccount %q: %v", irsaSA, err)
	}
}

// A real create stores the mutated pod; kubectl get shows no static
// password; deleting and recreating gives the same pod, and admitting the
// stored pod again changes nothing.
func (e *env) specRealCreate(t *testing.T) {
	f := e.mutatedFixtures()[0]
	exp := e.exp.Pods[f]
	path := filepath.Join(e.fixtures, "pods", f)

	createAndGet := func() pod {
		t.Helper()
		created, _, err := e.create(t, nil, "-o", "json", "-f", path)
		if err != nil {
			t.Fatalf("kubectl create -f %s: %v", f, err)
		}
		out := e.c.mustKubectl(t, nil, "get", "pod", "-n", created.Metadata.Namespace, created.Metadata.Name, "-o", "json")
		return parsePod(t, []byte(out))
	}
	first := createAndGet()
	t.Logf("created pod %s/%s", first.Metadata.Namespace, first.Metadata.Name)
	if first.Metadata.Annotations[statusAnnotation] != "injected" {
		t.Errorf("stored pod lacks %s: injected", statusAnnotation)
	}
	if exp.ServiceAccountName != "" && first.Spec.ServiceAccountName != exp.ServiceAccountName {
		t.Errorf("stored serviceAccountName = %q, want %q", first.Spec.ServiceAccountName, exp.ServiceAccountName)
	}
	checkContainers(t, first, "containers", exp.Containers)
	checkContainers(t, first, "initContainers", exp.InitContainers)
	for _, kind := range []string{"containers", "initContainers"} {
		for _, c := range first.containers(kind) {
			for _, ev := range c.Env {
				if strings.Contains(ev.Name, "PASSWORD") && !ev.blank() {
					t.Errorf("%s %q: stored pod still carries a password: %v", kind, c.Name, ev)
				}
			}
		}
	}

	// Admitting the stored, already mutated pod again changes nothing.
	again := deepCopy(first.raw)
	md := again["metadata"].(obj)
	for _, k := range []string{"name", "uid", "resourceVersion", "creationTimestamp", "managedFields"} {
		delete(md, k)
	}
	delete(again, "status")
	data, _ := json.Marshal(again)
	readmitted, _, err := e.dryRunCreate(t, first.Metadata.Namespace, data)
	if err != nil {
		t.Fatalf("re-admitting the stored pod: %v", err)
	}
	if d := diff(normalised(first.raw, false), normalised(readmitted.raw, false)); d != "" {
		t.Errorf("re-admitting the stored pod changed it (- stored, + re-admitted):\n%s", d)
	}

	e.c.mustKubectl(t, nil, "delete", "pod", "-n", first.Metadata.Namespace, first.Metadata.Name, "--wait=true", "--timeout=60s")
	if r := e.c.kubectl(t, nil, "get", "pod", "-n", first.Metadata.Namespace, first.Metadata.Name); r.Err == nil || !strings.Contains(r.Stderr, "NotFound") {
		t.Fatalf("pod still there after delete: %s %s", r.Stdout, r.Stderr)
	}
	second := createAndGet()
	if d := diff(normalised(first.raw, false), normalised(second.raw, false)); d != "" {
		t.Errorf("recreated pod differs (- first, + second):\n%s", d)
	}
	e.c.mustKubectl(t, nil, "delete", "pod", "-n", second.Metadata.Namespace, second.Metadata.Name, "--wait=true", "--timeout=60s")
}

// The shipped kustomize base is accepted by the real API server.
func (e *env) specManifestsBase(t *testing.T) {
	base := filepath.Join(e.repo, "manifests")
	for _, o := range splitYAML(t, e.c.mustKubectl(t, nil, "kustomize", base)) {
		if o["kind"] == "Namespace" {
			// Server-side dry-run does not persist the namespace, so the
			// namespaced objects after it would fail with NotFound.
			if r := e.c.kubectl(t, nil, "create", "namespace", nameOf(o)); r.Err != nil && !strings.Contains(r.Stderr, "AlreadyExists") {
				t.Fatalf("creating namespace %s: %s", nameOf(o), r.Stderr)
			}
		}
	}
	out := e.c.mustKubectl(t, nil, "apply", "--dry-run=server", "-k", base)
	t.Logf("kubectl apply --dry-run=server -k manifests/:\n%s", out)
}

// Overlays are rendered with kubectl kustomize. Objects of kinds this API
// server serves go through server-side dry-run; cert-manager objects (no
// CRDs here) are checked structurally and for consistency with the rest.
func (e *env) specManifestsOverlays(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(e.repo, "manifests", "overlays", "*", "kustomization.yaml"))
	if len(dirs) == 0 {
		t.Skip("no overlays under manifests/overlays/")
	}
	for _, k := range dirs {
		dir := filepath.Dir(k)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs := splitYAML(t, e.c.mustKubectl(t, nil, "kustomize", dir))
			var served, certManager []obj
			for _, o := range objs {
				if strings.HasPrefix(fmt.Sprint(o["apiVersion"]), "cert-manager.io/") {
					certManager = append(certManager, o)
				} else {
					served = append(served, o)
				}
			}
			for _, o := range served {
				if o["kind"] == "Namespace" {
					e.c.kubectl(t, nil, "create", "namespace", nameOf(o))
				}
			}
			list, _ := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": served})
			out := e.c.mustKubectl(t, list, "apply", "--dry-run=server", "-f", "-")
			t.Logf("server-side dry-run:\n%s", out)
			checkCertManagerObjects(t, objs, certManager)
		})
	}
}

// specWebhookDown: with the webhook process gone and failurePolicy Fail, a
// pod in an opted-in namespace is refused with an error naming the webhook
// and nothing is stored; other namespaces are unaffected.
func (e *env) specWebhookDown(t *testing.T) {
	if fp := e.w.field("failurePolicy"); fp != "Fail" {
		t.Fatalf("shipped failurePolicy is %v, this spec assumes Fail", fp)
	}
	f := e.mutatedFixtures()[0]
	countPods := func(ns string) int {
		out := e.c.mustKubectl(t, nil, "get", "pods", "-n", ns, "-o", "json")
		var l struct{ Items []any }
		must(t, json.Unmarshal([]byte(out), &l))
		return len(l.Items)
	}
	before := countPods(nsHarbor)
	e.w.proc.stop(t)

	for _, args := range [][]string{{"--dry-run=server", "-o", "json"}, {"-o", "json"}} {
		_, _, err := e.create(t, nil, append(args, "-f", filepath.Join(e.fixtures, "pods", f))...)
		if err == nil {
			t.Fatalf("kubectl create %v succeeded with the webhook down", args)
		}
		t.Logf("kubectl create %s: %v", strings.Join(args, " "), err)
		for _, want := range []string{"failed calling webhook", webhookName} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain %q: %v", want, err)
			}
		}
	}
	if after := countPods(nsHarbor); after != before {
		t.Errorf("pods in %s: %d before, %d after; a failed admission stored something", nsHarbor, before, after)
	}
	// The namespaceSelector confines the outage to opted-in namespaces.
	if _, _, err := e.dryRunCreate(t, nsPlain, e.fixtureJSON(t, f)); err != nil {
		t.Errorf("unlabelled namespace affected by the webhook outage: %v", err)
	}
}

// Kustomize components (manifests/components/*) are rendered on top of the
// base and the result goes through server-side dry-run.
func (e *env) specManifestsComponents(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(e.repo, "manifests", "components", "*", "kustomization.yaml"))
	if len(dirs) == 0 {
		t.Skip("no components under manifests/components/")
	}
	for _, k := range dirs {
		comp := filepath.Dir(k)
		t.Run(filepath.Base(comp), func(t *testing.T) {
			objs := renderOverlay(t, e.c, e.repo, e.c.dir, e.w, comp)
			list, _ := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": objs})
			out := e.c.mustKubectl(t, list, "apply", "--dry-run=server", "-f", "-")
			t.Logf("base + %s, server-side dry-run:\n%s", filepath.Base(comp), out)
		})
	}
}

// With components/failure-policy-ignore and the webhook gone, the API server
// admits pods in opted-in namespaces unchanged (the documented trade-off).
func (e *env) specWebhookDownIgnore(t *testing.T) {
	comp := filepath.Join(e.repo, "manifests", "components", "failure-policy-ignore")
	if _, err := os.Stat(filepath.Join(comp, "kustomization.yaml")); err != nil {
		t.Skip("no manifests/components/failure-policy-ignore")
	}
	e.w.proc.stop(t)
	rendered := findObject(t, renderOverlay(t, e.c, e.repo, e.c.dir, e.w, comp), "MutatingWebhookConfiguration", mwcName)
	if fp := rendered["webhooks"].([]any)[0].(obj)["failurePolicy"]; fp != "Ignore" {
		t.Fatalf("component rendered failurePolicy %v, want Ignore", fp)
	}
	applyWebhookConfig(t, e.c, e.repo, e.w, rendered, "failurePolicy")

	f := e.mutatedFixtures()[0]
	// The API server picks the changed configuration up asynchronously.
	deadline := time.Now().Add(60 * time.Second)
	var got pod
	for {
		p, _, err := e.dryRunCreateFile(t, f)
		if err == nil {
			got = p
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still rejected 60s after switching to failurePolicy Ignore: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	plain, _, err := e.dryRunCreate(t, nsPlain, e.fixtureJSON(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(normalised(plain.raw, false), normalised(got.raw, false)); d != "" {
		t.Errorf("with the webhook down and failurePolicy Ignore, %s was changed (- unlabelled namespace, + %s):\n%s", f, nsHarbor, d)
	}
}

func (e *env) mutatedFixtures() []string {
	var out []string
	for _, f := range e.pods {
		if e.exp.Pods[f].Mutated {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		panic("expectations.yaml has no mutated pod")
	}
	return out
}
