package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The chart against the real API server: every documented combination
// through server-side dry-run (cert-manager objects against cert-manager's
// CRDs), then a real helm install, upgrade and uninstall whose webhook the
// API server calls. Runs after the webhook-down specs: the suite's own
// webhook is stopped and its configuration is at failurePolicy Ignore, so
// only the release's configuration mutates pods here.
func (e *env) specHelmChart(t *testing.T) {
	h := newHelm(t, filepath.Join(e.c.dir, "helm-home"), e.c.kubeconfig)
	t.Run("helm install refuses what the schema refuses, installs nothing", func(t *testing.T) { e.specHelmInstallRefused(t, h) })
	t.Run("helm template of each combination passes server-side dry-run", func(t *testing.T) { e.specHelmTemplateDryRun(t, h) })
	t.Run("helm install, upgrade and uninstall with the webhook called", func(t *testing.T) { e.specHelmInstall(t, h) })
}

func (e *env) specHelmInstallRefused(t *testing.T, h *helmTool) {
	chart := chartDir(e.repo)
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--set", "awsRegion=" + chartRegion, "--set", "awsRegon=eu-west-2"}, "additional properties 'awsRegon' not allowed"},
		{[]string{"--set", "awsRegion=" + chartRegion, "--set", "replicaCount=two"}, "got string, want integer"},
		{nil, "awsRegion is required: the AWS region of your RDS instance, e.g. --set awsRegion=eu-west-1"},
	} {
		r := h.run(t, append([]string{"install", "refused", chart, "--namespace", "hiw-refused", "--create-namespace"}, c.flags...)...)
		if r.Err == nil || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("helm install %v: err %v, want %q:\n%s%s", c.flags, r.Err, c.want, r.Stdout, r.Stderr)
		}
	}
	if out := h.must(t, "list", "--all-namespaces", "-q", "--deployed", "--failed", "--pending", "--superseded"); strings.Contains(out, "refused") {
		t.Errorf("a refused install left a release: %s", out)
	}
}

// chartCombinations: the documented values combinations (chart README),
// each rendered with helm template and sent through server-side dry-run.
func (e *env) chartCombinations(t *testing.T) [][2]any {
	caFile := filepath.Join(e.w.certs, "ca.crt")
	return [][2]any{
		{"defaults", []string{}},
		{"cert-manager", []string{"--set", "certManager.enabled=true"}},
		{"cert-manager, validating webhook", []string{"--set", "certManager.enabled=true", "--set", "validatingWebhook.enabled=true"}},
		{"validating webhook, audit metric", []string{"--set", "validatingWebhook.enabled=true", "--set", "auditMetric.enabled=true"}},
		{"failurePolicy Ignore", []string{"--set", "webhook.failurePolicy=Ignore"}},
		{"namespaced facts RBAC", []string{"--set", "rbac.clusterWide=false", "--set", "rbac.factsNamespaces={" + nsHarbor + "}"}},
		{"existing PriorityClass", []string{"--set", "priorityClass.create=false", "--set", "priorityClass.name=system-cluster-critical"}},
		{"existing Secret", []string{"--set", "tls.existingSecret=my-webhook-tls", "--set-file", "tls.caBundle=" + caFile}},
		{"webhook URL", []string{"--set", "webhookURL=https://127.0.0.1:8443", "--set", "tls.extraIPAddresses={127.0.0.1}"}},
		{"every value", []string{"-f", filepath.Join(e.repo, "tests", "e2e", "testdata", "chart-every-value.yaml")}},
	}
}

func (e *env) specHelmTemplateDryRun(t *testing.T, h *helmTool) {
	crds := os.Getenv("E2E_CERT_MANAGER_CRDS")
	if crds == "" {
		t.Fatal("E2E_CERT_MANAGER_CRDS is not set: run the suite through tests/e2e/run.sh")
	}
	// cert-manager's CRDs, as its Go module ships them (deploy/crds/): large,
	// so server-side apply (no last-applied annotation).
	e.c.mustKubectl(t, nil, "apply", "--server-side", "-f", crds)
	// kubectl wait fails while a new CRD has no status yet: ask again.
	waitFor(t, 60*time.Second, "cert-manager CRDs established", func() bool {
		return e.c.kubectl(t, nil, "wait", "--for=condition=Established", "--timeout=5s",
			"crd/issuers.cert-manager.io", "crd/certificates.cert-manager.io").Err == nil
	})
	const ns = "hiw-dry"
	e.c.mustKubectl(t, nil, "create", "namespace", ns)

	// The CRD schema is really applied: an unknown field is refused.
	bad := `{"apiVersion":"cert-manager.io/v1","kind":"Certificate","metadata":{"name":"bad","namespace":"` + ns + `"},
	  "spec":{"secretName":"x","issuerRef":{"name":"y"},"dnsName":["typo.example.com"]}}`
	if r := e.c.kubectl(t, []byte(bad), "apply", "--dry-run=server", "-f", "-"); r.Err == nil || !strings.Contains(r.Stderr, "dnsName") {
		t.Fatalf("a Certificate with the unknown field spec.dnsName passed server-side dry-run: %s %s", r.Stdout, r.Stderr)
	}

	for _, c := range e.chartCombinations(t) {
		name, flags := c[0].(string), c[1].([]string)
		t.Run(name, func(t *testing.T) {
			objs := h.template(t, e.repo, "hiw-dry", ns, flags...)
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o["kind"].(string))
			}
			list, _ := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": objs})
			out := e.c.mustKubectl(t, list, "apply", "--dry-run=server", "-f", "-")
			if n := strings.Count(out, "(server dry run)"); n != len(objs) {
				t.Errorf("%d objects rendered, %d accepted:\n%s", len(objs), n, out)
			}
			if strings.Contains(name, "cert-manager") && !strings.Contains(out, "certificate.cert-manager.io/hiw-dry-harbor-iam-webhook-serving") {
				t.Errorf("the serving Certificate was not dry-run:\n%s", out)
			}
			t.Logf("%d objects (%s) accepted by server-side dry-run", len(objs), strings.Join(kinds, ", "))
		})
	}
}

// releaseWebhook runs harbor-iam-webhook the way the release's Deployment
// would: its container args and the ConfigMap's environment, with the
// mounted Secret's files at a local path instead of the mount path.
func (e *env) releaseWebhook(t *testing.T, ns, fullname, listen, name string) *webhook {
	t.Helper()
	var dep obj
	must(t, json.Unmarshal([]byte(e.c.mustKubectl(t, nil, "-n", ns, "get", "deployment", fullname, "-o", "json")), &dep))
	ps := podSpec(dep)
	c := ps["containers"].([]any)[0].(obj)
	mount := c["volumeMounts"].([]any)[0].(obj)["mountPath"].(string)
	secretName := ps["volumes"].([]any)[0].(obj)["secret"].(obj)["secretName"].(string)
	secret := e.getSecret(t, ns, secretName)
	dir, err := os.MkdirTemp(e.c.dir, name+"-tls-")
	must(t, err)
	for _, f := range []string{"tls.crt", "tls.key"} {
		must(t, os.WriteFile(filepath.Join(dir, f), secret[f], 0o600))
	}
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, strings.Replace(a.(string), mount, dir, 1))
	}
	cmName := c["envFrom"].([]any)[0].(obj)["configMapRef"].(obj)["name"].(string)
	var cm struct{ Data map[string]string }
	must(t, json.Unmarshal([]byte(e.c.mustKubectl(t, nil, "-n", ns, "get", "configmap", cmName, "-o", "json")), &cm))
	var env []string
	for _, k := range sortedKeys(cm.Data) {
		env = append(env, k+"="+cm.Data[k])
	}
	p := startProc(t, e.c.dir, name, nil, env, mustEnv(t, "E2E_WEBHOOK_BIN"), args...)
	if err := waitReady(p, "https://"+listen+"/readyz", secret["ca.crt"], "", 60*time.Second); err != nil {
		t.Fatalf("the release's webhook: %v", err)
	}
	return &webhook{proc: p, url: "https://" + listen + "/mutate", caPEM: secret["ca.crt"], certs: dir}
}

// getSecret returns a Secret's decoded data.
func (e *env) getSecret(t *testing.T, ns, name string) map[string][]byte {
	t.Helper()
	var s struct{ Data map[string]string }
	must(t, json.Unmarshal([]byte(e.c.mustKubectl(t, nil, "-n", ns, "get", "secret", name, "-o", "json")), &s))
	out := map[string][]byte{}
	for k, v := range s.Data {
		b, err := base64.StdEncoding.DecodeString(v)
		must(t, err)
		out[k] = b
	}
	return out
}

// secretDigest identifies a Secret's content without showing it.
func secretDigest(data map[string][]byte) string {
	h := sha256.New()
	for _, k := range sortedKeys(data) {
		h.Write([]byte(k + "\x00"))
		h.Write(data[k])
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// caBundles returns the caBundle (decoded) of each webhook of the two configurations named name.
func (e *env) caBundles(t *testing.T, name string) []string {
	t.Helper()
	var out []string
	for _, kind := range []string{"mutatingwebhookconfiguration", "validatingwebhookconfiguration"} {
		r := e.c.kubectl(t, nil, "get", kind, name, "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}")
		if r.Err != nil {
			continue
		}
		for _, b := range strings.Fields(r.Stdout) {
			pem, err := base64.StdEncoding.DecodeString(b)
			must(t, err)
			out = append(out, string(pem))
		}
	}
	return out
}

// admittedBy dry-runs the first mutated fixture in the labelled namespace
// until w has answered a review for it and the pod comes back injected.
func (e *env) admittedBy(t *testing.T, w *webhook) {
	t.Helper()
	f := e.mutatedFixtures()[0]
	before := w.reviews()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, _, err := e.dryRunCreateFile(t, f)
		if err == nil && p.Metadata.Annotations[statusAnnotation] == "injected" && w.reviews() > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not mutated through %s within 60s (last error: %v); its log:\n%s", f, w.proc.name, err, w.proc.tail(20))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// trustWindow: how long, after a re-issue, the webhook still serving the
// replaced certificate must keep being called.
const trustWindow = 3 * time.Second

func (e *env) specHelmInstall(t *testing.T, h *helmTool) {
	const ns, release, full = "hiw-helm", "hiw", "hiw-harbor-iam-webhook"
	chart := chartDir(e.repo)
	listen := "127.0.0.1:" + itoa(freePort(t))
	// The API server calls the loopback webhook through webhookURL (as the
	// suite's own overlay does with clientConfig.url); the certificate the
	// chart generates covers 127.0.0.1 through tls.extraIPAddresses; the
	// server values put the webhook on that port without cluster facts
	// (its process runs outside any pod) and log in text, which w.reviews reads.
	install := []string{"--namespace", ns, "--set", "awsRegion=" + chartRegion,
		"--set", "webhookURL=https://" + listen, "--set", "tls.extraIPAddresses={127.0.0.1}",
		"--set", "server.listen=" + listen, "--set", "server.metricsListen=off", "--set", "server.drainDelaySeconds=0",
		"--set", "server.clusterFacts=off", "--set", "server.logFormat=text", "--set", "validatingWebhook.enabled=true"}
	// helm install, in this test's own body: the webhook process started
	// here lives until the end of it (t.Cleanup).
	out := h.must(t, append([]string{"install", release, chart, "--create-namespace"}, install...)...)
	for _, want := range []string{
		"kubectl -n " + ns + " rollout status deployment/" + full,
		"kubectl label namespace harbor harbor-iam-webhook/inject=enabled",
		"kubectl create --dry-run=server -f core.yaml",
		"kubectl -n harbor annotate serviceaccount harbor-sa eks.amazonaws.com/role-arn=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("NOTES do not say %q:\n%s", want, out)
		}
	}
	for _, kind := range []string{"deployment", "service", "serviceaccount", "poddisruptionbudget", "configmap/" + full + "-config", "secret/" + full + "-tls"} {
		args := []string{"-n", ns, "get", kind}
		if !strings.Contains(kind, "/") {
			args = append(args, full)
		}
		e.c.mustKubectl(t, nil, args...)
	}
	for _, kind := range []string{"clusterrole", "clusterrolebinding", "priorityclass", "mutatingwebhookconfiguration", "validatingwebhookconfiguration"} {
		e.c.mustKubectl(t, nil, "get", kind, full)
	}
	ports := e.c.mustKubectl(t, nil, "-n", ns, "get", "deployment", full, "-o", `jsonpath={range .spec.template.spec.containers[0].ports[*]}{.name}={.containerPort} {end}`)
	if want := "https=" + strings.Split(listen, ":")[1] + " "; ports != want {
		t.Errorf("container ports %q, want %q (server.listen's port; no metrics port with metricsListen off)", ports, want)
	}
	w := e.releaseWebhook(t, ns, full, listen, "helm-webhook")
	e.admittedBy(t, w)
	plain, _, err := e.dryRunCreate(t, nsPlain, e.fixtureJSON(t, e.mutatedFixtures()[0]))
	if err != nil || plain.Metadata.Annotations[statusAnnotation] != "" {
		t.Errorf("unlabelled namespace: err %v, annotations %v", err, plain.Metadata.Annotations)
	}
	t.Logf("helm install: the API server calls the release's webhook (%d reviews logged)", w.reviews())

	secretName := full + "-tls"
	installed := e.getSecret(t, ns, secretName)
	t.Run("helm upgrade keeps the generated certificate", func(t *testing.T) {
		bundles := e.caBundles(t, full)
		if len(bundles) != 2 || bundles[0] != string(installed["ca.crt"]) || bundles[1] != bundles[0] {
			t.Fatalf("after install: %d caBundles, equal to the Secret's ca.crt: %v", len(bundles), len(bundles) > 0 && bundles[0] == string(installed["ca.crt"]))
		}
		h.must(t, "upgrade", release, chart, "--namespace", ns, "--reuse-values", "--set", "replicaCount=3")
		if r := e.c.mustKubectl(t, nil, "-n", ns, "get", "deployment", full, "-o", "jsonpath={.spec.replicas}"); r != "3" {
			t.Errorf("the upgrade did not apply: replicas %s", r)
		}
		if got, want := secretDigest(e.getSecret(t, ns, secretName)), secretDigest(installed); got != want {
			t.Errorf("helm upgrade changed Secret %s (content digest %s, was %s)", secretName, got, want)
		}
		if after := e.caBundles(t, full); !equalJSON(after, bundles) {
			t.Error("helm upgrade changed the caBundles")
		}
		// The webhook, still serving the installed certificate, is still trusted.
		e.admittedBy(t, w)

		// What the chart README says of helm template (and Argo CD): no lookup, a new pair.
		rendered := h.template(t, e.repo, release, ns, install[2:]...)
		for _, o := range rendered {
			if o["kind"] == "Secret" && nameOf(o) == secretName {
				ca, _ := base64.StdEncoding.DecodeString(o["data"].(obj)["ca.crt"].(string))
				if string(ca) == string(installed["ca.crt"]) {
					t.Error("helm template reproduced the installed CA; lookup should find nothing there")
				}
			}
		}
	})

	t.Run("helm upgrade re-issues the certificate when due or when its names change", func(t *testing.T) {
		upgrade := func(set string) (before, after map[string][]byte) {
			t.Helper()
			before = e.getSecret(t, ns, secretName)
			h.must(t, "upgrade", release, chart, "--namespace", ns, "--reuse-values", "--set", set)
			return before, e.getSecret(t, ns, secretName)
		}
		bundleIs := func(what string, want ...[]byte) {
			t.Helper()
			var pems []string
			for _, p := range want {
				pems = append(pems, strings.TrimSpace(string(p)))
			}
			for _, b := range e.caBundles(t, full) {
				if strings.TrimSpace(b) != strings.Join(pems, "\n") {
					t.Errorf("%s: a caBundle is not the %d expected CA certificate(s)", what, len(want))
				}
			}
		}
		reissued := func(what string, before, after map[string][]byte) {
			t.Helper()
			if string(after["ca.crt"]) == string(before["ca.crt"]) || string(after["tls.key"]) == string(before["tls.key"]) {
				t.Fatalf("%s: the certificate was not re-issued", what)
			}
			// The replaced CA stays trusted until the next upgrade, so the
			// webhook, still serving the replaced certificate, keeps being
			// called (for longer than the API server takes to switch to a
			// changed configuration, measured below).
			bundleIs(what, after["ca.crt"], before["ca.crt"])
			// (failurePolicy Fail: a call the API server cannot verify fails the create.)
			f := e.mutatedFixtures()[0]
			n := w.reviews()
			for start := time.Now(); time.Since(start) < trustWindow; time.Sleep(200 * time.Millisecond) {
				if p, _, err := e.dryRunCreateFile(t, f); err != nil || p.Metadata.Annotations[statusAnnotation] != "injected" {
					t.Fatalf("%s: %s after the upgrade, the webhook serving the replaced certificate failed: %v", what, time.Since(start).Round(time.Millisecond), err)
				}
			}
			waitFor(t, 10*time.Second, "the webhook logging those reviews", func() bool { return w.reviews() > n })
		}

		before, after := upgrade("tls.renewBeforeDays=4000")
		reissued("within tls.renewBeforeDays of expiry", before, after)

		// The next upgrade keeps the new pair and drops the replaced CA.
		before, after = upgrade("tls.renewBeforeDays=30")
		if secretDigest(after) != secretDigest(before) {
			t.Error("an upgrade with nothing due re-issued the certificate")
		}
		bundleIs("the upgrade after a re-issue", after["ca.crt"])
		// Without the replaced CA the webhook still serving the replaced
		// certificate is refused: how long the API server took to switch
		// bounds the window checked above.
		start := time.Now()
		waitFor(t, 60*time.Second, "the API server refusing the replaced certificate", func() bool {
			_, _, err := e.dryRunCreateFile(t, e.mutatedFixtures()[0])
			return err != nil && strings.Contains(err.Error(), "x509")
		})
		if took := time.Since(start); took > trustWindow {
			t.Errorf("the API server took %s to use the changed caBundle, longer than the %s the replaced CA was checked for", took.Round(time.Millisecond), trustWindow)
		} else {
			t.Logf("the API server used the changed caBundle after %s (the replaced CA was checked for %s)", took.Round(time.Millisecond), trustWindow)
		}
		// The webhook, restarted with the new Secret as its pods would be, is
		// trusted (this process lives until the end of this subtest).
		w.proc.stop(t)
		w = e.releaseWebhook(t, ns, full, listen, "helm-webhook-renewed")
		e.admittedBy(t, w)

		before, after = upgrade("tls.extraDNSNames={webhook.example.com}")
		reissued("names changed", before, after)
		if out := h.must(t, "history", release, "--namespace", ns, "-o", "json"); strings.Count(out, `"revision"`) != 5 {
			t.Errorf("helm history: want 5 revisions:\n%s", out)
		}
	})

	t.Run("helm uninstall removes the configurations: pods no longer need the release's webhook", func(t *testing.T) {
		h.must(t, "uninstall", release, "--namespace", ns, "--wait=false")
		for _, kind := range []string{"mutatingwebhookconfiguration", "validatingwebhookconfiguration", "clusterrole", "clusterrolebinding", "priorityclass"} {
			if r := e.c.kubectl(t, nil, "get", kind, full); r.Err == nil {
				t.Errorf("%s %s still exists after helm uninstall", kind, full)
			}
		}
		for _, kind := range []string{"deployment", "service", "serviceaccount", "configmap", "secret"} {
			name := full
			switch kind {
			case "configmap":
				name = full + "-config"
			case "secret":
				name = secretName
			}
			if r := e.c.kubectl(t, nil, "-n", ns, "get", kind, name); r.Err == nil {
				t.Errorf("%s %s/%s still exists after helm uninstall", kind, ns, name)
			}
		}
		// With the release's webhook gone too, pods of the labelled namespace
		// are admitted: no configuration of the release (failurePolicy Fail)
		// is left calling it. The API server drops configurations asynchronously.
		w.proc.stop(t)
		f := e.mutatedFixtures()[0]
		waitFor(t, 60*time.Second, "pods admitted without the release's webhook after helm uninstall", func() bool {
			_, _, err := e.dryRunCreateFile(t, f)
			return err == nil
		})
	})
}

// specHelmMigration: a kustomize install taken over by the chart, with the
// commands of the chart README's "Moving from a kustomize install" run as
// written. Runs before the install journey (which starts from apply -k again).
func (e *env) specHelmMigration(t *testing.T) {
	h := newHelm(t, filepath.Join(e.c.dir, "helm-home"), e.c.kubeconfig)
	base := filepath.Join(e.repo, "manifests")
	const name = "harbor-iam-webhook"
	work := t.TempDir()
	certsOut := filepath.Join(work, "certs", "out")

	e.c.mustKubectl(t, nil, "apply", "-k", base)
	cmd := exec.Command(filepath.Join(e.repo, "certs", "gen-certs.sh"), "--out", certsOut, "--apply")
	cmd.Env = append(os.Environ(), "KUBECTL="+e.c.kubectlBin+" --kubeconfig "+e.c.kubeconfig, "HOME="+e.c.home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-certs.sh --apply: %v\n%s", err, out)
	}
	adopted := []string{"serviceaccount", "service", "deployment", "poddisruptionbudget"}
	clusterScoped := []string{"clusterrole", "clusterrolebinding", "priorityclass", "mutatingwebhookconfiguration"}
	uids := map[string]string{}
	uid := func(kind string, namespaced bool) string {
		args := []string{"get", kind, name, "-o", "jsonpath={.metadata.uid}"}
		if namespaced {
			args = append([]string{"-n", nsWebhook}, args...)
		}
		return e.c.mustKubectl(t, nil, args...)
	}
	for _, k := range adopted {
		uids[k] = uid(k, true)
	}
	for _, k := range clusterScoped {
		uids[k] = uid(k, false)
	}
	bundleBefore := e.caBundles(t, name)
	secretBefore := secretDigest(e.getSecret(t, nsWebhook, name+"-tls"))
	var oldCM string
	for _, l := range strings.Fields(e.c.mustKubectl(t, nil, "-n", nsWebhook, "get", "configmap", "-o", "name")) {
		if configMapHash.MatchString(strings.TrimPrefix(l, "configmap/")) {
			oldCM = l
		}
	}
	if oldCM == "" {
		t.Fatal("no kustomize ConfigMap harbor-iam-webhook-config-<hash> after apply -k")
	}

	// Without the migration steps Helm refuses to take the objects over.
	r := h.run(t, "install", name, chartDir(e.repo), "--namespace", nsWebhook, "--set", "awsRegion="+chartRegion)
	if r.Err == nil {
		t.Fatal("helm install over a kustomize install succeeded without the migration steps")
	}
	for _, want := range []string{"exists and cannot be imported into the current release: invalid ownership metadata",
		`missing key "app.kubernetes.io/managed-by": must be set to "Helm"`, `missing key "meta.helm.sh/release-name"`} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("helm install over kustomize: error does not contain %q:\n%s", want, r.Stderr)
		}
	}

	// The README's block, as written: in a directory laid out like the
	// repository (charts/, certs/out/), with kubectl and helm on PATH.
	script := migrationBlock(t, filepath.Join(chartDir(e.repo), "README.md"))
	must(t, os.Symlink(filepath.Join(e.repo, "charts"), filepath.Join(work, "charts")))
	bin := filepath.Join(work, "bin")
	must(t, os.MkdirAll(bin, 0o755))
	must(t, os.Symlink(e.c.kubectlBin, filepath.Join(bin, "kubectl")))
	must(t, os.Symlink(h.bin, filepath.Join(bin, "helm")))
	run := exec.Command("bash", "-euo", "pipefail", "-c", script)
	run.Dir = work
	run.Env = append(h.env(), "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("the chart README's migration block failed: %v\n%s", err, out)
	}
	t.Logf("migration block:\n%s", out)

	if st := h.must(t, "status", name, "--namespace", nsWebhook); !strings.Contains(st, "STATUS: deployed") {
		t.Errorf("helm status:\n%s", st)
	}
	for _, k := range adopted {
		if got := uid(k, true); got != uids[k] {
			t.Errorf("%s %s was recreated (uid %s, was %s), not adopted", k, name, got, uids[k])
		}
	}
	for _, k := range clusterScoped {
		if got := uid(k, false); got != uids[k] {
			t.Errorf("%s %s was recreated (uid %s, was %s), not adopted", k, name, got, uids[k])
		}
	}
	if after := e.caBundles(t, name); !equalJSON(after, bundleBefore) {
		t.Error("the migration changed the caBundle (the gen-certs.sh CA should stay)")
	}
	if got := secretDigest(e.getSecret(t, nsWebhook, name+"-tls")); got != secretBefore {
		t.Error("the migration changed the gen-certs.sh Secret")
	}
	if r := e.c.kubectl(t, nil, "-n", nsWebhook, "get", oldCM); r.Err == nil {
		t.Errorf("%s is still there", oldCM)
	}
	ref := e.c.mustKubectl(t, nil, "-n", nsWebhook, "get", "deployment", name, "-o", "jsonpath={.spec.template.spec.containers[0].envFrom[0].configMapRef.name}")
	if ref != name+"-config" {
		t.Errorf("the Deployment reads ConfigMap %q, want %s-config", ref, name)
	}
	if region := e.c.mustKubectl(t, nil, "-n", nsWebhook, "get", "configmap", name+"-config", "-o", "jsonpath={.data.AWS_REGION}"); region != chartRegion {
		t.Errorf("AWS_REGION in the chart's ConfigMap = %q", region)
	}
	manifest := splitYAML(t, h.must(t, "get", "manifest", name, "--namespace", nsWebhook))
	for _, o := range manifest {
		args := []string{"get", strings.ToLower(o["kind"].(string)), nameOf(o), "-o", "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}"}
		if ns := namespaceOf(o); ns != "" {
			args = append([]string{"-n", ns}, args...)
		}
		if got := e.c.mustKubectl(t, nil, args...); got != name {
			t.Errorf("%v %s: release-name annotation %q", o["kind"], nameOf(o), got)
		}
	}

	// Leave the cluster as the install journey expects it: nothing installed.
	h.must(t, "uninstall", name, "--namespace", nsWebhook, "--wait=false")
	if r := e.c.kubectl(t, nil, "get", "mutatingwebhookconfiguration", name); r.Err == nil {
		t.Error("helm uninstall left the MutatingWebhookConfiguration")
	}
	if r := e.c.kubectl(t, nil, "-n", nsWebhook, "get", "secret", name+"-tls"); r.Err != nil {
		t.Error("helm uninstall deleted the Secret it never owned (tls.existingSecret)")
	}
}

// migrationBlock returns the shell block between the migration markers of
// the chart README.
func migrationBlock(t *testing.T, readme string) string {
	t.Helper()
	data, err := os.ReadFile(readme)
	must(t, err)
	s := string(data)
	i := strings.Index(s, "<!-- migration: begin")
	j := strings.Index(s, "<!-- migration: end -->")
	if i < 0 || j < i {
		t.Fatalf("%s has no migration markers", readme)
	}
	block := s[i:j]
	a := strings.Index(block, "```sh\n")
	b := strings.LastIndex(block, "```")
	if a < 0 || b <= a {
		t.Fatalf("no ```sh block between the migration markers of %s", readme)
	}
	return block[a+len("```sh\n") : b]
}
