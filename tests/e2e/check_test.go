package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheck installs the webhook as a user would (kubectl apply -k with the
// region set, certs/gen-certs.sh --apply), runs it as a process standing for
// the Deployment's pod, and drives `harbor-iam-webhook check` against a
// healthy install and against each way an install breaks.
//
// It has its own API server, started with --enable-aggregator-routing, so
// that the API server reaches webhooks through their Service's endpoints
// (as a cluster without kube-proxy on the control plane does) rather than a
// ClusterIP nothing routes here. No controller-manager or kubelet runs: the
// test writes the Service's EndpointSlice and Endpoints, and pod status
// through the status subresource, where those would.
func TestCheck(t *testing.T) {
	repo := mustEnv(t, "E2E_REPO_ROOT")
	dir, err := os.MkdirTemp(os.Getenv("E2E_WORK_DIR"), "harbor-iam-webhook-check-")
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("E2E_KEEP_WORKDIR") == "1" {
			t.Logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	k := &checkEnv{repo: repo, dir: dir, hostIP: hostIPv4(t)}
	k.fixtures = os.Getenv("E2E_FIXTURES_DIR")
	if k.fixtures == "" {
		k.fixtures = filepath.Join(repo, "tests", "fixtures")
	}
	start := time.Now()
	k.c = startCluster(t, dir, "--enable-aggregator-routing=true")
	k.install(t)
	k.waitHealthy(t)
	t.Logf("install ready and healthy in %s", time.Since(start).Round(time.Millisecond))

	t.Run("healthy install", k.specHealthy)
	t.Run("namespace label missing", k.specLabelMissing)
	t.Run("ServiceAccount without role", k.specNoRole)
	t.Run("ServiceAccount missing", k.specNoServiceAccount)
	t.Run("pod not injected", k.specPodNotInjected)
	t.Run("Secret still holds the password", k.specSecretPassword)
	t.Run("another webhook with sideEffects Unknown", k.specSideEffects)
	t.Run("certificate expiring", k.specExpiring)
	t.Run("wrong caBundle", k.specWrongCABundle)
	t.Run("no permission to read Secrets", k.specNoSecretAccess)
	t.Run("API server unreachable", k.specUnreachable)
	// Last: it stops the webhook.
	t.Run("webhook down", k.specWebhookDown)
}

const (
	checkWebhookNS = "harbor-iam-webhook"
	checkService   = "harbor-iam-webhook"
	checkHarborNS  = "harbor"
	testPassword   = "e2e-static-pa55word"
)

type checkEnv struct {
	c        *cluster
	repo     string
	dir      string
	fixtures string
	hostIP   string
	certs    string // certs/gen-certs.sh --out
	port     int
	hook     *proc
	pods     []string // real pods created in checkHarborNS
}

// hostIPv4 is an address of this machine that an Endpoints object may hold
// (the API server refuses loopback ones).
func hostIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	must(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address: the API server can only reach a webhook Service's endpoints at one")
	return ""
}

func (k *checkEnv) install(t *testing.T) {
	t.Helper()
	// The manifests with the region set, as manifests/README.md suggests.
	overlay := filepath.Join(k.dir, "overlay")
	must(t, os.MkdirAll(overlay, 0o700))
	base, err := filepath.Rel(overlay, filepath.Join(k.repo, "manifests"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [`+base+`]
configMapGenerator:
  - name: harbor-iam-webhook-config
    namespace: harbor-iam-webhook
    behavior: merge
    literals: [AWS_REGION=eu-west-1]
`), 0o600))
	t.Log(k.c.mustKubectl(t, nil, "apply", "-k", overlay))
	k.certs = filepath.Join(k.dir, "webhook-certs")
	k.genCerts(t, k.certs, true)

	// The webhook process stands for the Deployment's pod.
	k.port = freePort(t)
	k.startWebhook(t)
	k.setEndpoints(t, true)

	// Harbor: the opted-in namespace, its IRSA ServiceAccount, Secrets and
	// ConfigMap, and workloads made from the fixture pods.
	helm := obj{"heritage": "Helm", "release": "harbor", "app": "harbor", "chart": "harbor"}
	items := []any{
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": checkHarborNS, "labels": obj{injectLabel: "enabled"}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default", "namespace": checkHarborNS}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": irsaSA, "namespace": checkHarborNS,
			"annotations": obj{"eks.amazonaws.com/role-arn": roleARN}}},
		obj{"apiVersion": "v1", "kind": "Secret", "metadata": obj{"name": "harbor-core", "namespace": checkHarborNS, "labels": helm},
			"data": obj{"POSTGRESQL_PASSWORD": "", "secretKey": b64([]byte("not-a-db-secret"))}},
	}
	var cm obj
	must(t, json.Unmarshal(withNamespace(t, readYAMLObject(t, filepath.Join(k.fixtures, "configmaps", "harbor-helm-1.16-core-cm.yaml")), checkHarborNS), &cm))
	items = append(items, cm)
	items = append(items,
		k.workload(t, "Deployment", "harbor-core", "harbor-helm-1.16-core.yaml"),
		k.workload(t, "Deployment", "harbor-jobservice", "harbor-helm-1.16-jobservice.yaml"),
		k.workload(t, "Deployment", "harbor-portal", "harbor-helm-1.16-portal.yaml"),
		k.workload(t, "StatefulSet", "harbor-redis", "harbor-helm-1.16-redis.yaml"),
		k.workload(t, "Job", "migration-job", "harbor-helm-1.16-migrator.yaml"),
	)
	list, err := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": items})
	must(t, err)
	k.c.mustKubectl(t, list, "create", "-f", "-")
}

// genCerts runs certs/gen-certs.sh as an operator would (--apply with the
// suite's kubectl), plus an IP SAN so the test can probe the process.
func (k *checkEnv) genCerts(t *testing.T, out string, apply bool, extra ...string) {
	t.Helper()
	args := append([]string{filepath.Join(k.repo, "certs", "gen-certs.sh"), "--out", out, "--extra-san", "IP:" + k.hostIP}, extra...)
	if apply {
		args = append(args, "--apply")
	}
	cmd := exec.Command("bash", args...)
	cmd.Env = append(os.Environ(), "KUBECTL="+k.c.kubectlBin+" --kubeconfig "+k.c.kubeconfig, "HOME="+k.c.home)
	printed, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gen-certs.sh %v: %v\n%s", args[1:], err, printed)
	}
}

func (k *checkEnv) startWebhook(t *testing.T) {
	t.Helper()
	addr := net.JoinHostPort(k.hostIP, itoa(k.port))
	env := []string{"HARBOR_IAM_WEBHOOK_LOG_FORMAT=text", "KUBECONFIG=" + k.c.kubeconfig, "HOME=" + k.c.home}
	k.hook = startProc(t, k.dir, "check-webhook", nil, env, mustEnv(t, "E2E_WEBHOOK_BIN"),
		"serve", "--listen", addr,
		"--tls-cert", filepath.Join(k.certs, "tls.crt"), "--tls-key", filepath.Join(k.certs, "tls.key"),
		"--aws-region", "eu-west-1", "--cluster-facts", "on", "--metrics-listen", "off",
		"--drain-delay-seconds", "0", "--tls-reload-interval-seconds", "1")
	ca, err := os.ReadFile(filepath.Join(k.certs, "ca.crt"))
	must(t, err)
	if err := waitReady(k.hook, "https://"+addr+"/readyz", ca, "", 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// setEndpoints writes what the EndpointSlice and Endpoints controllers would
// for the webhook Service with its one pod (this process) ready or not.
func (k *checkEnv) setEndpoints(t *testing.T, ready bool) {
	t.Helper()
	port := obj{"name": "https", "port": k.port, "protocol": "TCP"}
	subset := obj{"ports": []any{port}}
	if ready {
		subset["addresses"] = []any{obj{"ip": k.hostIP}}
	} else {
		subset["notReadyAddresses"] = []any{obj{"ip": k.hostIP}}
	}
	items := []any{
		obj{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
			"metadata": obj{"name": checkService + "-e2e", "namespace": checkWebhookNS, "labels": obj{
				"kubernetes.io/service-name": checkService, "endpointslice.kubernetes.io/managed-by": "e2e.harbor-iam-webhook"}},
			"addressType": "IPv4",
			"endpoints":   []any{obj{"addresses": []any{k.hostIP}, "conditions": obj{"ready": ready, "serving": ready, "terminating": false}}},
			"ports":       []any{port}},
		obj{"apiVersion": "v1", "kind": "Endpoints", "metadata": obj{"name": checkService, "namespace": checkWebhookNS},
			"subsets": []any{subset}},
	}
	list, err := json.Marshal(obj{"apiVersion": "v1", "kind": "List", "items": items})
	must(t, err)
	k.c.mustKubectl(t, list, "apply", "-f", "-")
}

// workload turns a fixture pod into the Deployment, StatefulSet or Job that
// would have created it.
func (k *checkEnv) workload(t *testing.T, kind, name, fixture string) obj {
	t.Helper()
	p := k.fixture(t, fixture)
	md := p["metadata"].(obj)
	labels := obj{}
	for key, v := range md["labels"].(obj) {
		switch key {
		case "pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
			"apps.kubernetes.io/pod-index", "controller-uid", "job-name",
			"batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name":
			continue
		}
		labels[key] = v
	}
	spec := p["spec"].(obj)
	delete(spec, "nodeName")
	template := obj{"metadata": obj{"labels": labels, "annotations": md["annotations"]}, "spec": spec}
	ws := obj{"template": template}
	switch kind {
	case "Deployment":
		ws["selector"] = obj{"matchLabels": obj{"app": labels["app"], "component": labels["component"]}}
	case "StatefulSet":
		ws["selector"] = obj{"matchLabels": obj{"app": labels["app"], "component": labels["component"]}}
		ws["serviceName"] = name
	}
	api := map[string]string{"Deployment": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1"}[kind]
	return obj{"apiVersion": api, "kind": kind, "metadata": obj{"name": name, "namespace": checkHarborNS}, "spec": ws}
}

func (k *checkEnv) fixture(t *testing.T, f string) obj {
	t.Helper()
	var o obj
	must(t, json.Unmarshal(withNamespace(t, readYAMLObject(t, filepath.Join(k.fixtures, "pods", f)), checkHarborNS), &o))
	return o
}

// runningPod really creates the fixture pod (through the webhook, unless
// opted out) and marks it Running through the status subresource, as the
// kubelet would.
func (k *checkEnv) runningPod(t *testing.T, fixture string, optOut bool) string {
	t.Helper()
	p := k.fixture(t, fixture)
	if optOut {
		md := p["metadata"].(obj)
		ann, _ := md["annotations"].(obj)
		if ann == nil {
			ann = obj{}
		}
		ann[optOutAnnotation] = "disabled"
		md["annotations"] = ann
	}
	data, err := json.Marshal(p)
	must(t, err)
	name := strings.TrimSpace(k.c.mustKubectl(t, data, "create", "-f", "-", "-o", "jsonpath={.metadata.name}"))
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "patch", "pod", name, "--subresource=status", "--type=merge",
		"-p", `{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}`)
	k.pods = append(k.pods, name)
	return name
}

type checkReport struct {
	Checks []struct {
		Name, Status, Message, Hint string
	} `json:"checks"`
}

// check runs `harbor-iam-webhook check` with the given kubeconfig and extra
// arguments; it returns the output (stdout then stderr) and the exit code.
func (k *checkEnv) check(t *testing.T, kubeconfig string, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"check", "-n", checkHarborNS, "--kubeconfig", kubeconfig}, args...)
	cmd := exec.Command(mustEnv(t, "E2E_WEBHOOK_BIN"), full...)
	// A region or kubeconfig in the caller's environment must not matter.
	cmd.Env = append(inheritedEnv(), "HOME="+k.c.home, "KUBECONFIG=/nonexistent", "AWS_REGION=ap-south-1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running check: %v", err)
	}
	if strings.Contains(out.String()+errb.String(), testPassword) || strings.Contains(out.String(), b64([]byte(testPassword))) {
		t.Fatalf("check printed the Secret's password:\n%s%s", out.String(), errb.String())
	}
	return out.String() + errb.String(), code
}

func (k *checkEnv) report(t *testing.T) (checkReport, string, int) {
	t.Helper()
	out, code := k.check(t, k.c.kubeconfig, "-o", "json")
	var r checkReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("check -o json is not JSON (%v):\n%s", err, out)
	}
	return r, out, code
}

// waitHealthy waits until check passes: the API server picks webhook
// configurations, endpoints and namespace labels up asynchronously.
func (k *checkEnv) waitHealthy(t *testing.T) {
	t.Helper()
	k.waitOutput(t, "exit 0 and no warning", func(out string, code int) bool {
		return code == 0 && !strings.Contains(out, "⚠")
	})
}

func (k *checkEnv) waitOutput(t *testing.T, what string, ok func(string, int) bool) (string, int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, code := k.check(t, k.c.kubeconfig)
		if ok(out, code) {
			return out, code
		}
		if time.Now().After(deadline) {
			t.Fatalf("check did not reach %q within 60s; last exit %d:\n%s\nwebhook log:\n%s", what, code, out, k.hook.tail(20))
		}
		time.Sleep(time.Second)
	}
}

// wantLine asserts that out has a line starting with prefix and, if hint is
// not empty, that the line's fix (the next indented "fix:" line) is hint.
func wantLine(t *testing.T, out, prefix, hint string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		if hint == "" {
			return
		}
		for _, next := range lines[i+1:] {
			if !strings.HasPrefix(next, "    ") {
				break
			}
			if strings.TrimPrefix(next, "    fix: ") == hint {
				return
			}
		}
		t.Errorf("line %q has no fix %q:\n%s", l, hint, out)
		return
	}
	t.Errorf("no line starting with %q:\n%s", prefix, out)
}

func (k *checkEnv) specHealthy(t *testing.T) {
	// Real pods, injected by the webhook and running.
	core := k.runningPod(t, "harbor-helm-1.16-core.yaml", false)
	k.runningPod(t, "harbor-helm-1.16-jobservice.yaml", false)
	out, code := k.check(t, k.c.kubeconfig)
	t.Logf("check, healthy install (exit %d):\n%s", code, out)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if strings.Contains(out, "✘") || strings.Contains(out, "⚠") {
		t.Errorf("a healthy install has a warning or failure:\n%s", out)
	}
	for _, p := range []string{
		"✔ webhook configuration: MutatingWebhookConfiguration harbor-iam-webhook: webhook mutate.harbor-iam-webhook.io, sideEffects None, failurePolicy Fail",
		// Learned from the Deployment and its ConfigMap, not from this process's AWS_REGION.
		"✔ webhook deployment: Deployment harbor-iam-webhook/harbor-iam-webhook: region eu-west-1, identity mode irsa, ServiceAccount harbor-sa",
		"✔ webhook endpoints: Service harbor-iam-webhook/harbor-iam-webhook: 1 ready endpoint(s)",
		"✔ webhook certificate: the caBundle verifies the serving certificate for harbor-iam-webhook.harbor-iam-webhook.svc",
		"✔ certificate expiry: valid until",
		"✔ namespace harbor: labelled harbor-iam-webhook/inject=enabled and selected by mutate.harbor-iam-webhook.io",
		"✔ ServiceAccount harbor/harbor-sa: eks.amazonaws.com/role-arn: " + roleARN,
		"✔ dry run deployment/harbor-core: core: IAM env set, password blank, ServiceAccount harbor-sa",
		"✔ dry run deployment/harbor-jobservice: jobservice: IAM env set, password blank, ServiceAccount harbor-sa",
		"✔ dry run job/migration-job: migrator: IAM env set, password blank, ServiceAccount harbor-sa",
		"✔ dry run deployment/harbor-portal: admitted; portal has no database connection, left alone",
		"✔ dry run statefulset/harbor-redis: admitted; redis has no database connection, left alone",
		"✔ running pods: 2 running Harbor DB pod(s), all injected",
		"✔ database password: gone from Harbor's Secrets (harbor-core",
	} {
		wantLine(t, out, p, "")
	}
	// The webhook's warnings are shown (upstream goharbor images have no IAM code).
	if !strings.Contains(out, "    webhook warning: ") || !strings.Contains(out, "goharbor/harbor-core") {
		t.Errorf("the webhook's warnings are not shown:\n%s", out)
	}
	t.Run("json", func(t *testing.T) {
		r, out, code := k.report(t)
		if code != 0 || len(r.Checks) < 12 {
			t.Fatalf("exit %d, %d checks:\n%s", code, len(r.Checks), out)
		}
		var raw struct {
			Checks []map[string]any `json:"checks"`
		}
		must(t, json.Unmarshal([]byte(out), &raw))
		for _, c := range raw.Checks {
			if len(c) != 4 {
				t.Errorf("check %v has fields other than name, status, message, hint", c)
			}
			for _, f := range []string{"name", "status", "message", "hint"} {
				if _, ok := c[f].(string); !ok {
					t.Errorf("check %v: %s is not a string", c, f)
				}
			}
			if c["status"] != "ok" {
				t.Errorf("check %v is not ok", c)
			}
		}
	})
	_ = core
}

func (k *checkEnv) specLabelMissing(t *testing.T) {
	k.c.mustKubectl(t, nil, "label", "namespace", checkHarborNS, injectLabel+"-")
	out, code := k.waitOutput(t, "dry runs not injected", func(out string, _ int) bool {
		return strings.Contains(out, "admitted without the mutation")
	})
	t.Logf("check, namespace not labelled (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantLine(t, out, "✘ namespace harbor: not labelled harbor-iam-webhook/inject=enabled", "kubectl label namespace harbor harbor-iam-webhook/inject=enabled")
	wantLine(t, out, "✘ dry run deployment/harbor-core: core: admitted without the mutation", "")
	k.c.mustKubectl(t, nil, "label", "namespace", checkHarborNS, injectLabel+"=enabled")
	k.waitHealthy(t)
}

func (k *checkEnv) specNoRole(t *testing.T) {
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "annotate", "serviceaccount", irsaSA, "eks.amazonaws.com/role-arn-")
	out, code := k.check(t, k.c.kubeconfig)
	if code != 1 {
		t.Errorf("exit %d, want 1:\n%s", code, out)
	}
	wantLine(t, out, "✘ ServiceAccount harbor/harbor-sa: has no eks.amazonaws.com/role-arn",
		"kubectl -n harbor annotate serviceaccount harbor-sa eks.amazonaws.com/role-arn=arn:aws:iam::<account-id>:role/<role>")
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "annotate", "serviceaccount", irsaSA, "eks.amazonaws.com/role-arn="+roleARN)
	k.waitHealthy(t)
}

func (k *checkEnv) specNoServiceAccount(t *testing.T) {
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "delete", "serviceaccount", irsaSA)
	out, code := k.check(t, k.c.kubeconfig)
	t.Logf("check, IRSA ServiceAccount missing (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantLine(t, out, "✘ ServiceAccount harbor/harbor-sa: does not exist",
		"kubectl -n harbor create serviceaccount harbor-sa && kubectl -n harbor annotate serviceaccount harbor-sa eks.amazonaws.com/role-arn=arn:aws:iam::<account-id>:role/<role>")
	// The API server's ServiceAccount plugin then refuses the switched pods.
	wantLine(t, out, "✘ dry run deployment/harbor-core: refused: ", "")
	if !strings.Contains(out, `serviceaccount "harbor-sa" not found`) {
		t.Errorf("the dry run's refusal is not shown:\n%s", out)
	}
	k.c.mustKubectl(t, []byte(`{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"`+irsaSA+`","namespace":"`+checkHarborNS+`","annotations":{"eks.amazonaws.com/role-arn":"`+roleARN+`"}}}`), "create", "-f", "-")
	k.waitHealthy(t)
}

func (k *checkEnv) specPodNotInjected(t *testing.T) {
	name := k.runningPod(t, "harbor-helm-1.16-core.yaml", true)
	out, code := k.check(t, k.c.kubeconfig)
	t.Logf("check, a pod not injected (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("exit %d, want 0 (warnings only)", code)
	}
	wantLine(t, out, "⚠ pod harbor/"+name+": core: not injected", "kubectl -n harbor rollout restart deployment/harbor-core")
	wantLine(t, out, "✔ database password: kept in Harbor's Secrets for now", "")
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "delete", "pod", name, "--wait=false")
	k.waitHealthy(t)
}

func (k *checkEnv) specSecretPassword(t *testing.T) {
	patch := `{"data":{"POSTGRESQL_PASSWORD":"` + b64([]byte(testPassword)) + `"}}`
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "patch", "secret", "harbor-core", "--type=merge", "-p", patch)
	out, code := k.check(t, k.c.kubeconfig)
	t.Logf("check, password still in Harbor's Secret (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("exit %d, want 0 (warnings only)", code)
	}
	wantLine(t, out, "⚠ Secret harbor/harbor-core: still holds a database password in POSTGRESQL_PASSWORD (read by deployment/harbor-core, job/migration-job)",
		`in Harbor's Helm values set database.external.password: "" (and no database.external.existingSecret), then helm -n harbor upgrade harbor harbor/harbor -f values.yaml`)
	r, _, _ := k.report(t) // the JSON output never shows the value either (k.check asserts it)
	if len(r.Checks) == 0 {
		t.Error("no checks in the JSON report")
	}
	k.c.mustKubectl(t, nil, "-n", checkHarborNS, "patch", "secret", "harbor-core", "--type=merge", "-p", `{"data":{"POSTGRESQL_PASSWORD":""}}`)
	k.waitHealthy(t)
}

// The v1 API refuses sideEffects Unknown and Some; configurations created
// through v1beta1 (before Kubernetes 1.22) may still carry them. Such an
// object is written to etcd directly, as an older API server stored it.
func (k *checkEnv) specSideEffects(t *testing.T) {
	const name = "zz-e2e-side-effects"
	other := `{"apiVersion":"admissionregistration.k8s.io/v1","kind":"MutatingWebhookConfiguration",
"metadata":{"name":"` + name + `","uid":"6f1c1b8e-0000-4000-8000-000000000001","creationTimestamp":"2021-06-01T00:00:00Z"},
"webhooks":[{"name":"side-effects.e2e.example.com","admissionReviewVersions":["v1"],"sideEffects":"Unknown","failurePolicy":"Ignore",
"matchPolicy":"Equivalent","timeoutSeconds":5,"reinvocationPolicy":"Never",
"clientConfig":{"url":"https://127.0.0.1:1/mutate"},"objectSelector":{},
"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"` + checkHarborNS + `"}},
"rules":[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE"],"resources":["pods"],"scope":"*"}]}]}`
	k.etcdPut(t, "/registry/mutatingwebhookconfigurations/"+name, []byte(other))
	if se := k.c.mustKubectl(t, nil, "get", "mutatingwebhookconfiguration", name, "-o", "jsonpath={.webhooks[0].sideEffects}"); se != "Unknown" {
		t.Fatalf("the API server reads sideEffects %q from the stored object, want Unknown", se)
	}
	out, code := k.waitOutput(t, "dry runs refused for side effects", func(out string, _ int) bool {
		return strings.Contains(out, "does not support dry run")
	})
	t.Logf("check, another webhook with sideEffects Unknown (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("exit %d, want 0 (warnings only)", code)
	}
	wantLine(t, out, "⚠ admission webhook side-effects.e2e.example.com: MutatingWebhookConfiguration "+name+" has sideEffects Unknown",
		"ask its owner to declare sideEffects None or NoneOnDryRun (kubectl get mutatingwebhookconfiguration "+name+" -o yaml)")
	wantLine(t, out, "⚠ dry run deployment/harbor-core: not proven: admission webhook side-effects.e2e.example.com does not support dry run", "")
	k.c.mustKubectl(t, nil, "delete", "mutatingwebhookconfiguration", name)
	k.waitHealthy(t)
}

// etcdPut writes a raw object into etcd: one gRPC call KV/Put over
// cleartext HTTP/2, its PutRequest (key = 1, value = 2) encoded by hand.
func (k *checkEnv) etcdPut(t *testing.T, key string, value []byte) {
	t.Helper()
	field := func(b []byte, tag byte, v []byte) []byte {
		return append(binary.AppendUvarint(append(b, tag), uint64(len(v))), v...)
	}
	msg := field(field(nil, 0x0a, []byte(key)), 0x12, value)
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	tr := &http.Transport{Proxy: nil, Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	req, err := http.NewRequest(http.MethodPost, k.c.etcd+"/etcdserverpb.KV/Put", bytes.NewReader(append(frame, msg...)))
	must(t, err)
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := client.Do(req)
	must(t, err)
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status")
	}
	if resp.StatusCode != http.StatusOK || status != "0" {
		t.Fatalf("etcd put %s: HTTP %d, grpc-status %q %s: %q", key, resp.StatusCode, status, resp.Trailer.Get("Grpc-Message"), answer)
	}
}

func (k *checkEnv) specExpiring(t *testing.T) {
	// gen-certs.sh keeps a serving cert that is still good; remove it to get a
	// new one, from the same CA, that expires in 10 days.
	must(t, os.Remove(filepath.Join(k.certs, "tls.crt")))
	k.genCerts(t, k.certs, true, "--days", "10")
	out, code := k.check(t, k.c.kubeconfig)
	t.Logf("check, certificate expiring (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("exit %d, want 0 (warnings only)", code)
	}
	wantLine(t, out, "⚠ certificate expiry: expires on ", "certs/gen-certs.sh --apply")
	if !strings.Contains(out, "day(s) (less than 30)") {
		t.Errorf("the days left are not shown:\n%s", out)
	}
	must(t, os.Remove(filepath.Join(k.certs, "tls.crt")))
	k.genCerts(t, k.certs, true)
	k.waitHealthy(t)
}

func (k *checkEnv) specWrongCABundle(t *testing.T) {
	other := filepath.Join(k.dir, "other-ca")
	k.genCerts(t, other, false)
	ca, err := os.ReadFile(filepath.Join(other, "ca.crt"))
	must(t, err)
	patch := `[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"` + base64.StdEncoding.EncodeToString(ca) + `"}]`
	k.c.mustKubectl(t, nil, "patch", "mutatingwebhookconfiguration", mwcName, "--type=json", "-p", patch)
	out, code := k.waitOutput(t, "dry runs failing on TLS", func(out string, _ int) bool {
		return strings.Contains(out, "✘ dry run deployment/harbor-core")
	})
	t.Logf("check, wrong caBundle (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantLine(t, out, "✘ webhook certificate: the caBundle does not verify the serving certificate in the TLS Secret", "certs/gen-certs.sh --apply")
	wantLine(t, out, `✘ dry run deployment/harbor-core: refused: Internal error occurred: failed calling webhook "mutate.harbor-iam-webhook.io"`,
		"the API server does not trust the webhook's certificate: see the webhook certificate check above")
	if !strings.Contains(out, "x509: certificate signed by unknown authority") {
		t.Errorf("the API server's TLS error is not shown:\n%s", out)
	}
	k.genCerts(t, k.certs, true) // --apply puts the right caBundle back
	k.waitHealthy(t)
}

// An identity that may get and list what check reads and dry-run pods, but
// not read Secrets: the checks that need Secrets say so, the others pass.
// That the rest passes with only these verbs also shows check writes nothing.
func (k *checkEnv) specNoSecretAccess(t *testing.T) {
	rbac := `{"apiVersion":"v1","kind":"List","items":[
{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"checker","namespace":"harbor-iam-webhook"}},
{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"e2e-checker"},"rules":[
 {"apiGroups":["","apps","batch","discovery.k8s.io","admissionregistration.k8s.io"],
  "resources":["namespaces","serviceaccounts","services","endpoints","configmaps","pods","deployments","statefulsets","jobs","endpointslices","mutatingwebhookconfigurations","validatingwebhookconfigurations"],
  "verbs":["get","list"]},
 {"apiGroups":[""],"resources":["pods"],"verbs":["create"]}]},
{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"e2e-checker"},
 "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"e2e-checker"},
 "subjects":[{"kind":"ServiceAccount","name":"checker","namespace":"harbor-iam-webhook"}]}]}`
	k.c.mustKubectl(t, []byte(rbac), "apply", "-f", "-")
	token := strings.TrimSpace(k.c.mustKubectl(t, nil, "create", "token", "checker", "-n", checkWebhookNS, "--duration=1h"))
	kc := filepath.Join(k.dir, "checker.kubeconfig")
	k.c.writeKubeconfig(t, kc, "checker", token)
	count := func() string {
		return k.c.mustKubectl(t, nil, "get", "pods", "-A", "--no-headers", "-o", "name")
	}
	before := count()
	out, code := k.check(t, kc)
	t.Logf("check, without permission to read Secrets (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantLine(t, out, "✘ webhook certificate: cannot check: no permission to get secrets in namespace harbor-iam-webhook",
		"grant get on secrets in namespace harbor-iam-webhook to the identity running check (kubectl auth can-i get secrets -n harbor-iam-webhook)")
	wantLine(t, out, "✘ Secret harbor/harbor-core: cannot check: no permission to get secrets in namespace harbor", "")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "✘") && !strings.Contains(l, "no permission to get secrets") {
			t.Errorf("a check other than the Secret ones failed with get/list/create-pods only: %s", l)
		}
	}
	wantLine(t, out, "✔ dry run deployment/harbor-core: core: IAM env set", "")
	if after := count(); after != before {
		t.Errorf("pods before check:\n%s\nafter:\n%s", before, after)
	}
}

func (k *checkEnv) specUnreachable(t *testing.T) {
	dead := filepath.Join(k.dir, "dead.kubeconfig")
	deadCluster := *k.c
	deadCluster.server = "https://127.0.0.1:" + itoa(freePort(t))
	deadCluster.writeKubeconfig(t, dead, "nobody", "unused")
	out, code := k.check(t, dead)
	if code != 2 || !strings.Contains(out, "error: ") {
		t.Errorf("exit %d, want 2 with an error:\n%s", code, out)
	}
	out, code = k.check(t, filepath.Join(k.dir, "no-such.kubeconfig"))
	if code != 2 || !strings.Contains(out, "no-such.kubeconfig") {
		t.Errorf("missing kubeconfig: exit %d, want 2 naming the file:\n%s", code, out)
	}
	out, code = k.check(t, k.c.kubeconfig, "-o", "yaml")
	if code != 2 {
		t.Errorf("-o yaml: exit %d, want 2:\n%s", code, out)
	}
	out, code = k.check(t, k.c.kubeconfig, "--context", "no-such-context")
	if code != 2 || !strings.Contains(out, "no-such-context") {
		t.Errorf("unknown --context: exit %d, want 2 naming it:\n%s", code, out)
	}
	if out, code = k.check(t, k.c.kubeconfig, "--context", "e2e"); code != 0 {
		t.Errorf("--context e2e (the kubeconfig's context): exit %d, want 0:\n%s", code, out)
	}
}

func (k *checkEnv) specWebhookDown(t *testing.T) {
	k.hook.stop(t)
	k.setEndpoints(t, false)
	out, code := k.waitOutput(t, "endpoints not ready", func(out string, _ int) bool {
		return strings.Contains(out, "✘ webhook endpoints")
	})
	t.Logf("check, webhook down (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantLine(t, out, "✘ webhook endpoints: Service harbor-iam-webhook/harbor-iam-webhook has no ready endpoints",
		"kubectl -n harbor-iam-webhook rollout status deployment/harbor-iam-webhook")
	wantLine(t, out, `✘ dry run deployment/harbor-core: refused: `,
		"kubectl -n harbor-iam-webhook get pods; kubectl -n harbor-iam-webhook rollout status deployment/harbor-iam-webhook")
	if !strings.Contains(out, `failed calling webhook "mutate.harbor-iam-webhook.io"`) {
		t.Errorf("the API server's refusal is not shown:\n%s", out)
	}
}
