package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	mwcName     = "harbor-iam-webhook"
	webhookName = "mutate.harbor-iam-webhook.io"
)

// webhook is our binary serving on loopback with a certificate from certs/.
type webhook struct {
	proc   *proc
	url    string // the /mutate URL the API server calls
	caPEM  []byte
	mwc    obj // the MutatingWebhookConfiguration as applied
	certs  string
	binary string
}

// genCerts runs certs/gen-certs.sh the way an operator would, plus the
// loopback IP SAN the API server needs to verify https://127.0.0.1:PORT.
func genCerts(t *testing.T, repo, out string) {
	t.Helper()
	script := filepath.Join(repo, "certs", "gen-certs.sh")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("certs/gen-certs.sh is missing: %v", err)
	}
	cmd := exec.Command("bash", script, "--out", out, "--extra-san", "IP:127.0.0.1")
	cmd.Dir = repo
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Run(); err != nil {
		t.Fatalf("certs/gen-certs.sh: %v\n%s", err, b.String())
	}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("certs/gen-certs.sh did not write %s: %v", f, err)
		}
	}
}

// startWebhook starts the suite's main webhook: `harbor-iam-webhook serve`
// without cluster facts (explicitly off, so that a kubeconfig on the machine
// running the suite can never switch them on).
func startWebhook(t *testing.T, repo, dir string) *webhook {
	t.Helper()
	return startServe(t, repo, dir, "webhook", nil, "--cluster-facts", "off")
}

// startServe starts `harbor-iam-webhook serve` on a free loopback port with
// the suite's certificate (certs/gen-certs.sh, generated once per run), the
// extra flags and environment given, no metrics listener and no drain delay,
// and waits for GET /readyz, verifying the serving cert against the CA.
func startServe(t *testing.T, repo, dir, name string, env []string, extra ...string) *webhook {
	t.Helper()
	certs := filepath.Join(dir, "webhook-certs")
	if _, err := os.Stat(filepath.Join(certs, "tls.key")); err != nil {
		genCerts(t, repo, certs)
	}
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	must(t, err)
	bin := mustEnv(t, "E2E_WEBHOOK_BIN")
	env = append([]string{"HARBOR_IAM_WEBHOOK_LOG_FORMAT=text", "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost"}, env...)
	for attempt := 1; ; attempt++ {
		addr := "127.0.0.1:" + itoa(freePort(t))
		args := append([]string{"serve", "--listen", addr,
			"--tls-cert", filepath.Join(certs, "tls.crt"),
			"--tls-key", filepath.Join(certs, "tls.key"),
			"--aws-region", "eu-west-1",
			"--metrics-listen", "off",
			"--drain-delay-seconds", "0"}, extra...)
		p := startProc(t, dir, name+"-"+itoa(attempt), nil, env, bin, args...)
		err := waitReady(p, "https://"+addr+"/readyz", caPEM, "", 60*time.Second)
		if err == nil {
			return &webhook{proc: p, url: "https://" + addr + "/mutate", caPEM: caPEM, certs: certs, binary: bin}
		}
		if attempt < 3 && p.exited() && strings.Contains(strings.ToLower(p.tail(20)), "address already in use") {
			continue
		}
		t.Fatalf("%s: %v", name, err)
	}
}

// renderOverlay writes a kustomize overlay over manifests/ that points the
// webhook at w.url with the CA from certs/, renders it with kubectl
// kustomize and returns every rendered object.
// Extra kustomize components (directories) are added to the overlay.
func renderOverlay(t *testing.T, c *cluster, repo, dir string, w *webhook, components ...string) []obj {
	t.Helper()
	overlay, err := os.MkdirTemp(dir, "overlay-")
	must(t, err)
	base, err := filepath.Rel(overlay, filepath.Join(repo, "manifests"))
	must(t, err)
	patch := obj{
		"apiVersion": "admissionregistration.k8s.io/v1",
		"kind":       "MutatingWebhookConfiguration",
		"metadata":   obj{"name": mwcName},
		"webhooks": []any{obj{
			"name": webhookName,
			"clientConfig": obj{
				"service":  nil, // strategic merge: delete
				"url":      w.url,
				"caBundle": base64.StdEncoding.EncodeToString(w.caPEM),
			},
		}},
	}
	patchYAML, err := yaml.Marshal(patch)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(overlay, "webhook-url.yaml"), patchYAML, 0o600))
	kustomization := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n" +
		"resources:\n- " + base + "\npatches:\n- path: webhook-url.yaml\n"
	if len(components) > 0 {
		kustomization += "components:\n"
		for _, comp := range components {
			rel, err := filepath.Rel(overlay, comp)
			must(t, err)
			kustomization += "- " + rel + "\n"
		}
	}
	must(t, os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o600))
	out := c.mustKubectl(t, nil, "kustomize", "--load-restrictor", "LoadRestrictionsNone", overlay)
	return splitYAML(t, out)
}

// registerWebhook applies only the MutatingWebhookConfiguration from the
// overlay (the Deployment etc. cannot run without a kubelet) after checking
// that the overlay changed nothing but clientConfig.
func registerWebhook(t *testing.T, c *cluster, repo, dir string, w *webhook) {
	t.Helper()
	rendered := findObject(t, renderOverlay(t, c, repo, dir, w), "MutatingWebhookConfiguration", mwcName)
	applyWebhookConfig(t, c, repo, w, rendered)
}

// applyWebhookConfig checks that rendered differs from the shipped base only
// in clientConfig (and the webhook fields named in alsoChanged) and applies it.
func applyWebhookConfig(t *testing.T, c *cluster, repo string, w *webhook, rendered obj, alsoChanged ...string) {
	t.Helper()
	shipped := findObject(t, splitYAML(t, c.mustKubectl(t, nil, "kustomize", filepath.Join(repo, "manifests"))), "MutatingWebhookConfiguration", mwcName)

	hooks, _ := rendered["webhooks"].([]any)
	if len(hooks) != 1 {
		t.Fatalf("expected exactly one webhook in %s, got %d", mwcName, len(hooks))
	}
	cc := hooks[0].(obj)["clientConfig"].(obj)
	if cc["url"] != w.url || cc["service"] != nil || cc["caBundle"] == nil {
		t.Fatalf("overlay did not switch clientConfig to the url: %v", cc)
	}
	a, b := deepCopy(rendered), deepCopy(shipped)
	for _, o := range []obj{a, b} {
		for _, h := range o["webhooks"].([]any) {
			delete(h.(obj), "clientConfig")
			for _, f := range alsoChanged {
				delete(h.(obj), f)
			}
		}
	}
	if d := diff(b, a); d != "" {
		t.Fatalf("the overlay changed more than clientConfig:\n%s", d)
	}
	data, err := json.Marshal(rendered)
	must(t, err)
	c.mustKubectl(t, data, "apply", "-f", "-")
	w.mwc = rendered
}

// splitYAML parses a multi-document YAML stream into objects.
func splitYAML(t *testing.T, stream string) []obj {
	t.Helper()
	var out []obj
	for _, doc := range strings.Split("\n"+stream, "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var o obj
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("parsing rendered YAML: %v\n%s", err, doc)
		}
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

func findObject(t *testing.T, objs []obj, kind, name string) obj {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == kind && nameOf(o) == name {
			return o
		}
	}
	t.Fatalf("no %s %q in the rendered manifests", kind, name)
	return nil
}

func nameOf(o obj) string {
	md, _ := o["metadata"].(obj)
	s, _ := md["name"].(string)
	return s
}

func namespaceOf(o obj) string {
	md, _ := o["metadata"].(obj)
	s, _ := md["namespace"].(string)
	return s
}

// webhookField returns a top-level field of our webhook entry as applied.
func (w *webhook) field(name string) any {
	return w.mwc["webhooks"].([]any)[0].(obj)[name]
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var x, y any
	_ = json.Unmarshal(ja, &x)
	_ = json.Unmarshal(jb, &y)
	return reflect.DeepEqual(x, y)
}
