package e2e

// Ordering with the real amazon-eks-pod-identity-webhook (built by run.sh
// from its Go module, tools/pod-identity-webhook). The API server calls
// mutating webhook configurations in the order of their names; ours is
// "harbor-iam-webhook". EKS ships its webhook as "pod-identity-webhook"
// (after ours); any configuration named to sort before ours runs first.

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	eksHookName    = "pod-identity-webhook.amazonaws.com"
	nsEKS          = "ca-eks" // its default ServiceAccount has a role of its own
	defaultRoleARN = "arn:aws:iam::111122223333:role/default-sa"
)

type eksWebhook struct {
	proc  *proc
	url   string
	caPEM []byte
}

func (a *aware) specEKSWebhookOrdering(t *testing.T) {
	bin := os.Getenv("E2E_POD_IDENTITY_WEBHOOK")
	if bin == "" {
		reason := os.Getenv("E2E_POD_IDENTITY_WEBHOOK_UNAVAILABLE")
		if reason == "" {
			reason = "E2E_POD_IDENTITY_WEBHOOK is not set (run the suite through tests/e2e/run.sh)"
		}
		t.Skip("the real amazon-eks-pod-identity-webhook could not be built here: " + reason)
	}
	a.use(t, a.facts)
	items := []any{
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsEKS, "labels": obj{injectLabel: "enabled"}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default", "namespace": nsEKS,
			"annotations": obj{"eks.amazonaws.com/role-arn": defaultRoleARN}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": irsaSA, "namespace": nsEKS,
			"annotations": obj{"eks.amazonaws.com/role-arn": roleARN}}},
	}
	if !strings.Contains(a.rbacHow, "itself") {
		items = append(items, a.roleBinding(nsEKS))
	}
	a.c.mustKubectl(t, marshal(t, obj{"apiVersion": "v1", "kind": "List", "items": items}), "create", "-f", "-")
	eks := a.startEKSWebhook(t, bin)
	// The only way our webhook replaces an account that has a role of its own.
	force := startServe(t, a.repo, a.c.dir, "webhook-force-sa", []string{"KUBECONFIG=" + a.saKubeconfig, "HOME=" + a.c.home},
		"--cluster-facts", "on", "--force-service-account")

	cases := []struct {
		name, ns  string
		ours      *webhook
		sa, role  string // what the pod must end with
		eksBefore string // what the EKS webhook does when it runs first
	}{
		{"harbor, default has no role", nsHarbor, a.facts, irsaSA, roleARN, "nothing (default has no role)"},
		{"ca-eks, default has a role, kept by ours", nsEKS, a.facts, "default", defaultRoleARN, "injects default's role; ours keeps default"},
		{"ca-eks, --force-service-account", nsEKS, force, irsaSA, roleARN, "injects default's role; ours switches to harbor-sa and re-points AWS_ROLE_ARN"},
	}
	// What our webhook alone makes of the core pod.
	base := map[string]pod{}
	for _, c := range cases {
		a.use(t, c.ours)
		base[c.name] = a.mustDryRun(t, c.ns, a.fixtureJSON(t, coreFixture))
	}
	check := func(t *testing.T, got pod, sa, role string) {
		t.Helper()
		if got.Spec.ServiceAccountName != sa {
			t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, sa)
		}
		checkWebIdentity(t, got, webIdentity{role: role, audience: defaultAudience, expiration: 86400})
	}

	t.Run("named pod-identity-webhook (called after ours): changes nothing on our output", func(t *testing.T) {
		a.registerEKS(t, eks, "pod-identity-webhook")
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				a.use(t, c.ours)
				got := a.mustDryRun(t, c.ns, a.fixtureJSON(t, coreFixture))
				if d := diff(normalised(base[c.name].raw, false), normalised(got.raw, false)); d != "" {
					t.Errorf("the EKS webhook changed our output (- ours alone, + both):\n%s", d)
				}
				check(t, got, c.sa, c.role)
			})
		}
	})

	t.Run("named 0-pod-identity-webhook (called before ours): one set of credentials, the final account's", func(t *testing.T) {
		a.registerEKS(t, eks, "0-pod-identity-webhook")
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Logf("EKS webhook first: %s", c.eksBefore)
				a.use(t, c.ours)
				check(t, a.mustDryRun(t, c.ns, a.fixtureJSON(t, coreFixture)), c.sa, c.role)
			})
		}
	})
}

// startEKSWebhook runs the EKS webhook out of cluster: the suite's serving
// certificate, the admin kubeconfig (its ServiceAccount informer lists and
// watches), the annotation prefix and region EKS uses.
func (a *aware) startEKSWebhook(t *testing.T, bin string) *eksWebhook {
	t.Helper()
	port, metrics := freePort(t), freePort(t)
	p := startProc(t, a.c.dir, "pod-identity-webhook", nil, []string{"KUBECONFIG=" + a.c.kubeconfig, "HOME=" + a.c.home}, bin,
		"--in-cluster=false",
		"--kubeconfig="+a.c.kubeconfig,
		"--tls-cert="+filepath.Join(a.w.certs, "tls.crt"),
		"--tls-key="+filepath.Join(a.w.certs, "tls.key"),
		"--port="+itoa(port),
		"--metrics-port="+itoa(metrics),
		"--annotation-prefix=eks.amazonaws.com",
		"--token-audience="+defaultAudience,
		"--aws-default-region=eu-west-1")
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	waitFor(t, 60*time.Second, "amazon-eks-pod-identity-webhook /healthz", func() bool {
		if p.exited() {
			t.Fatalf("amazon-eks-pod-identity-webhook exited: %v\n%s", p.err, p.tail(30))
		}
		resp, err := client.Get("http://127.0.0.1:" + itoa(metrics) + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return &eksWebhook{proc: p, url: "https://127.0.0.1:" + itoa(port) + "/mutate", caPEM: a.w.caPEM}
}

// registerEKS registers the EKS webhook under configName the way EKS ships
// it: pods CREATE, objectSelector on the skip label, failurePolicy Ignore,
// sideEffects None, admissionReviewVersions v1beta1, no reinvocation, no
// namespaceSelector. It waits until the API server calls it (a pod in the
// unlabelled namespace running as harbor-sa gets AWS_ROLE_ARN: only the EKS
// webhook can have put it there) and removes it again when t ends.
func (a *aware) registerEKS(t *testing.T, eks *eksWebhook, configName string) {
	t.Helper()
	mwc := obj{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
		"metadata": obj{"name": configName},
		"webhooks": []any{obj{
			"name":                    eksHookName,
			"admissionReviewVersions": []any{"v1beta1"},
			"clientConfig":            obj{"url": eks.url, "caBundle": b64(eks.caPEM)},
			"rules": []any{obj{"operations": []any{"CREATE"}, "apiGroups": []any{""},
				"apiVersions": []any{"v1"}, "resources": []any{"pods"}}},
			"objectSelector": obj{"matchExpressions": []any{obj{
				"key": "eks.amazonaws.com/skip-pod-identity-webhook", "operator": "DoesNotExist"}}},
			"failurePolicy":      "Ignore",
			"sideEffects":        "None",
			"reinvocationPolicy": "Never",
		}}}
	a.c.mustKubectl(t, marshal(t, mwc), "apply", "-f", "-")
	probe := a.fixtureObj(t, coreFixture)
	probe["spec"].(obj)["serviceAccountName"] = irsaSA
	probe["spec"].(obj)["serviceAccount"] = irsaSA
	injected := func() bool {
		got, _, err := a.dryRunCreate(t, nsPlain, marshal(t, probe))
		if err != nil {
			t.Fatalf("probe in %s: %v", nsPlain, err)
		}
		c, _ := got.container("containers", "core")
		return len(c.entries("AWS_ROLE_ARN")) > 0
	}
	waitFor(t, 60*time.Second, "the API server to call amazon-eks-pod-identity-webhook", injected)
	t.Cleanup(func() {
		a.c.mustKubectl(t, nil, "delete", "mutatingwebhookconfiguration", configName, "--wait=true")
		waitFor(t, 60*time.Second, "amazon-eks-pod-identity-webhook to be unregistered", func() bool { return !injected() })
	})
}
