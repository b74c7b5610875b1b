package e2e

// Cluster-aware behaviour: the webhook with --cluster-facts on, reading
// ServiceAccounts and ConfigMaps from the harness API server with the
// shipped RBAC (manifests/base/rbac.yaml) and a token of its own
// ServiceAccount, never the admin's.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	// Namespaces of these specs (all labelled harbor-iam-webhook/inject=enabled
	// except nsAudit, which is labelled by its spec).
	nsNoRole     = "ca-no-role"        // harbor-sa exists without a role annotation
	nsVerifyFull = "ca-verify-full"    // ConfigMap harbor-core says POSTGRESQL_SSLMODE: verify-full
	nsSAAnnot    = "ca-sa-annotations" // harbor-sa with audience, regional STS and expiry annotations
	nsMountable  = "ca-mountable"      // harbor-sa with kubernetes.io/enforce-mountable-secrets
	nsPull       = "ca-pull"           // imagePullSecrets on default and on harbor-sa
	nsAudit      = "ca-audit"          // labelled only after a pod was created in it

	webhookSA       = "harbor-iam-webhook" // the webhook's own ServiceAccount, in nsWebhook
	ownSA           = "core-own"           // a pod's own ServiceAccount with a role, in nsHarbor
	ownRoleARN      = "arn:aws:iam::111122223333:role/core-own"
	vwcName         = "harbor-iam-webhook"
	validateHook    = "validate.harbor-iam-webhook.io"
	tokenMountPath  = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
	tokenFile       = tokenMountPath + "/token"
	defaultAudience = "sts.amazonaws.com"
	coreFixture     = "harbor-helm-1.16-core.yaml"
)

// aware is the state the cluster-aware specs share: the env of the main test
// plus webhook processes that differ only in their flags. Exactly one of
// them is behind the MutatingWebhookConfiguration at a time (use).
type aware struct {
	*env
	saKubeconfig string // the webhook ServiceAccount's token, no admin rights
	rbacHow      string // how the shipped RBAC was granted (for the log)
	rbacRole     string // the shipped ClusterRole
	facts        *webhook
	warn         *webhook
	podIdentity  *webhook
	s3           *webhook
	shortTTL     *webhook // --facts-ttl-seconds 1, started by the facts-cache spec
	active       *webhook
}

// specClusterAware runs every cluster-aware spec against the one API server,
// then points the MutatingWebhookConfiguration back at the main webhook.
func (e *env) specClusterAware(t *testing.T) {
	a := e.setUpClusterAware(t)
	// Registered after the webhooks started, so it runs before they stop.
	t.Cleanup(func() { a.use(t, e.w) })

	t.Run("shipped RBAC lets the webhook get ServiceAccounts and ConfigMaps, nothing more", a.specRBAC)
	t.Run("readyz is 503 until the API server has answered", a.specReadyz)
	t.Run("IRSA with cluster facts", a.specIRSA)
	t.Run("on-missing-role warn", a.specWarn)
	t.Run("identity-mode pod-identity", a.specPodIdentity)
	t.Run("ConfigMap facts", a.specConfigMapFacts)
	t.Run("ordering with the real amazon-eks-pod-identity-webhook", a.specEKSWebhookOrdering)
	t.Run("validating webhook", a.specValidating)
	t.Run("audit command", a.specAudit)
	t.Run("ServiceAccount admission plugin", a.specServiceAccountPlugin)
	t.Run("registry-s3-irsa", a.specRegistryS3)
	t.Run("facts cache", a.specFactsCache)
	t.Run("no cluster lookup failed: the shipped RBAC was enough", a.specNoFailedLookup)
	// Last: it removes the cluster-wide binding.
	t.Run("namespaced-facts-rbac component", a.specNamespacedRBAC)
}

func (e *env) setUpClusterAware(t *testing.T) *aware {
	t.Helper()
	start := time.Now()
	a := &aware{env: e, active: e.w}

	// Namespaces, ServiceAccounts and ConfigMaps these specs read.
	labelled := obj{injectLabel: "enabled"}
	sa := func(ns, name string, annotations obj) obj {
		md := obj{"name": name, "namespace": ns}
		if annotations != nil {
			md["annotations"] = annotations
		}
		return obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": md}
	}
	role := obj{"eks.amazonaws.com/role-arn": roleARN}
	items := []any{
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsNoRole, "labels": labelled}},
		sa(nsNoRole, "default", nil), sa(nsNoRole, irsaSA, nil),
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsVerifyFull, "labels": labelled}},
		sa(nsVerifyFull, "default", nil), sa(nsVerifyFull, irsaSA, role),
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsSAAnnot, "labels": labelled}},
		sa(nsSAAnnot, "default", nil), sa(nsSAAnnot, irsaSA, obj{
			"eks.amazonaws.com/role-arn":               roleARN,
			"eks.amazonaws.com/audience":               "rds-e2e.example.com",
			"eks.amazonaws.com/sts-regional-endpoints": "true",
			"eks.amazonaws.com/token-expiration":       "7200",
		}),
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsMountable, "labels": labelled}},
		sa(nsMountable, "default", nil),
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsPull, "labels": labelled}},
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsAudit}},
		sa(nsAudit, "default", nil),
		sa(nsHarbor, ownSA, obj{"eks.amazonaws.com/role-arn": ownRoleARN}),
		sa(nsWebhook, webhookSA, nil),
	}
	// ConfigMap harbor-core as the fixture has it, but with verify-full.
	var cm obj
	must(t, json.Unmarshal(withNamespace(t, readYAMLObject(t, filepath.Join(e.fixtures, "configmaps", "harbor-helm-1.16-core-cm.yaml")), nsVerifyFull), &cm))
	cm["data"].(obj)["POSTGRESQL_SSLMODE"] = "verify-full"
	items = append(items, cm)
	list, err := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": items})
	must(t, err)
	e.c.mustKubectl(t, list, "create", "-f", "-")

	a.grantShippedRBAC(t)
	token := strings.TrimSpace(e.c.mustKubectl(t, nil, "create", "token", webhookSA, "-n", nsWebhook, "--duration=2h"))
	a.saKubeconfig = filepath.Join(e.c.dir, "webhook-sa.kubeconfig")
	e.c.writeKubeconfig(t, a.saKubeconfig, webhookSA, token)

	env := []string{"KUBECONFIG=" + a.saKubeconfig, "HOME=" + e.c.home}
	on := []string{"--cluster-facts", "on"}
	a.facts = startServe(t, e.repo, e.c.dir, "webhook-facts", env, on...)
	a.warn = startServe(t, e.repo, e.c.dir, "webhook-warn", env, append(on, "--on-missing-role", "warn")...)
	a.podIdentity = startServe(t, e.repo, e.c.dir, "webhook-pod-identity", env, append(on, "--identity-mode", "pod-identity")...)
	a.s3 = startServe(t, e.repo, e.c.dir, "webhook-s3", env, append(on, "--registry-s3-irsa")...)
	t.Logf("cluster-aware set-up (namespaces, RBAC, token, 4 webhooks with facts on) in %s", time.Since(start).Round(time.Millisecond))
	return a
}

// grantShippedRBAC applies manifests/base/rbac.yaml as shipped. If the file
// binds its role to the webhook's ServiceAccount, that is all; if it ships
// only the role (to be bound per opted-in namespace, as its comment says),
// the role is bound with a RoleBinding in every namespace the specs use,
// the documented install step.
func (a *aware) grantShippedRBAC(t *testing.T) {
	t.Helper()
	path := filepath.Join(a.repo, "manifests", "base", "rbac.yaml")
	data, err := os.ReadFile(path)
	must(t, err)
	objs := splitYAML(t, string(data))
	a.c.mustKubectl(t, data, "apply", "-f", "-")
	var roles []string
	bound := false
	for _, o := range objs {
		switch o["kind"] {
		case "ClusterRole":
			roles = append(roles, nameOf(o))
		case "ClusterRoleBinding", "RoleBinding":
			for _, s := range listOf(o["subjects"]) {
				if s["kind"] == "ServiceAccount" && s["name"] == webhookSA && s["namespace"] == nsWebhook {
					bound = true
				}
			}
		}
	}
	if len(roles) != 1 {
		t.Fatalf("%s: want exactly one ClusterRole, got %v", path, roles)
	}
	a.rbacRole = roles[0]
	if bound {
		a.rbacHow = fmt.Sprintf("%s binds ClusterRole %s to %s/%s itself", path, roles[0], nsWebhook, webhookSA)
		return
	}
	var items []any
	for _, ns := range []string{nsHarbor, nsPlain, nsNoSA, nsWebhook, nsNoRole, nsVerifyFull, nsSAAnnot, nsMountable, nsPull, nsAudit} {
		items = append(items, a.roleBinding(ns))
	}
	list, _ := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": items})
	a.c.mustKubectl(t, list, "apply", "-f", "-")
	a.rbacHow = fmt.Sprintf("%s ships ClusterRole %s without a binding; bound with a RoleBinding in each namespace of these specs", path, roles[0])
}

// use points the shipped MutatingWebhookConfiguration at w and waits until
// the API server calls w.
func (a *aware) use(t *testing.T, w *webhook) {
	t.Helper()
	if a.active == w {
		return
	}
	rendered := findObject(t, renderOverlay(t, a.c, a.repo, a.c.dir, w), "MutatingWebhookConfiguration", mwcName)
	applyWebhookConfig(t, a.c, a.repo, w, rendered)
	deadline := time.Now().Add(60 * time.Second)
	before := w.reviews()
	for w.reviews() == before {
		if time.Now().After(deadline) {
			t.Fatalf("the API server did not call %s within 60s after the configuration switched to it", w.proc.name)
		}
		a.dryRunCreate(t, nsHarbor, a.fixtureJSON(t, coreFixture))
		time.Sleep(100 * time.Millisecond)
	}
	a.active = w
}

// reviews counts the admission reviews the webhook has logged.
func (w *webhook) reviews() int {
	data, _ := os.ReadFile(w.proc.log)
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, " review ") || strings.HasSuffix(l, " review") {
			n++
		}
	}
	return n
}

// ---- specs ----

func (a *aware) specRBAC(t *testing.T) {
	t.Log(a.rbacHow)
	canI := func(verb, resource, ns string) string {
		r := a.c.kubectlAs(t, a.saKubeconfig, nil, "auth", "can-i", verb, resource, "-n", ns)
		return strings.TrimSpace(r.Stdout)
	}
	for _, ns := range []string{nsHarbor, nsNoRole} {
		for _, c := range []struct{ verb, resource, want string }{
			{"get", "serviceaccounts", "yes"},
			{"get", "configmaps", "yes"},
			{"list", "serviceaccounts", "no"},
			{"watch", "configmaps", "no"},
			{"get", "secrets", "no"},
			{"get", "pods", "no"},
			{"create", "serviceaccounts/token", "no"},
		} {
			if got := canI(c.verb, c.resource, ns); got != c.want {
				t.Errorf("as %s/%s: kubectl auth can-i %s %s -n %s = %q, want %q", nsWebhook, webhookSA, c.verb, c.resource, ns, got, c.want)
			}
		}
	}
}

// Every spec above relied on lookups made with the webhook's own token; none
// of them may have been refused or failed.
func (a *aware) specNoFailedLookup(t *testing.T) {
	for _, w := range []*webhook{a.facts, a.warn, a.podIdentity, a.s3, a.shortTTL} {
		if w == nil {
			continue
		}
		log := w.proc.tail(1 << 20)
		if w.reviews() == 0 {
			t.Errorf("%s answered no review", w.proc.name)
		}
		if strings.Contains(log, "lookup failed") || strings.Contains(log, "lookup timed out") {
			t.Errorf("%s logged failed cluster lookups:\n%s", w.proc.name, grepLines(log, "lookup"))
		}
	}
}

// With cluster facts on, /readyz stays 503 while the API server cannot be
// reached (here: a kubeconfig pointing at a closed loopback port); /healthz
// is 200 all along.
func (a *aware) specReadyz(t *testing.T) {
	dead := filepath.Join(a.c.dir, "dead.kubeconfig")
	deadCluster := *a.c
	deadCluster.server = "https://127.0.0.1:" + itoa(freePort(t))
	deadCluster.writeKubeconfig(t, dead, webhookSA, "unused")
	addr := "127.0.0.1:" + itoa(freePort(t))
	p := startProc(t, a.c.dir, "webhook-unreachable-apiserver", nil,
		[]string{"KUBECONFIG=" + dead, "HOME=" + a.c.home, "HARBOR_IAM_WEBHOOK_LOG_FORMAT=text"}, a.w.binary,
		"serve", "--listen", addr, "--tls-cert", filepath.Join(a.w.certs, "tls.crt"), "--tls-key", filepath.Join(a.w.certs, "tls.key"),
		"--aws-region", "eu-west-1", "--metrics-listen", "off", "--drain-delay-seconds", "0", "--cluster-facts", "on")
	defer p.stop(t)
	// Wait for the listener, then watch readiness for 3 seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := httpsGet("https://"+addr+"/healthz", a.w.caPEM); err == nil && code == http.StatusOK {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("webhook did not serve /healthz: %s", p.tail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		code, body, err := httpsGet("https://"+addr+"/readyz", a.w.caPEM)
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with an unreachable API server: %d %q %v, want 503", code, body, err)
		}
	}
	if !strings.Contains(p.tail(50), "API server not reachable yet") {
		t.Errorf("the log does not say why it is not ready:\n%s", p.tail(20))
	}
}

func (a *aware) specIRSA(t *testing.T) {
	a.use(t, a.facts)

	t.Run("ServiceAccount with a role: the pod gets its web identity, as the EKS webhook would inject it", func(t *testing.T) {
		got := a.mustDryRun(t, nsHarbor, a.fixtureJSON(t, coreFixture))
		if got.Spec.ServiceAccountName != irsaSA {
			t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, irsaSA)
		}
		checkWebIdentity(t, got, webIdentity{role: roleARN, audience: defaultAudience, expiration: 86400})
		checkContainers(t, got, "containers", a.withFacts(t, coreFixture).Containers)
	})

	t.Run("every mutated fixture: harbor-sa's web identity in each container and init container", func(t *testing.T) {
		for _, f := range a.mutatedFixtures() {
			t.Run(f, func(t *testing.T) {
				got := a.mustDryRun(t, nsHarbor, a.fixtureJSON(t, f))
				if got.Spec.ServiceAccountName != irsaSA {
					t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, irsaSA)
				}
				checkWebIdentity(t, got, webIdentity{role: roleARN, audience: defaultAudience, expiration: 86400})
			})
		}
	})

	t.Run("ServiceAccount annotations set the audience, regional STS and token expiry", func(t *testing.T) {
		got := a.mustDryRun(t, nsSAAnnot, a.fixtureJSON(t, coreFixture))
		checkWebIdentity(t, got, webIdentity{role: roleARN, audience: "rds-e2e.example.com", expiration: 7200, regionalSTS: true})
	})

	t.Run("pod's own ServiceAccount with a role is kept, with its role", func(t *testing.T) {
		p := a.fixtureObj(t, coreFixture)
		p["spec"].(obj)["serviceAccountName"] = ownSA
		p["spec"].(obj)["serviceAccount"] = ownSA
		got := a.mustDryRun(t, nsHarbor, marshal(t, p))
		if got.Spec.ServiceAccountName != ownSA {
			t.Errorf("serviceAccountName = %q, want the pod's own %q", got.Spec.ServiceAccountName, ownSA)
		}
		checkWebIdentity(t, got, webIdentity{role: ownRoleARN, audience: defaultAudience, expiration: 86400})
	})

	t.Run("IRSA ServiceAccount missing: denied by our webhook with the kubectl fix", func(t *testing.T) {
		_, _, err := a.dryRunCreate(t, nsNoSA, a.fixtureJSON(t, coreFixture))
		if err == nil {
			t.Fatalf("admitted in %s although %s does not exist", nsNoSA, irsaSA)
		}
		t.Logf("API server: %v", err)
		for _, want := range []string{
			`admission webhook "` + webhookName + `" denied the request`,
			"IRSA ServiceAccount " + nsNoSA + "/" + irsaSA + " does not exist",
			"kubectl -n " + nsNoSA + " create serviceaccount " + irsaSA,
			"kubectl -n " + nsNoSA + " annotate serviceaccount " + irsaSA + " eks.amazonaws.com/role-arn=",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain %q", want)
			}
		}
	})

	t.Run("ServiceAccount without the role annotation: denied with the kubectl fix", func(t *testing.T) {
		_, _, err := a.dryRunCreate(t, nsNoRole, a.fixtureJSON(t, coreFixture))
		if err == nil {
			t.Fatalf("admitted in %s although %s has no role", nsNoRole, irsaSA)
		}
		t.Logf("API server: %v", err)
		for _, want := range []string{
			`admission webhook "` + webhookName + `" denied the request`,
			"ServiceAccount " + nsNoRole + "/" + irsaSA + " has no eks.amazonaws.com/role-arn annotation",
			"kubectl -n " + nsNoRole + " annotate serviceaccount " + irsaSA + " eks.amazonaws.com/role-arn=arn:aws:iam::",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain %q", want)
			}
		}
	})

	// The EKS webhook looks for its mount by name only; ours also leaves a
	// container alone that already mounts something at the token path (a
	// second mount there would be refused by the API server's validation).
	t.Run("token path already mounted under another volume name: admitted, one mount at the path", func(t *testing.T) {
		p := a.fixtureObj(t, coreFixture)
		spec := p["spec"].(obj)
		spec["volumes"] = append(spec["volumes"].([]any), obj{"name": "aws-token", "projected": obj{"sources": []any{
			obj{"serviceAccountToken": obj{"audience": defaultAudience, "expirationSeconds": 86400, "path": "token"}}}}})
		c := listOf(spec["containers"])[0]
		c["volumeMounts"] = append(c["volumeMounts"].([]any), obj{"name": "aws-token", "mountPath": tokenMountPath, "readOnly": true})
		got, _, err := a.dryRunCreate(t, nsHarbor, marshal(t, p))
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		if r := roleOf(t, got); r != roleARN {
			t.Errorf("AWS_ROLE_ARN = %q, want %q", r, roleARN)
		}
		n := 0
		for _, m := range listOf(listOf(got.raw["spec"].(obj)["containers"])[0]["volumeMounts"]) {
			if m["mountPath"] == tokenMountPath {
				n++
				if m["name"] != "aws-token" {
					t.Errorf("the mount at the token path is %v, want the pod's own aws-token", m["name"])
				}
			}
		}
		if n != 1 {
			t.Errorf("%d mounts at %s, want 1", n, tokenMountPath)
		}
	})

	t.Run("pod labelled eks.amazonaws.com/skip-pod-identity-webhook: ServiceAccount set, no web identity", func(t *testing.T) {
		p := a.fixtureObj(t, coreFixture)
		p["metadata"].(obj)["labels"].(obj)["eks.amazonaws.com/skip-pod-identity-webhook"] = "true"
		got := a.mustDryRun(t, nsHarbor, marshal(t, p))
		if got.Spec.ServiceAccountName != irsaSA {
			t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, irsaSA)
		}
		checkNoWebIdentity(t, got)
	})

	t.Run("container named in eks.amazonaws.com/skip-containers gets no web identity", func(t *testing.T) {
		p := a.fixtureObj(t, coreFixture)
		md := p["metadata"].(obj)
		md["annotations"].(obj)["eks.amazonaws.com/skip-containers"] = "core"
		got := a.mustDryRun(t, nsHarbor, marshal(t, p))
		c := containerObj(t, got, "containers", "core")
		for _, e := range listOf(c["env"]) {
			if strings.HasPrefix(fmt.Sprint(e["name"]), "AWS_") {
				t.Errorf("skipped container got %v", e)
			}
		}
		if n := countNamed(c["volumeMounts"], irsaVolume); n != 0 {
			t.Errorf("skipped container got %d %s mounts", n, irsaVolume)
		}
	})
}

func (a *aware) specWarn(t *testing.T) {
	a.use(t, a.warn)

	t.Run("ServiceAccount without the role annotation: admitted with a kubectl Warning, no web identity", func(t *testing.T) {
		got, warnings, err := a.dryRunCreate(t, nsNoRole, a.fixtureJSON(t, coreFixture))
		if err != nil {
			t.Fatalf("refused with --on-missing-role warn: %v", err)
		}
		if !containsAny(warnings, "ServiceAccount "+nsNoRole+"/"+irsaSA+" has no eks.amazonaws.com/role-arn") {
			t.Errorf("no Warning about the missing role; warnings: %q", warnings)
		}
		if got.Spec.ServiceAccountName != irsaSA {
			t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, irsaSA)
		}
		checkNoWebIdentity(t, got)
		checkContainers(t, got, "containers", a.withFacts(t, coreFixture).Containers)
	})

	// Ours only warns; the ServiceAccount admission plugin then refuses the
	// pod for the account we set, and kubectl still prints our warning.
	t.Run("IRSA ServiceAccount missing: our Warning, then the API server's ServiceAccount plugin refuses the pod", func(t *testing.T) {
		_, warnings, err := a.dryRunCreate(t, nsNoSA, a.fixtureJSON(t, coreFixture))
		if err == nil {
			t.Fatalf("admitted in %s although %s does not exist", nsNoSA, irsaSA)
		}
		t.Logf("API server: %v; warnings: %q", err, warnings)
		if !strings.Contains(err.Error(), `error looking up service account `+nsNoSA+`/`+irsaSA) {
			t.Errorf("not the ServiceAccount plugin's refusal: %v", err)
		}
		if !containsAny(warnings, "IRSA ServiceAccount "+nsNoSA+"/"+irsaSA+" does not exist") {
			t.Errorf("our warning was not shown; warnings: %q", warnings)
		}
	})
}

func (a *aware) specPodIdentity(t *testing.T) {
	a.use(t, a.podIdentity)
	for _, ns := range []string{nsHarbor, nsNoRole} {
		t.Run("namespace "+ns+": admitted, ServiceAccount set, no AWS_* env and no token volume", func(t *testing.T) {
			got, warnings, err := a.dryRunCreate(t, ns, a.fixtureJSON(t, coreFixture))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warnings {
				t.Logf("warning: %s", w)
			}
			if got.Spec.ServiceAccountName != irsaSA {
				t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, irsaSA)
			}
			checkNoWebIdentity(t, got)
			checkContainers(t, got, "containers", a.withFacts(t, coreFixture).Containers)
		})
	}
}

func (a *aware) specConfigMapFacts(t *testing.T) {
	a.use(t, a.facts)

	t.Run("envFrom ConfigMap says verify-full: kept, no POSTGRESQL_SSLMODE added", func(t *testing.T) {
		got, warnings, err := a.dryRunCreate(t, nsVerifyFull, a.fixtureJSON(t, coreFixture))
		if err != nil {
			t.Fatal(err)
		}
		c, _ := got.container("containers", "core")
		if es := c.entries("POSTGRESQL_SSLMODE"); len(es) != 0 {
			t.Errorf("POSTGRESQL_SSLMODE added although the ConfigMap says verify-full: %v", es)
		}
		if containsAny(warnings, "POSTGRESQL_SSLMODE") {
			t.Errorf("warning about sslmode although it is known and strong: %q", warnings)
		}
		checkContainers(t, got, "containers", a.exp.Pods[coreFixture].Containers)
	})

	// The environment the kubelet builds decides, not one entry: a reference
	// is expanded, an optional reference to nothing is skipped.
	withEnv := func(t *testing.T, extra ...obj) []byte {
		o := a.fixtureObj(t, coreFixture)
		c := listOf(o["spec"].(obj)["containers"])[0]
		env, _ := c["env"].([]any)
		for _, e := range extra {
			env = append(env, e)
		}
		c["env"] = env
		return marshal(t, o)
	}
	for _, tc := range []struct{ ns, cm, want string }{
		{nsVerifyFull, "verify-full", "$(DB_SSLMODE)"}, // kept as written
		{nsHarbor, "disable", "require"},               // raised
	} {
		t.Run("sslmode through $(DB_SSLMODE), which the ConfigMap sets to "+tc.cm+": "+tc.want, func(t *testing.T) {
			got, warnings, err := a.dryRunCreate(t, tc.ns, withEnv(t,
				obj{"name": "DB_SSLMODE", "valueFrom": obj{"configMapKeyRef": obj{"name": "harbor-core", "key": "POSTGRESQL_SSLMODE"}}},
				obj{"name": "POSTGRESQL_SSLMODE", "value": "$(DB_SSLMODE)"}))
			if err != nil {
				t.Fatal(err)
			}
			c, _ := got.container("containers", "core")
			if es := c.entries("POSTGRESQL_SSLMODE"); len(es) != 1 || es[0].Value == nil || *es[0].Value != tc.want {
				t.Errorf("POSTGRESQL_SSLMODE entries %v, want one %s", es, tc.want)
			}
			if tc.cm == "verify-full" && containsAny(warnings, "POSTGRESQL_SSLMODE") {
				t.Errorf("warning about a known, strong sslmode: %q", warnings)
			}
		})
	}
	t.Run("optional reference to a missing key does not hide the envFrom verify-full", func(t *testing.T) {
		optional := obj{"name": "POSTGRESQL_SSLMODE", "valueFrom": obj{"configMapKeyRef": obj{"name": "harbor-core", "key": "MISSING", "optional": true}}}
		got, warnings, err := a.dryRunCreate(t, nsVerifyFull, withEnv(t, optional))
		if err != nil {
			t.Fatal(err)
		}
		c, _ := got.container("containers", "core")
		es := c.entries("POSTGRESQL_SSLMODE")
		if len(es) != 1 || es[0].ValueFrom == nil {
			t.Errorf("POSTGRESQL_SSLMODE entries %v, want the optional reference untouched", es)
		}
		if containsAny(warnings, "POSTGRESQL_SSLMODE") {
			t.Errorf("warning about a known, strong sslmode: %q", warnings)
		}
	})
	t.Run("password through a ConfigMap-backed envFrom: both password names come back explicitly blank", func(t *testing.T) {
		o := a.fixtureObj(t, coreFixture)
		c := listOf(o["spec"].(obj)["containers"])[0]
		var onlyConfigMaps []any
		for _, src := range listOf(c["envFrom"]) {
			if src["configMapRef"] != nil {
				onlyConfigMaps = append(onlyConfigMaps, src)
			}
		}
		c["envFrom"] = onlyConfigMaps
		got, _, err := a.dryRunCreate(t, nsHarbor, marshal(t, o))
		if err != nil {
			t.Fatal(err)
		}
		core, _ := got.container("containers", "core")
		for _, name := range []string{"POSTGRESQL_PASSWORD", "HARBOR_DATABASE_PASSWORD"} {
			es := core.entries(name)
			if len(es) != 1 || !es[0].blank() {
				t.Errorf("%s entries %v, want one explicit blank", name, es)
			}
		}
	})

	// The fixture ConfigMap harbor-core (POSTGRESQL_SSLMODE: disable) is in
	// nsHarbor: every fixture with withFacts must match its expectation with
	// the withFacts part applied.
	for _, f := range a.pods {
		exp := a.exp.Pods[f]
		if len(exp.WithFacts) == 0 {
			continue
		}
		t.Run("fixture ConfigMap says disable: raised to require (withFacts)/"+f, func(t *testing.T) {
			merged := a.withFacts(t, f)
			got, warnings, err := a.dryRunCreateFile(t, f)
			if err != nil {
				t.Fatal(err)
			}
			plain, _, err := a.dryRunCreate(t, nsPlain, a.fixtureJSON(t, f))
			if err != nil {
				t.Fatal(err)
			}
			checkMutated(t, got, plain, merged)
			if !containsAny(warnings, `POSTGRESQL_SSLMODE was "disable" (from ConfigMap harbor-core); set to "require"`) {
				t.Errorf("no warning naming the ConfigMap's disable; warnings: %q", warnings)
			}
		})
	}
}

// withFacts returns the expectation of fixture f with its withFacts part
// applied, after checking the facts it names are the ConfigMaps the suite
// created in nsHarbor.
func (a *aware) withFacts(t *testing.T, f string) podExpectation {
	t.Helper()
	exp := a.exp.Pods[f]
	var wf struct {
		Facts          []string                        `json:"facts"`
		Containers     map[string]containerExpectation `json:"containers"`
		InitContainers map[string]containerExpectation `json:"initContainers"`
	}
	if err := json.Unmarshal(exp.WithFacts, &wf); err != nil {
		t.Fatalf("withFacts of %s: %v", f, err)
	}
	for _, file := range wf.Facts {
		var cm obj
		must(t, json.Unmarshal(readYAMLObject(t, filepath.Join(a.fixtures, "configmaps", file)), &cm))
		live := a.c.mustKubectl(t, nil, "get", "configmap", nameOf(cm), "-n", nsHarbor, "-o", "json")
		var got obj
		must(t, json.Unmarshal([]byte(live), &got))
		if !equalJSON(got["data"], cm["data"]) {
			t.Fatalf("ConfigMap %s/%s in the cluster differs from %s", nsHarbor, nameOf(cm), file)
		}
	}
	merge := func(base, over map[string]containerExpectation) map[string]containerExpectation {
		out := map[string]containerExpectation{}
		for n, c := range base {
			out[n] = c
		}
		for n, o := range over {
			c := out[n]
			env := map[string]string{}
			for k, v := range c.Env {
				env[k] = v
			}
			drop := map[string]bool{}
			for k, v := range o.Env {
				env[k] = v
				drop[k] = true
			}
			for _, k := range o.Blank {
				drop[k] = true
			}
			for _, k := range o.Absent {
				delete(env, k)
			}
			keep := func(l []string) []string {
				var r []string
				for _, k := range l {
					if !drop[k] {
						r = append(r, k)
					}
				}
				return r
			}
			out[n] = containerExpectation{Env: env, Blank: append(keep(c.Blank), o.Blank...), Absent: append(keep(c.Absent), o.Absent...)}
		}
		return out
	}
	exp.Containers = merge(exp.Containers, wf.Containers)
	exp.InitContainers = merge(exp.InitContainers, wf.InitContainers)
	return exp
}

// ---- web identity checks ----

type webIdentity struct {
	role, audience string
	expiration     int
	regionalSTS    bool
}

// checkWebIdentity: every container and init container has exactly one of
// each AWS_* entry with the expected value and one read-only aws-iam-token
// mount, and the pod has exactly one aws-iam-token projected token volume.
func checkWebIdentity(t *testing.T, got pod, want webIdentity) {
	t.Helper()
	wantEnv := map[string]string{
		"AWS_ROLE_ARN":                want.role,
		"AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile,
		"AWS_REGION":                  "eu-west-1",
		"AWS_DEFAULT_REGION":          "eu-west-1",
	}
	for _, kind := range []string{"containers", "initContainers"} {
		for _, c := range got.containers(kind) {
			for _, n := range sortedKeys(wantEnv) {
				es := c.entries(n)
				if len(es) != 1 || es[0].Value == nil || *es[0].Value != wantEnv[n] || es[0].ValueFrom != nil {
					t.Errorf("%s %q: %s = %v, want exactly one %q", kind, c.Name, n, es, wantEnv[n])
				}
			}
			sts := c.entries("AWS_STS_REGIONAL_ENDPOINTS")
			switch {
			case want.regionalSTS && (len(sts) != 1 || sts[0].Value == nil || *sts[0].Value != "regional"):
				t.Errorf("%s %q: AWS_STS_REGIONAL_ENDPOINTS = %v, want exactly one \"regional\"", kind, c.Name, sts)
			case !want.regionalSTS && len(sts) != 0:
				t.Errorf("%s %q: AWS_STS_REGIONAL_ENDPOINTS = %v, want none", kind, c.Name, sts)
			}
			co := containerObj(t, got, kind, c.Name)
			var mounts []obj
			for _, m := range listOf(co["volumeMounts"]) {
				if m["name"] == irsaVolume {
					mounts = append(mounts, m)
				}
			}
			if len(mounts) != 1 || mounts[0]["mountPath"] != tokenMountPath || mounts[0]["readOnly"] != true {
				t.Errorf("%s %q: %s mounts %v, want exactly one read-only at %s", kind, c.Name, irsaVolume, mounts, tokenMountPath)
			}
		}
	}
	var vols []obj
	for _, v := range listOf(got.raw["spec"].(obj)["volumes"]) {
		if v["name"] == irsaVolume {
			vols = append(vols, v)
		}
	}
	if len(vols) != 1 {
		t.Fatalf("%d %s volumes, want exactly one", len(vols), irsaVolume)
	}
	wantVol := obj{"name": irsaVolume, "projected": obj{"defaultMode": float64(420), "sources": []any{obj{"serviceAccountToken": obj{
		"audience": want.audience, "expirationSeconds": float64(want.expiration), "path": "token"}}}}}
	if d := diff(wantVol, vols[0]); d != "" {
		t.Errorf("%s volume (- want, + got):\n%s", irsaVolume, d)
	}
}

// checkNoWebIdentity: no AWS_* env anywhere and no aws-iam-token volume or mount.
func checkNoWebIdentity(t *testing.T, got pod) {
	t.Helper()
	for _, kind := range []string{"containers", "initContainers"} {
		for _, c := range got.containers(kind) {
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "AWS_") {
					t.Errorf("%s %q: %v injected", kind, c.Name, e)
				}
			}
			if n := countNamed(containerObj(t, got, kind, c.Name)["volumeMounts"], irsaVolume); n != 0 {
				t.Errorf("%s %q: %d %s mounts", kind, c.Name, n, irsaVolume)
			}
		}
	}
	if n := countNamed(got.raw["spec"].(obj)["volumes"], irsaVolume); n != 0 {
		t.Errorf("%d %s volumes, want none", n, irsaVolume)
	}
}

// ---- helpers ----

func (a *aware) mustDryRun(t *testing.T, ns string, podJSON []byte) pod {
	t.Helper()
	got, warnings, err := a.dryRunCreate(t, ns, podJSON)
	if err != nil {
		t.Fatalf("dry-run in %s: %v", ns, err)
	}
	for _, w := range warnings {
		t.Logf("warning: %s", w)
	}
	return got
}

func (e *env) fixtureObj(t *testing.T, f string) obj {
	t.Helper()
	var o obj
	must(t, json.Unmarshal(e.fixtureJSON(t, f), &o))
	md := o["metadata"].(obj)
	if md["annotations"] == nil {
		md["annotations"] = obj{}
	}
	if md["labels"] == nil {
		md["labels"] = obj{}
	}
	return o
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	must(t, err)
	return data
}

func listOf(v any) []obj {
	l, _ := v.([]any)
	var out []obj
	for _, x := range l {
		if m, ok := x.(obj); ok {
			out = append(out, m)
		}
	}
	return out
}

func countNamed(list any, name string) int {
	n := 0
	for _, m := range listOf(list) {
		if m["name"] == name {
			n++
		}
	}
	return n
}

func containerObj(t *testing.T, p pod, kind, name string) obj {
	t.Helper()
	for _, c := range listOf(p.raw["spec"].(obj)[kind]) {
		if c["name"] == name {
			return c
		}
	}
	t.Fatalf("no %s %q", kind, name)
	return nil
}

func containsAny(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// httpsGet GETs url over TLS verified against caPEM.
func httpsGet(url string, caPEM []byte) (int, string, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return 0, "", errors.New("no CA certificate")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), nil
}

// runBinary runs our binary with args and the admin kubeconfig; it returns
// stdout, stderr and the exit code.
func (a *aware) runBinary(t *testing.T, kubeconfig string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(a.w.binary, args...)
	cmd.Env = append(inheritedEnv(), "KUBECONFIG="+kubeconfig, "HOME="+a.c.home, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running %s: %v", a.w.binary, err)
	}
	return out.String(), errb.String(), code
}

// ---- /validate: the validating-webhook component ----

// renderKustomization renders an overlay over manifests/ with the given
// strategic-merge patches and components.
func (a *aware) renderKustomization(t *testing.T, patches []obj, components ...string) []obj {
	t.Helper()
	overlay, err := os.MkdirTemp(a.c.dir, "overlay-")
	must(t, err)
	base, err := filepath.Rel(overlay, filepath.Join(a.repo, "manifests"))
	must(t, err)
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + base + "\n"
	if len(patches) > 0 {
		k += "patches:\n"
		for i, p := range patches {
			name := fmt.Sprintf("patch-%d.json", i)
			must(t, os.WriteFile(filepath.Join(overlay, name), marshal(t, p), 0o600))
			k += "- path: " + name + "\n"
		}
	}
	if len(components) > 0 {
		k += "components:\n"
		for _, c := range components {
			rel, err := filepath.Rel(overlay, filepath.Join(a.repo, "manifests", "components", c))
			must(t, err)
			k += "- " + rel + "\n"
		}
	}
	must(t, os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600))
	return splitYAML(t, a.c.mustKubectl(t, nil, "kustomize", "--load-restrictor", "LoadRestrictionsNone", overlay))
}

// registerValidating applies the ValidatingWebhookConfiguration of
// manifests/components/validating-webhook, switched to w's /validate url
// with the suite's CA and otherwise as shipped, and waits until the API
// server calls it. It is deleted again (and its absence awaited) when t ends.
func (a *aware) registerValidating(t *testing.T, w *webhook, probe []byte) {
	t.Helper()
	url := strings.TrimSuffix(w.url, "/mutate") + "/validate"
	patch := obj{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
		"metadata": obj{"name": vwcName},
		"webhooks": []any{obj{"name": validateHook, "clientConfig": obj{
			"service": nil, "url": url, "caBundle": b64(w.caPEM)}}},
	}
	rendered := findObject(t, a.renderKustomization(t, []obj{patch}, "validating-webhook"), "ValidatingWebhookConfiguration", vwcName)
	shipped := findObject(t, a.renderKustomization(t, nil, "validating-webhook"), "ValidatingWebhookConfiguration", vwcName)
	hooks := listOf(rendered["webhooks"])
	if len(hooks) != 1 {
		t.Fatalf("want one webhook in the shipped %s, got %d", vwcName, len(hooks))
	}
	cc := hooks[0]["clientConfig"].(obj)
	if cc["url"] != url || cc["service"] != nil || cc["caBundle"] == nil {
		t.Fatalf("overlay did not switch clientConfig to the url: %v", cc)
	}
	if svc := listOf(shipped["webhooks"])[0]["clientConfig"].(obj)["service"].(obj); svc["path"] != "/validate" {
		t.Errorf("shipped service path %v, want /validate (the endpoint on the same port)", svc["path"])
	}
	x, y := deepCopy(rendered), deepCopy(shipped)
	for _, o := range []obj{x, y} {
		for _, h := range listOf(o["webhooks"]) {
			delete(h, "clientConfig")
		}
	}
	if d := diff(y, x); d != "" {
		t.Fatalf("the overlay changed more than clientConfig:\n%s", d)
	}
	a.c.mustKubectl(t, marshal(t, rendered), "apply", "-f", "-")
	refused := func() bool {
		_, _, err := a.dryRunCreate(t, nsHarbor, probe)
		return err != nil && strings.Contains(err.Error(), validateHook)
	}
	waitFor(t, 60*time.Second, "the validating webhook to be called", refused)
	t.Cleanup(func() {
		a.c.mustKubectl(t, nil, "delete", "validatingwebhookconfiguration", vwcName, "--wait=true")
		waitFor(t, 60*time.Second, "the validating webhook to be gone", func() bool { return !refused() })
	})
}

func (a *aware) specValidating(t *testing.T) {
	a.use(t, a.facts)
	const password = "e2e-static-password-do-not-leak"
	optedOut := func(literal bool) []byte {
		p := a.fixtureObj(t, coreFixture)
		p["metadata"].(obj)["annotations"].(obj)[optOutAnnotation] = "disabled"
		if literal {
			c := listOf(p["spec"].(obj)["containers"])[0]
			c["env"] = append(c["env"].([]any), obj{"name": "POSTGRESQL_PASSWORD", "value": password})
		}
		return marshal(t, p)
	}
	a.registerValidating(t, a.facts, optedOut(true))

	t.Run("opted-out Harbor pod with a literal POSTGRESQL_PASSWORD: denied by "+validateHook, func(t *testing.T) {
		_, _, err := a.dryRunCreate(t, nsHarbor, optedOut(true))
		if err == nil {
			t.Fatal("admitted")
		}
		t.Logf("API server: %v", err)
		for _, want := range []string{
			`admission webhook "` + validateHook + `" denied the request`,
			"container core gets POSTGRESQL_PASSWORD from a literal value",
			"opts out with annotation " + optOutAnnotation + ": disabled",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain %q", want)
			}
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("the denial shows the password")
		}
	})

	t.Run("opted-out fixture that may read POSTGRESQL_PASSWORD through envFrom: denied", func(t *testing.T) {
		_, _, err := a.dryRunCreate(t, nsHarbor, optedOut(false))
		if err == nil || !strings.Contains(err.Error(), "container core may get POSTGRESQL_PASSWORD from Secret harbor-core") {
			t.Fatalf("want the validating webhook's envFrom denial, got %v", err)
		}
	})

	t.Run("same opted-out pod in an unlabelled namespace: admitted (only the namespace label bypasses)", func(t *testing.T) {
		if _, _, err := a.dryRunCreate(t, nsPlain, optedOut(true)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("non-Harbor pod with a static password: admitted", func(t *testing.T) {
		data := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","labels":{"app":"web","component":"core"}},
"spec":{"containers":[{"name":"web","image":"nginx:1.27","env":[{"name":"POSTGRESQL_PASSWORD","value":"x"}]}]}}`)
		if _, _, err := a.dryRunCreate(t, nsHarbor, data); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("kubectl debug: an ephemeral container that brings a static password is denied", func(t *testing.T) {
		// A real (mutated) Harbor core pod; no kubelet runs it, which kubectl debug does not need.
		res := a.c.kubectl(t, a.fixtureJSON(t, coreFixture), "create", "-n", nsHarbor, "-f", "-", "-o", "name")
		if res.Err != nil {
			t.Fatalf("create: %v\n%s", res.Err, res.Stderr)
		}
		name := strings.TrimSpace(res.Stdout)
		t.Cleanup(func() { a.c.kubectl(t, nil, "delete", "-n", nsHarbor, name, "--wait=false") })
		res = a.c.kubectl(t, nil, "debug", "-n", nsHarbor, name, "--image=busybox:1.37",
			"--container=debugger", "--env=POSTGRESQL_PASSWORD="+password)
		if res.Err == nil {
			t.Fatalf("kubectl debug with a password was admitted:\n%s", res.Stdout)
		}
		for _, want := range []string{`admission webhook "` + validateHook + `" denied the request`, "debugger"} {
			if !strings.Contains(res.Stderr, want) {
				t.Errorf("kubectl debug error does not contain %q:\n%s", want, res.Stderr)
			}
		}
		if strings.Contains(res.Stderr, password) {
			t.Errorf("the denial shows the password")
		}
		res = a.c.kubectl(t, nil, "debug", "-n", nsHarbor, name, "--image=busybox:1.37", "--container=plain")
		if res.Err != nil {
			t.Fatalf("kubectl debug without a password was denied: %v\n%s", res.Err, res.Stderr)
		}
	})

	t.Run("every fixture admitted through both webhooks", func(t *testing.T) {
		for _, f := range a.pods {
			t.Run(f, func(t *testing.T) {
				got, _, err := a.dryRunCreateFile(t, f)
				if err != nil {
					t.Fatal(err)
				}
				if a.exp.Pods[f].Mutated && got.Metadata.Annotations[statusAnnotation] != "injected" {
					t.Errorf("not mutated")
				}
			})
		}
	})

	t.Run("mutating configuration removed: an unmutated Harbor DB pod is denied by "+validateHook, func(t *testing.T) {
		a.c.mustKubectl(t, nil, "delete", "mutatingwebhookconfiguration", mwcName, "--wait=true")
		a.active = nil
		t.Cleanup(func() { a.use(t, a.facts) })
		var last error
		denied := func() bool {
			_, _, last = a.dryRunCreate(t, nsHarbor, a.fixtureJSON(t, coreFixture))
			return last != nil && strings.Contains(last.Error(), validateHook)
		}
		waitFor(t, 60*time.Second, "the unmutated pod to reach only the validating webhook", denied)
		for _, want := range []string{"container core may get POSTGRESQL_PASSWORD from Secret harbor-core", "was it bypassed"} {
			if !strings.Contains(last.Error(), want) {
				t.Errorf("denial does not contain %q: %v", want, last)
			}
		}
	})
}

// ---- audit ----

type auditReport struct {
	Namespaces []string `json:"namespaces"`
	Findings   []struct {
		Namespace string   `json:"namespace"`
		Pod       string   `json:"pod"`
		Component string   `json:"component"`
		Problems  []string `json:"problems"`
		Fix       string   `json:"fix"`
	} `json:"findings"`
}

func (a *aware) audit(t *testing.T, kubeconfig string, args ...string) (auditReport, string, int) {
	t.Helper()
	stdout, stderr, code := a.runBinary(t, kubeconfig, append([]string{"audit"}, args...)...)
	var r auditReport
	if code != 2 && (len(args) < 2 || args[len(args)-1] == "json") {
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("audit %v: output is not JSON (%v):\n%s\nstderr: %s", args, err, stdout, stderr)
		}
	}
	return r, stdout + stderr, code
}

func (a *aware) specAudit(t *testing.T) {
	a.use(t, a.facts)
	// A Harbor core pod really created while nsAudit is not opted in (the
	// webhook never sees it), then the namespace is labelled.
	created, _, err := a.create(t, withNamespace(t, a.fixtureJSON(t, coreFixture), nsAudit), "-o", "json", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	name := created.Metadata.Name
	if _, ok := created.Metadata.Annotations[statusAnnotation]; ok {
		t.Fatalf("pod in the unlabelled namespace was mutated")
	}
	a.c.mustKubectl(t, nil, "label", "namespace", nsAudit, injectLabel+"=enabled")
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			a.c.kubectl(t, nil, "delete", "pod", "-n", nsAudit, name, "--wait=true")
		}
	})
	fix := "kubectl -n " + nsAudit + " rollout restart deployment/harbor-core"

	t.Run("pod created before the label: exit 1, listed with its problems and the fix", func(t *testing.T) {
		r, out, code := a.audit(t, a.c.kubeconfig, "-o", "json")
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		if !contains(r.Namespaces, nsAudit) {
			t.Errorf("namespaces %v lack %s", r.Namespaces, nsAudit)
		}
		if len(r.Findings) != 1 {
			t.Fatalf("want exactly one finding, got %d:\n%s", len(r.Findings), out)
		}
		f := r.Findings[0]
		if f.Namespace != nsAudit || f.Pod != name || f.Component != "core" || f.Fix != fix {
			t.Errorf("finding %+v, want %s/%s core with fix %q", f, nsAudit, name, fix)
		}
		joined := strings.Join(f.Problems, "\n")
		for _, want := range []string{"not injected", "static secret", "may get POSTGRESQL_PASSWORD from Secret harbor-core"} {
			if !strings.Contains(joined, want) {
				t.Errorf("problems do not mention %q: %q", want, f.Problems)
			}
		}
	})

	t.Run("text output for one namespace names the pod and the fix", func(t *testing.T) {
		_, out, code := a.audit(t, a.c.kubeconfig, "-n", nsAudit)
		if code != 1 {
			t.Fatalf("exit %d, want 1:\n%s", code, out)
		}
		for _, want := range []string{nsAudit + "/" + name + " (core):", "fix: " + fix, "1 namespace(s) audited, 1 pod(s) need attention"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("pod created through the webhook is not listed", func(t *testing.T) {
		p, _, err := a.create(t, nil, "-o", "json", "-f", filepath.Join(a.fixtures, "pods", coreFixture))
		if err != nil {
			t.Fatal(err)
		}
		defer a.c.mustKubectl(t, nil, "delete", "pod", "-n", nsHarbor, p.Metadata.Name, "--wait=true")
		r, out, code := a.audit(t, a.c.kubeconfig, "-n", nsHarbor, "-o", "json")
		if code != 0 || len(r.Findings) != 0 {
			t.Errorf("exit %d with findings for a mutated pod:\n%s", code, out)
		}
	})

	t.Run("after the pod is deleted: exit 0", func(t *testing.T) {
		a.c.mustKubectl(t, nil, "delete", "pod", "-n", nsAudit, name, "--wait=true")
		deleted = true
		r, out, code := a.audit(t, a.c.kubeconfig, "-o", "json")
		if code != 0 || len(r.Findings) != 0 {
			t.Errorf("exit %d, want 0 and no findings:\n%s", code, out)
		}
		if !contains(r.Namespaces, nsAudit) {
			t.Errorf("namespaces %v lack %s", r.Namespaces, nsAudit)
		}
	})

	t.Run("API server unreachable: exit 2", func(t *testing.T) {
		dead := filepath.Join(a.c.dir, "dead-audit.kubeconfig")
		deadCluster := *a.c
		deadCluster.server = "https://127.0.0.1:" + itoa(freePort(t))
		deadCluster.writeKubeconfig(t, dead, "nobody", "unused")
		_, out, code := a.audit(t, dead, "-o", "json")
		if code != 2 || !strings.Contains(out, "error") {
			t.Errorf("exit %d, want 2 with an error:\n%s", code, out)
		}
	})
}

// ---- the API server's ServiceAccount admission plugin ----

// The ServiceAccount plugin has two halves: its mutating half (default
// ServiceAccount, token volume, imagePullSecrets) runs BEFORE mutating
// webhooks, so it works with the pod's own ServiceAccount; its validating
// half (the account exists, enforce-mountable-secrets) runs after them, so it
// checks the account our webhook set.
func (a *aware) specServiceAccountPlugin(t *testing.T) {
	a.use(t, a.facts)

	t.Run("enforce-mountable-secrets on harbor-sa", func(t *testing.T) {
		sa := obj{"apiVersion": "v1", "kind": "ServiceAccount",
			"metadata": obj{"name": irsaSA, "namespace": nsMountable, "annotations": obj{
				"eks.amazonaws.com/role-arn":              roleARN,
				"kubernetes.io/enforce-mountable-secrets": "true"}},
			"secrets": []any{obj{"name": "harbor-core"}, obj{"name": "harbor-jobservice"}}}
		r := a.c.kubectl(t, marshal(t, sa), "create", "-f", "-")
		if r.Err != nil {
			t.Fatalf("creating %s: %s", irsaSA, r.Stderr)
		}
		t.Logf("kubectl create serviceaccount with the annotation: %s", strings.TrimSpace(r.Stdout+" "+r.Stderr))
		if !strings.Contains(r.Stderr, "Warning: metadata.annotations[kubernetes.io/enforce-mountable-secrets]: deprecated") {
			t.Errorf("the API server did not warn that the annotation is deprecated (it does since v1.32): %q", r.Stderr)
		}

		t.Run("Secret volume not listed on harbor-sa: refused by the plugin after our switch", func(t *testing.T) {
			_, _, err := a.dryRunCreate(t, nsMountable, a.fixtureJSON(t, coreFixture))
			if err == nil {
				t.Fatal("admitted although the pod mounts Secret harbor-ingress, which harbor-sa does not list")
			}
			t.Logf("API server: %v", err)
			if !strings.Contains(err.Error(), `secret.secretName="harbor-ingress" is not allowed because service account harbor-sa does not reference that secret`) {
				t.Errorf("not the plugin's mountable-secrets refusal: %v", err)
			}
		})

		t.Run("every Secret reference listed: admitted", func(t *testing.T) {
			got := a.mustDryRun(t, nsMountable, marshal(t, withoutSecretVolume(t, a.fixtureObj(t, coreFixture), "ca-download")))
			if got.Spec.ServiceAccountName != irsaSA {
				t.Errorf("serviceAccountName = %q", got.Spec.ServiceAccountName)
			}
		})

		t.Run("envFrom secretRef not listed", func(t *testing.T) {
			p := withoutSecretVolume(t, a.fixtureObj(t, coreFixture), "ca-download")
			c := listOf(p["spec"].(obj)["containers"])[0]
			c["envFrom"] = append(c["envFrom"].([]any), obj{"secretRef": obj{"name": "not-listed"}})
			_, _, err := a.dryRunCreate(t, nsMountable, marshal(t, p))
			t.Logf("API server: %v", err)
			if err == nil || !strings.Contains(err.Error(), `not-listed`) {
				t.Errorf("want a refusal naming the unlisted envFrom Secret, got %v", err)
			}
		})
	})

	t.Run("imagePullSecrets", func(t *testing.T) {
		items := []any{
			obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default", "namespace": nsPull},
				"imagePullSecrets": []any{obj{"name": "default-pull"}}},
			obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": irsaSA, "namespace": nsPull,
				"annotations": obj{"eks.amazonaws.com/role-arn": roleARN}},
				"imagePullSecrets": []any{obj{"name": "harbor-sa-pull"}}},
		}
		a.c.mustKubectl(t, marshal(t, obj{"apiVersion": "v1", "kind": "List", "items": items}), "create", "-f", "-")
		pulls := func(p pod) []string {
			var out []string
			for _, s := range listOf(p.raw["spec"].(obj)["imagePullSecrets"]) {
				out = append(out, fmt.Sprint(s["name"]))
			}
			return out
		}

		t.Run("pod without any: gets those of its own ServiceAccount (default), not harbor-sa's", func(t *testing.T) {
			got := a.mustDryRun(t, nsPull, a.fixtureJSON(t, coreFixture))
			if got.Spec.ServiceAccountName != irsaSA {
				t.Errorf("serviceAccountName = %q", got.Spec.ServiceAccountName)
			}
			if ps := pulls(got); !equalJSON(ps, []string{"default-pull"}) {
				t.Errorf("imagePullSecrets = %v", ps)
			}
		})

		t.Run("pod with its own: kept, nothing copied", func(t *testing.T) {
			p := a.fixtureObj(t, coreFixture)
			p["spec"].(obj)["imagePullSecrets"] = []any{obj{"name": "own-pull"}}
			got := a.mustDryRun(t, nsPull, marshal(t, p))
			if ps := pulls(got); !equalJSON(ps, []string{"own-pull"}) {
				t.Errorf("imagePullSecrets = %v", ps)
			}
		})
	})

	t.Run("pull secret copied from default, harbor-sa enforcing mountable secrets: refused", a.specPullSecretsEnforced)
}

// Both halves together: the imagePullSecrets the mutating half copied from
// the pod's own ServiceAccount are then checked against the account our
// webhook set, when that account enforces mountable secrets.
func (a *aware) specPullSecretsEnforced(t *testing.T) {
	const ns = "ca-mountable-pull"
	items := []any{
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": ns, "labels": obj{injectLabel: "enabled"}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default", "namespace": ns},
			"imagePullSecrets": []any{obj{"name": "default-pull"}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": irsaSA, "namespace": ns, "annotations": obj{
			"eks.amazonaws.com/role-arn": roleARN, "kubernetes.io/enforce-mountable-secrets": "true"}},
			"secrets": []any{obj{"name": "harbor-core"}, obj{"name": "harbor-jobservice"}}},
	}
	if !strings.Contains(a.rbacHow, "itself") {
		items = append(items, a.roleBinding(ns))
	}
	a.c.mustKubectl(t, marshal(t, obj{"apiVersion": "v1", "kind": "List", "items": items}), "create", "-f", "-")
	_, _, err := a.dryRunCreate(t, ns, marshal(t, withoutSecretVolume(t, a.fixtureObj(t, coreFixture), "ca-download")))
	if err == nil {
		t.Fatal("admitted although the pull secret copied from default is not on harbor-sa")
	}
	t.Logf("API server: %v", err)
	if !strings.Contains(err.Error(), `imagePullSecrets[0].name="default-pull" is not allowed because service account harbor-sa does not reference that imagePullSecret`) {
		t.Errorf("not the plugin's imagePullSecrets refusal: %v", err)
	}
}

// withoutSecretVolume drops the volume named name and its mounts.
func withoutSecretVolume(t *testing.T, p obj, name string) obj {
	t.Helper()
	spec := p["spec"].(obj)
	spec["volumes"] = withoutNamed(spec["volumes"], name)
	for _, c := range listOf(spec["containers"]) {
		c["volumeMounts"] = withoutNamed(c["volumeMounts"], name)
	}
	return p
}

// ---- --registry-s3-irsa ----

func (a *aware) specRegistryS3(t *testing.T) {
	a.use(t, a.s3)
	for _, f := range a.pods {
		fp := parsePod(t, a.fixtureJSON(t, f))
		if fp.Metadata.Labels["component"] != "registry" && fp.Metadata.Labels["app.kubernetes.io/component"] != "registry" {
			continue
		}
		t.Run(f+": harbor-sa, web identity, blank S3 keys", func(t *testing.T) {
			exp := podExpectation{Mutated: true, ServiceAccountName: irsaSA, Containers: map[string]containerExpectation{}}
			for _, c := range listOf(fp.raw["spec"].(obj)["containers"]) {
				ce := containerExpectation{Absent: []string{"POSTGRESQL_USE_IAM_AUTH", "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH"}}
				for _, src := range listOf(c["envFrom"]) {
					if src["secretRef"] != nil {
						ce.Blank = []string{"REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY"}
					}
				}
				exp.Containers[fmt.Sprint(c["name"])] = ce
			}
			got, warnings, err := a.dryRunCreateFile(t, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warnings {
				t.Logf("warning: %s", w)
			}
			plain, _, err := a.dryRunCreate(t, nsPlain, a.fixtureJSON(t, f))
			if err != nil {
				t.Fatal(err)
			}
			checkMutated(t, got, plain, exp)
			checkWebIdentity(t, got, webIdentity{role: roleARN, audience: defaultAudience, expiration: 86400})
		})
	}
}

// ---- small helpers ----

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func b64(data []byte) string { return base64.StdEncoding.EncodeToString(data) }
