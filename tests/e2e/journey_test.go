package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's install journey with real writes, not dry runs: apply the manifests, make and
// install the certificates with certs/gen-certs.sh --apply, restart the webhook and the Harbor
// workloads, then uninstall in the documented order and see pods admitted unchanged. Runs last:
// it replaces the suite's own webhook configuration.
func (e *env) specInstallJourney(t *testing.T) {
	base := filepath.Join(e.repo, "manifests")
	const cfgName = "harbor-iam-webhook"

	t.Run("kubectl apply -k manifests/", func(t *testing.T) {
		t.Log(e.c.mustKubectl(t, nil, "apply", "-k", base))
		var mwc struct {
			Webhooks []struct {
				ClientConfig struct {
					Service *struct{ Name, Namespace, Path string }
				} `json:"clientConfig"`
			}
		}
		must(t, json.Unmarshal([]byte(e.c.mustKubectl(t, nil, "get", "mutatingwebhookconfiguration", cfgName, "-o", "json")), &mwc))
		if len(mwc.Webhooks) != 1 || mwc.Webhooks[0].ClientConfig.Service == nil || mwc.Webhooks[0].ClientConfig.Service.Path != "/mutate" {
			t.Fatalf("installed configuration does not point at the Service: %+v", mwc)
		}
		for _, kind := range []string{"deployment", "service", "serviceaccount", "poddisruptionbudget"} {
			e.c.mustKubectl(t, nil, "-n", nsWebhook, "get", kind, cfgName)
		}
	})

	t.Run("certs/gen-certs.sh --apply installs the Secret and the caBundle, keys never printed", func(t *testing.T) {
		out := t.TempDir()
		cmd := exec.Command(filepath.Join(e.repo, "certs", "gen-certs.sh"), "--out", out, "--apply")
		cmd.Env = append(os.Environ(), "KUBECTL="+e.c.kubectlBin+" --kubeconfig "+e.c.kubeconfig, "HOME="+e.c.home)
		printed, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gen-certs.sh --apply: %v\n%s", err, printed)
		}
		if strings.Contains(string(printed), "PRIVATE KEY") {
			t.Fatal("gen-certs.sh printed key material")
		}
		bundle := e.c.mustKubectl(t, nil, "get", "mutatingwebhookconfiguration", cfgName, "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}")
		pem, err := base64.StdEncoding.DecodeString(strings.TrimSpace(bundle))
		must(t, err)
		ca, err := os.ReadFile(filepath.Join(out, "ca.crt"))
		must(t, err)
		if !strings.Contains(string(pem), strings.TrimSpace(string(ca))) {
			t.Error("the caBundle does not hold the CA that gen-certs.sh made")
		}
		if typ := e.c.mustKubectl(t, nil, "-n", nsWebhook, "get", "secret", "harbor-iam-webhook-tls", "-o", "jsonpath={.type}"); typ != "kubernetes.io/tls" {
			t.Errorf("Secret type %q", typ)
		}
	})

	t.Run("rollout restart: the webhook and the Harbor workloads", func(t *testing.T) {
		e.c.mustKubectl(t, nil, "-n", nsWebhook, "rollout", "restart", "deployment/"+cfgName)
		restarted := func(ns, name string) bool {
			a := e.c.mustKubectl(t, nil, "-n", ns, "get", "deployment", name, "-o", `jsonpath={.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}`)
			return a != ""
		}
		if !restarted(nsWebhook, cfgName) {
			t.Error("the webhook Deployment was not restarted")
		}
		// A Harbor Deployment, restarted as the README says (all Deployments of the namespace).
		dep := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"harbor-core"},
		  "spec":{"selector":{"matchLabels":{"app":"harbor","component":"core"}},
		    "template":{"metadata":{"labels":{"app":"harbor","component":"core"}},
		      "spec":{"serviceAccountName":"default","containers":[{"name":"core","image":"goharbor/harbor-core:v2.12.4"}]}}}}`
		e.c.mustKubectl(t, []byte(dep), "-n", nsHarbor, "apply", "-f", "-")
		e.c.mustKubectl(t, nil, "-n", nsHarbor, "rollout", "restart", "deployment")
		if !restarted(nsHarbor, "harbor-core") {
			t.Error("kubectl -n harbor rollout restart deployment did not restart harbor-core")
		}
	})

	t.Run("uninstall in the documented order; pods are then admitted unchanged", func(t *testing.T) {
		e.c.mustKubectl(t, nil, "delete", "mutatingwebhookconfiguration", cfgName)
		e.c.mustKubectl(t, nil, "delete", "validatingwebhookconfiguration", cfgName, "--ignore-not-found")
		// No controller-manager here: the namespace stays Terminating, so don't wait for it.
		e.c.mustKubectl(t, nil, "delete", "-k", base, "--wait=false", "--ignore-not-found")
		for _, kind := range []string{"clusterrole", "clusterrolebinding", "priorityclass", "mutatingwebhookconfiguration"} {
			if r := e.c.kubectl(t, nil, "get", kind, cfgName); r.Err == nil {
				t.Errorf("%s %s still exists after uninstall", kind, cfgName)
			}
		}
		f := e.mutatedFixtures()[0]
		p, _, err := e.dryRunCreate(t, nsHarbor, e.fixtureJSON(t, f))
		if err != nil {
			t.Fatalf("after uninstall, %s is refused: %v", f, err)
		}
		if p.Metadata.Annotations[statusAnnotation] != "" {
			t.Errorf("after uninstall, %s was still mutated", f)
		}
	})
}
