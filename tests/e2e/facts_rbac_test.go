package e2e

// How long looked-up facts are trusted, and what happens where the webhook
// may not read them (manifests/components/namespaced-facts-rbac).

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeNamespace creates a labelled namespace with a default ServiceAccount
// and the extra objects given, readable by the webhook whichever way the
// shipped RBAC grants it (bound=false: no RoleBinding even when the shipped
// RBAC needs one).
func (a *aware) makeNamespace(t *testing.T, ns string, bound bool, extra ...obj) {
	t.Helper()
	items := []any{
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": ns, "labels": obj{injectLabel: "enabled"}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default", "namespace": ns}},
	}
	for _, o := range extra {
		items = append(items, o)
	}
	if bound && !strings.Contains(a.rbacHow, "itself") {
		items = append(items, a.roleBinding(ns))
	}
	a.c.mustKubectl(t, marshal(t, obj{"apiVersion": "v1", "kind": "List", "items": items}), "create", "-f", "-")
}

func (a *aware) roleBinding(ns string) obj {
	return obj{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": obj{"name": a.rbacRole, "namespace": ns},
		"roleRef":  obj{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": a.rbacRole},
		"subjects": []any{obj{"kind": "ServiceAccount", "name": webhookSA, "namespace": nsWebhook}},
	}
}

// fixCommands runs the kubectl commands of a missing-ServiceAccount denial as
// a user would, with the placeholders filled in.
func (a *aware) fixCommands(t *testing.T, ns, role string) {
	t.Helper()
	a.c.mustKubectl(t, nil, "-n", ns, "create", "serviceaccount", irsaSA)
	a.c.mustKubectl(t, nil, "-n", ns, "annotate", "serviceaccount", irsaSA, "eks.amazonaws.com/role-arn="+role)
}

func roleOf(t *testing.T, p pod) string {
	t.Helper()
	c, _ := p.container("containers", "core")
	es := c.entries("AWS_ROLE_ARN")
	if len(es) != 1 || es[0].Value == nil {
		return ""
	}
	return *es[0].Value
}

func (a *aware) specFactsCache(t *testing.T) {
	t.Run("default TTL (30s): a retry right after the kubectl fix is admitted (denying answers are never served from the cache)", func(t *testing.T) {
		a.use(t, a.facts)
		const ns = "ca-cache-default"
		a.makeNamespace(t, ns, true)
		if _, _, err := a.dryRunCreate(t, ns, a.fixtureJSON(t, coreFixture)); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("want the missing-ServiceAccount denial, got %v", err)
		}
		a.fixCommands(t, ns, roleARN)
		got, _, err := a.dryRunCreate(t, ns, a.fixtureJSON(t, coreFixture))
		if err != nil {
			t.Fatalf("a retry right after the fix: %v; want admitted", err)
		}
		if r := roleOf(t, got); r != roleARN {
			t.Errorf("AWS_ROLE_ARN = %q, want %q", r, roleARN)
		}
	})

	t.Run("answers that deny nothing are cached: a second review of the same pod waits for no lookup", func(t *testing.T) {
		w := startServe(t, a.repo, a.c.dir, "webhook-cached", []string{"KUBECONFIG=" + a.saKubeconfig, "HOME=" + a.c.home,
			"HARBOR_IAM_WEBHOOK_LOG=harbor_iam_webhook=debug"}, "--cluster-facts", "on")
		logText := func(w *webhook) string {
			data, _ := os.ReadFile(w.proc.log)
			return string(data)
		}
		// Log lines are written in batches, at least every 100 ms: counted once those of the
		// reviews so far are surely out.
		fetches := func() int {
			time.Sleep(400 * time.Millisecond)
			return strings.Count(logText(w), "cluster facts: fetched from the API server")
		}
		// The core pod needs its target ServiceAccount (with a role), its own
		// ServiceAccount (no role: it is switched away from) and its ConfigMap.
		body := reviewBody(t, a.env, coreFixture, nsHarbor)
		client := benchClient(t, w.caPEM)
		must(t, post(client, w.url, body))
		first := fetches()
		if first < 2 {
			t.Fatalf("the first review fetched %d objects, want the ServiceAccounts and the ConfigMap", first)
		}
		for i := 0; i < 5; i++ {
			must(t, post(client, w.url, body))
		}
		if n := fetches(); n != first {
			t.Errorf("5 more reviews of the same pod fetched %d more objects, want 0 (served from the cache)\n%s", n-first, grepLines(logText(w), "cluster facts"))
		}
	})

	t.Run("facts-ttl-seconds 1: the fix is honoured once the cached answer expires; a changed role after one stale answer", func(t *testing.T) {
		a.shortTTL = startServe(t, a.repo, a.c.dir, "webhook-ttl1", []string{"KUBECONFIG=" + a.saKubeconfig, "HOME=" + a.c.home},
			"--cluster-facts", "on", "--facts-ttl-seconds", "1")
		a.use(t, a.shortTTL)
		const ns = "ca-cache-ttl"
		a.makeNamespace(t, ns, true)
		if _, _, err := a.dryRunCreate(t, ns, a.fixtureJSON(t, coreFixture)); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("want the missing-ServiceAccount denial, got %v", err)
		}
		a.fixCommands(t, ns, roleARN)
		fixed := time.Now()
		var got pod
		waitFor(t, 10*time.Second, "the fixed ServiceAccount to be honoured", func() bool {
			p, _, err := a.dryRunCreate(t, ns, a.fixtureJSON(t, coreFixture))
			got = p
			return err == nil
		})
		t.Logf("admitted %s after the fix", time.Since(fixed).Round(10*time.Millisecond))
		if r := roleOf(t, got); r != roleARN {
			t.Fatalf("AWS_ROLE_ARN = %q, want %q", r, roleARN)
		}

		const newRole = "arn:aws:iam::111122223333:role/harbor-rds-iam-v2"
		a.c.mustKubectl(t, nil, "-n", ns, "annotate", "--overwrite", "serviceaccount", irsaSA, "eks.amazonaws.com/role-arn="+newRole)
		time.Sleep(1500 * time.Millisecond)
		first := a.mustDryRun(t, ns, a.fixtureJSON(t, coreFixture))
		if r := roleOf(t, first); r != roleARN {
			t.Errorf("first admission after the TTL: AWS_ROLE_ARN = %q, want the stale %q (served at once, refreshed behind)", r, roleARN)
		}
		waitFor(t, 5*time.Second, "the new role", func() bool {
			return roleOf(t, a.mustDryRun(t, ns, a.fixtureJSON(t, coreFixture))) == newRole
		})
	})
}

// manifests/components/namespaced-facts-rbac removes the cluster-wide
// binding; the ClusterRole is then bound per opted-in namespace. A namespace
// without the RoleBinding is served without facts: admitted with a warning,
// no web identity.
func (a *aware) specNamespacedRBAC(t *testing.T) {
	const comp = "namespaced-facts-rbac"
	if _, err := os.Stat(filepath.Join(a.repo, "manifests", "components", comp, "kustomization.yaml")); err != nil {
		t.Skip("no manifests/components/" + comp)
	}
	if !strings.Contains(a.rbacHow, "itself") {
		t.Skip("the base RBAC is already bound per namespace: " + a.rbacHow)
	}
	var crb string
	for _, o := range a.renderKustomization(t, nil) {
		if o["kind"] == "ClusterRoleBinding" {
			crb = nameOf(o)
		}
	}
	rendered := a.renderKustomization(t, nil, comp)
	for _, o := range rendered {
		if o["kind"] == "ClusterRoleBinding" {
			t.Fatalf("the component leaves ClusterRoleBinding %s", nameOf(o))
		}
	}
	findObject(t, rendered, "ClusterRole", a.rbacRole)

	a.use(t, a.facts)
	sa := obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": irsaSA,
		"annotations": obj{"eks.amazonaws.com/role-arn": roleARN}}}
	const bound, unbound = "ca-rbac-bound", "ca-rbac-unbound"
	for _, ns := range []string{bound, unbound} {
		s := deepCopy(sa)
		s["metadata"].(obj)["namespace"] = ns
		a.makeNamespace(t, ns, false, s)
	}
	// The documented steps: bind in the opted-in namespace, drop the
	// cluster-wide binding that `kubectl apply -k` leaves behind.
	a.c.mustKubectl(t, nil, "-n", bound, "create", "rolebinding", a.rbacRole,
		"--clusterrole="+a.rbacRole, "--serviceaccount="+nsWebhook+":"+webhookSA)
	a.c.mustKubectl(t, nil, "delete", "clusterrolebinding", crb)
	t.Cleanup(func() {
		data, err := os.ReadFile(filepath.Join(a.repo, "manifests", "base", "rbac.yaml"))
		must(t, err)
		a.c.mustKubectl(t, data, "apply", "-f", "-")
	})
	waitFor(t, 30*time.Second, "RBAC to refuse the webhook in "+unbound, func() bool {
		r := a.c.kubectlAs(t, a.saKubeconfig, nil, "auth", "can-i", "get", "serviceaccounts", "-n", unbound)
		return strings.TrimSpace(r.Stdout) == "no"
	})

	t.Run("namespace with the RoleBinding: facts, web identity injected", func(t *testing.T) {
		got := a.mustDryRun(t, bound, a.fixtureJSON(t, coreFixture))
		checkWebIdentity(t, got, webIdentity{role: roleARN, audience: defaultAudience, expiration: 86400})
	})

	t.Run("namespace without it: admitted with a warning, no web identity, the refused lookup logged", func(t *testing.T) {
		got, warnings, err := a.dryRunCreate(t, unbound, a.fixtureJSON(t, coreFixture))
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		if !containsAny(warnings, "ServiceAccount "+unbound+"/"+irsaSA+" not checked") {
			t.Errorf("no warning that the ServiceAccount could not be checked: %q", warnings)
		}
		if got.Spec.ServiceAccountName != irsaSA {
			t.Errorf("serviceAccountName = %q", got.Spec.ServiceAccountName)
		}
		checkNoWebIdentity(t, got)
		log := grepLines(a.facts.proc.tail(1<<20), "lookup failed")
		if !strings.Contains(log, unbound) || !strings.Contains(strings.ToLower(log), "forbidden") {
			t.Errorf("no refused lookup for %s in the log:\n%s", unbound, log)
		}
	})
}
