package e2e

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestChartValues: helm lint --strict, the messages for a missing region and
// for values the schema refuses, values.yaml documented line by line and
// covered by the chart README, and a values file that sets every value, each
// seen where it must land; the webhook binary starts with the environment
// that file gives it.
func TestChartValues(t *testing.T) {
	repo := mustEnv(t, "E2E_REPO_ROOT")
	h := newHelm(t, t.TempDir(), "")
	chart := chartDir(repo)
	everyValue := filepath.Join(repo, "tests", "e2e", "testdata", "chart-every-value.yaml")

	t.Run("helm lint --strict", func(t *testing.T) {
		for _, flags := range [][]string{{"--set", "awsRegion=" + chartRegion}, {"-f", everyValue}} {
			out := h.must(t, append([]string{"lint", "--strict", chart}, flags...)...)
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint --strict %v:\n%s", flags, out)
			}
		}
	})

	t.Run("awsRegion is required", func(t *testing.T) {
		r := h.run(t, "template", chartRelease, chart)
		want := "awsRegion is required: the AWS region of your RDS instance, e.g. --set awsRegion=eu-west-1"
		if r.Err == nil || !strings.Contains(r.Stderr, want) {
			t.Errorf("helm template without awsRegion: err %v, want the message %q:\n%s%s", r.Err, want, r.Stdout, r.Stderr)
		}
		// helm lint only warns (and passes): it renders with the chart's own values.
		if r = h.run(t, "lint", "--strict", chart); !strings.Contains(r.Stdout+r.Stderr, want) {
			t.Errorf("helm lint without awsRegion does not show the message:\n%s%s", r.Stdout, r.Stderr)
		}
	})

	t.Run("the schema refuses misspelt and mistyped values", func(t *testing.T) {
		for _, c := range schemaCases {
			args := append([]string{"template", chartRelease, chart, "--set", "awsRegion=" + chartRegion}, c.flags...)
			r := h.run(t, args...)
			if r.Err == nil {
				t.Errorf("%v: rendered, want the error %q", c.flags, c.want)
				continue
			}
			if !strings.Contains(r.Stderr, c.want) {
				t.Errorf("%v: error does not contain %q:\n%s", c.flags, c.want, r.Stderr)
			}
		}
	})

	t.Run("values.yaml is documented line by line", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
		must(t, err)
		key := regexp.MustCompile(`^\s*[A-Za-z][\w./-]*:`)
		lines := strings.Split(string(data), "\n")
		for i, l := range lines {
			if key.MatchString(l) && (i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#")) {
				t.Errorf("values.yaml:%d: %q has no comment line above it", i+1, strings.TrimSpace(l))
			}
		}
	})

	t.Run("every value is in the schema, the README table and the every-value file", func(t *testing.T) {
		schema := readJSONFile(t, filepath.Join(chart, "values.schema.json"))
		values := readYAMLFile(t, filepath.Join(chart, "values.yaml"))
		data, err := os.ReadFile(filepath.Join(chart, "README.md"))
		must(t, err)
		readme := string(data)
		if i := strings.Index(readme, "\n## Values\n"); i >= 0 {
			readme = readme[i:]
		}
		if i := strings.Index(readme, "\n## How it is tested"); i >= 0 {
			readme = readme[:i]
		}
		every := readYAMLFile(t, everyValue)
		var paths []string
		valuePaths(t, schema, values, "", &paths)
		if len(paths) < 50 {
			t.Fatalf("only %d value paths found: %v", len(paths), paths)
		}
		for _, p := range paths {
			if !strings.Contains(readme, "| `"+p+"` |") {
				t.Errorf("value %s has no row in the chart README's values table", p)
			}
			if _, ok := lookupPath(every, p); !ok {
				t.Errorf("value %s is not set in %s", p, filepath.Base(everyValue))
			}
		}
		// The other way round: every row of the table is a value.
		row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\|")
		for _, m := range row.FindAllStringSubmatch(readme, -1) {
			if _, ok := lookupPath(values, m[1]); !ok {
				t.Errorf("the chart README's table has %s, which values.yaml does not", m[1])
			}
		}
	})

	t.Run("appVersion is the webhook's version", func(t *testing.T) {
		cargo, err := os.ReadFile(filepath.Join(repo, "Cargo.toml"))
		must(t, err)
		m := regexp.MustCompile(`(?m)^version = "([^"]+)"`).FindStringSubmatch(string(cargo))
		if m == nil {
			t.Fatal("no version in Cargo.toml")
		}
		c := readYAMLFile(t, filepath.Join(chart, "Chart.yaml"))
		if c["appVersion"] != m[1] {
			t.Errorf("Chart.yaml appVersion %v, Cargo.toml version %s", c["appVersion"], m[1])
		}
	})

	t.Run("every value lands where it is documented", func(t *testing.T) {
		out := h.must(t, "template", "hiw", chart, "--namespace", "hiw-ns", "-f", everyValue)
		checkEveryValue(t, splitYAML(t, out), readYAMLFile(t, everyValue))
	})
}

type schemaCase struct {
	flags []string
	want  string
}

var schemaCases = []schemaCase{
	{[]string{"--set", "awsRegon=eu-west-1"}, "additional properties 'awsRegon' not allowed"},
	{[]string{"--set", "harbor.serviceAcount=harbor-sa"}, "additional properties 'serviceAcount' not allowed"},
	{[]string{"--set", "replicaCount=two"}, "got string, want integer"},
	{[]string{"--set", "webhook.failurePolicy=Failure"}, "value must be one of 'Fail', 'Ignore'"},
	{[]string{"--set", "server.listen=0.0.0.0"}, "does not match pattern"},
	{[]string{"--set", "server.clusterFacts=false"}, "got boolean, want null or string"},
	{[]string{"--set", "awsRegion=EU-WEST-1"}, "does not match pattern"},
	{[]string{"--set", "harbor.componentServiceAccounts.registry=sa"}, "additional properties 'registry' not allowed"},
	{[]string{"--set", "certManager.enabled=true", "--set", "tls.existingSecret=mine", "--set", "tls.caBundle=-----BEGIN CERTIFICATE-----"}, "certManager.enabled and tls.existingSecret exclude each other"},
	{[]string{"--set", "tls.existingSecret=mine"}, "tls.existingSecret needs tls.caBundle"},
}

// valuePaths lists the documented values: the keys of values.yaml, going
// into a map only where the schema describes the chart's own structure
// (properties, additionalProperties false); Kubernetes objects passed
// through (resources, affinity, ...) are one value each.
func valuePaths(t *testing.T, schema, values obj, prefix string, out *[]string) {
	t.Helper()
	props, _ := schema["properties"].(obj)
	for _, k := range sortedKeys(values) {
		s, ok := props[k].(obj)
		if !ok {
			t.Errorf("values.yaml key %s%s is not in values.schema.json", prefix, k)
			continue
		}
		if sub, _ := values[k].(obj); s["additionalProperties"] == false && len(sub) > 0 {
			valuePaths(t, s, sub, prefix+k+".", out)
			continue
		}
		*out = append(*out, prefix+k)
	}
	// additionalProperties: false everywhere the chart has its own structure.
	if schema["additionalProperties"] != false {
		t.Errorf("values.schema.json at %q: additionalProperties is not false", prefix)
	}
}

func lookupPath(o obj, path string) (any, bool) {
	var cur any = o
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(obj)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func readJSONFile(t *testing.T, path string) obj {
	t.Helper()
	return readYAMLFile(t, path) // JSON is YAML
}

// checkEveryValue: each value of chart-every-value.yaml, seen in the
// rendered objects.
func checkEveryValue(t *testing.T, objs []obj, v obj) {
	t.Helper()
	ids := byID(t, objs)
	get := func(id string) obj {
		t.Helper()
		o, ok := ids[id]
		if !ok {
			t.Fatalf("%s not rendered; have %v", id, sortedKeys(ids))
		}
		return o
	}
	eq := func(what string, got, want any) {
		t.Helper()
		if !equalJSON(got, want) {
			t.Errorf("%s = %s, want %s", what, toJSON(got), toJSON(want))
		}
	}
	val := func(path string) any {
		x, ok := lookupPath(v, path)
		if !ok {
			t.Fatalf("%s not set", path)
		}
		return x
	}

	// Names: fullnameOverride for objects, nameOverride in app.kubernetes.io/name.
	const full = "hiw-full"
	eq("fullnameOverride", val("fullnameOverride"), full)
	wantIDs := []string{
		"ServiceAccount hiw-ns/" + full, "ConfigMap hiw-ns/" + full + "-config", "Service hiw-ns/" + full,
		"Deployment hiw-ns/" + full, "PodDisruptionBudget hiw-ns/" + full, "Secret hiw-ns/" + full + "-tls",
		"ClusterRole /" + full, "ClusterRole /" + full + "-audit", "ClusterRoleBinding /" + full + "-audit",
		"RoleBinding harbor/" + full, "RoleBinding harbor-plain/" + full,
		"PriorityClass /hiw-priority", "MutatingWebhookConfiguration /" + full, "ValidatingWebhookConfiguration /" + full,
	}
	eq("rendered objects", sortedKeys(ids), sortedStrings(wantIDs))
	for id, o := range ids {
		md := o["metadata"].(obj)
		labels, _ := md["labels"].(obj)
		eq(id+" label app.kubernetes.io/name (nameOverride)", labels["app.kubernetes.io/name"], val("nameOverride"))
		eq(id+" label team (commonLabels)", labels["team"], "platform")
		ann, _ := md["annotations"].(obj)
		eq(id+" annotation owner (commonAnnotations)", ann["owner"], "platform-team")
	}

	// The ConfigMap: one environment variable per serve flag value.
	cm := get("ConfigMap hiw-ns/" + full + "-config")
	eq("ConfigMap data", cm["data"], everyValueEnv)

	d := get("Deployment hiw-ns/" + full)
	spec := d["spec"].(obj)
	eq("replicaCount", spec["replicas"], val("replicaCount"))
	tmpl := spec["template"].(obj)
	tmd := tmpl["metadata"].(obj)
	ps := tmpl["spec"].(obj)
	c := ps["containers"].([]any)[0].(obj)
	eq("image", c["image"], "registry.example.com/platform/harbor-iam-webhook:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	eq("image.pullPolicy", c["imagePullPolicy"], val("image.pullPolicy"))
	eq("imagePullSecrets", ps["imagePullSecrets"], val("imagePullSecrets"))
	eq("args (server.logFormat, auditMetric)", c["args"], []any{"serve", "--tls-cert", "/etc/harbor-iam-webhook/tls/tls.crt",
		"--tls-key", "/etc/harbor-iam-webhook/tls/tls.key", "--log-format", "text", "--audit-interval-seconds=600"})
	eq("container ports (server.listen, server.metricsListen)", c["ports"], []any{
		obj{"name": "https", "containerPort": 8443, "protocol": "TCP"}, obj{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}})
	eq("resources", c["resources"], val("resources"))
	eq("securityContext", c["securityContext"], val("securityContext"))
	eq("podSecurityContext", ps["securityContext"], val("podSecurityContext"))
	eq("affinity", ps["affinity"], val("affinity"))
	eq("topologySpreadConstraints", ps["topologySpreadConstraints"], val("topologySpreadConstraints"))
	eq("nodeSelector", ps["nodeSelector"], val("nodeSelector"))
	eq("tolerations", ps["tolerations"], val("tolerations"))
	eq("terminationGracePeriodSeconds", ps["terminationGracePeriodSeconds"], val("terminationGracePeriodSeconds"))
	eq("priorityClassName", ps["priorityClassName"], "hiw-priority")
	eq("serviceAccountName", ps["serviceAccountName"], full)
	eq("pod label tier (podLabels)", tmd["labels"].(obj)["tier"], "admission")
	eq("pod label team (commonLabels)", tmd["labels"].(obj)["team"], "platform")
	eq("pod annotation (podAnnotations)", tmd["annotations"].(obj)["example.com/scrape"], "true")
	eq("selector", spec["selector"], obj{"matchLabels": obj{"app.kubernetes.io/name": "hiw-name", "app.kubernetes.io/component": "webhook"}})
	eq("TLS volume", ps["volumes"].([]any)[0].(obj)["secret"].(obj)["secretName"], full+"-tls")

	eq("ServiceAccount annotations", get("ServiceAccount hiw-ns/" + full)["metadata"].(obj)["annotations"],
		obj{"example.com/owner": "platform", "owner": "platform-team"})
	if _, ok := ids["ClusterRoleBinding /"+full]; ok {
		t.Error("rbac.clusterWide=false still renders the ClusterRoleBinding")
	}
	for _, ns := range []string{"harbor", "harbor-plain"} {
		rb := get("RoleBinding " + ns + "/" + full)
		eq("RoleBinding "+ns+" roleRef", rb["roleRef"], obj{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": full})
		eq("RoleBinding "+ns+" subjects", rb["subjects"], []any{obj{"kind": "ServiceAccount", "name": full, "namespace": "hiw-ns"}})
	}
	pc := get("PriorityClass /hiw-priority")
	eq("priorityClass.value", pc["value"], val("priorityClass.value"))
	eq("podDisruptionBudget.minAvailable", get("PodDisruptionBudget hiw-ns/" + full)["spec"].(obj)["minAvailable"], val("podDisruptionBudget.minAvailable"))

	// The webhook configurations.
	wantSelector := obj{"matchLabels": obj{"team": "registry"}, "matchExpressions": []any{
		obj{"key": "harbor-iam-webhook/inject", "operator": "In", "values": []any{"enabled"}},
		obj{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": []any{"hiw-ns"}},
	}}
	secret := get("Secret hiw-ns/" + full + "-tls")
	caData := secret["data"].(obj)["ca.crt"]
	for _, w := range []struct{ kind, path, policy string }{
		{"MutatingWebhookConfiguration", "/mutate", "webhook.failurePolicy"},
		{"ValidatingWebhookConfiguration", "/validate", "validatingWebhook.failurePolicy"},
	} {
		hook := get(w.kind + " /" + full)["webhooks"].([]any)[0].(obj)
		eq(w.kind+" failurePolicy", hook["failurePolicy"], val(w.policy))
		eq(w.kind+" timeoutSeconds", hook["timeoutSeconds"], val("webhook.timeoutSeconds"))
		eq(w.kind+" namespaceSelector", hook["namespaceSelector"], wantSelector)
		eq(w.kind+" clientConfig (webhookURL)", hook["clientConfig"], obj{"url": "https://webhook.example.com:8443" + w.path, "caBundle": caData})
	}

	// The generated certificate: names, validity, the CA in the caBundle.
	ann := secret["metadata"].(obj)["annotations"].(obj)
	eq("Secret generated-by", ann["harbor-iam-webhook/generated-by"], "helm")
	leaf, ca := parseSecretCerts(t, secret)
	wantDNS := []string{full, full + ".hiw-ns", full + ".hiw-ns.svc", full + ".hiw-ns.svc.cluster.local", "webhook.example.com"}
	eq("certificate DNS names (tls.extraDNSNames)", leaf.DNSNames, wantDNS)
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("certificate IP addresses (tls.extraIPAddresses) = %v", leaf.IPAddresses)
	}
	if days := time.Until(leaf.NotAfter).Hours() / 24; days < 399 || days > 401 {
		t.Errorf("certificate valid for %.1f days, want tls.validityDays 400", days)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("the serving certificate is not signed by ca.crt: %v", err)
	}
	eq("Secret names annotation", ann["harbor-iam-webhook/names"], strings.Join(append(wantDNS, "127.0.0.1"), ","))
	if na, err := time.Parse(time.RFC3339, ann["harbor-iam-webhook/not-after"].(string)); err != nil || na.Sub(leaf.NotAfter).Abs() > 10*time.Minute {
		t.Errorf("not-after annotation %v (%v) is not the certificate's %v", ann["harbor-iam-webhook/not-after"], err, leaf.NotAfter)
	}

	// Every environment variable the chart writes is one the webhook reads
	// (serve --help names them), every serve flag an operator sets has a
	// value, and the binary starts with that environment and the
	// generated certificate.
	checkEnvAgainstBinary(t, cm["data"].(obj), secret)
}

// everyValueEnv is the ConfigMap chart-every-value.yaml must give.
var everyValueEnv = obj{
	"AWS_REGION":                                     "us-gov-west-1",
	"HARBOR_IAM_WEBHOOK_SERVICE_ACCOUNT":             "harbor-irsa",
	"HARBOR_IAM_WEBHOOK_COMPONENT_SERVICE_ACCOUNTS":  "core=harbor-core-irsa,exporter=harbor-exporter-irsa",
	"HARBOR_IAM_WEBHOOK_STRICT_IMAGES":               "true",
	"HARBOR_IAM_WEBHOOK_IAM_CAPABLE_IMAGES":          "registry.example.com/harbor-*,8gears.container-registry.com/8gcr/harbor-*",
	"HARBOR_IAM_WEBHOOK_HARBOR_LABELS":               "app=harbor,team=registry",
	"HARBOR_IAM_WEBHOOK_COMPONENT_LABELS":            "app.kubernetes.io/component",
	"HARBOR_IAM_WEBHOOK_IDENTITY_MODE":               "pod-identity",
	"HARBOR_IAM_WEBHOOK_ON_MISSING_ROLE":             "warn",
	"HARBOR_IAM_WEBHOOK_FORCE_SERVICE_ACCOUNT":       "true",
	"HARBOR_IAM_WEBHOOK_INJECT_WEB_IDENTITY":         "false",
	"HARBOR_IAM_WEBHOOK_STS_REGIONAL_ENDPOINTS":      "true",
	"HARBOR_IAM_WEBHOOK_TOKEN_EXPIRATION_SECONDS":    "7200",
	"HARBOR_IAM_WEBHOOK_REGISTRY_S3_IRSA":            "true",
	"HARBOR_IAM_WEBHOOK_LISTEN":                      "[::]:8443",
	"HARBOR_IAM_WEBHOOK_METRICS_LISTEN":              "[::]:9090",
	"HARBOR_IAM_WEBHOOK_LOG":                         "harbor_iam_webhook=debug,warn",
	"HARBOR_IAM_WEBHOOK_CLUSTER_FACTS":               "off",
	"HARBOR_IAM_WEBHOOK_FACTS_TTL_SECONDS":           "60",
	"HARBOR_IAM_WEBHOOK_MAX_BODY_BYTES":              "4194304",
	"HARBOR_IAM_WEBHOOK_REQUEST_TIMEOUT_SECONDS":     "12",
	"HARBOR_IAM_WEBHOOK_HANDSHAKE_TIMEOUT_SECONDS":   "4",
	"HARBOR_IAM_WEBHOOK_DRAIN_DELAY_SECONDS":         "3",
	"HARBOR_IAM_WEBHOOK_SHUTDOWN_TIMEOUT_SECONDS":    "15",
	"HARBOR_IAM_WEBHOOK_MAX_CONNECTIONS":             "512",
	"HARBOR_IAM_WEBHOOK_MAX_CONCURRENT_STREAMS":      "100",
	"HARBOR_IAM_WEBHOOK_TLS_RELOAD_INTERVAL_SECONDS": "30",
}

// Flags of `serve` the chart sets otherwise than through a value of the
// same name: the certificate paths (the mounted Secret), the development
// CA (no development certificate in a cluster), the log format and the
// audit interval (arguments, as manifests/ passes them).
var envNotFromValues = map[string]string{
	"HARBOR_IAM_WEBHOOK_TLS_CERT":               "argument --tls-cert (the mounted Secret)",
	"HARBOR_IAM_WEBHOOK_TLS_KEY":                "argument --tls-key (the mounted Secret)",
	"HARBOR_IAM_WEBHOOK_DEV_CA_OUT":             "only for the development certificate",
	"HARBOR_IAM_WEBHOOK_LOG_FORMAT":             "argument --log-format (server.logFormat)",
	"HARBOR_IAM_WEBHOOK_AUDIT_INTERVAL_SECONDS": "argument --audit-interval-seconds (auditMetric)",
}

func checkEnvAgainstBinary(t *testing.T, data obj, secret obj) {
	t.Helper()
	bin := mustEnv(t, "E2E_WEBHOOK_BIN")
	help, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, help)
	}
	read := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[env: ([A-Z0-9_]+)=`).FindAllStringSubmatch(string(help), -1) {
		read[m[1]] = true
	}
	if len(read) < 20 {
		t.Fatalf("serve --help names only %d environment variables:\n%s", len(read), help)
	}
	for k := range data {
		if !read[k] {
			t.Errorf("the chart writes %s, which `serve` does not read", k)
		}
	}
	for _, k := range sortedKeys(read) {
		if _, ok := data[k]; !ok && envNotFromValues[k] == "" {
			t.Errorf("serve reads %s, but no chart value sets it (add one, or say why in envNotFromValues)", k)
		}
	}

	// Start it: every value must parse. Only the listen addresses are moved
	// to loopback ports (the values say [::]:8443 and [::]:9090).
	dir := t.TempDir()
	for _, f := range []string{"tls.crt", "tls.key"} {
		b, err := base64.StdEncoding.DecodeString(secret["data"].(obj)[f].(string))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, f), b, 0o600))
	}
	caPEM, err := base64.StdEncoding.DecodeString(secret["data"].(obj)["ca.crt"].(string))
	must(t, err)
	var env []string
	for _, k := range sortedKeys(data) {
		env = append(env, k+"="+data[k].(string))
	}
	addr := "127.0.0.1:" + itoa(freePort(t))
	env = append(env, "HARBOR_IAM_WEBHOOK_LISTEN="+addr, "HARBOR_IAM_WEBHOOK_METRICS_LISTEN=127.0.0.1:"+itoa(freePort(t)))
	p := startProc(t, dir, "webhook-every-value", nil, env, bin, "serve",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"))
	if err := waitReady(p, "https://"+addr+"/readyz", caPEM, "", 60*time.Second); err != nil {
		t.Fatalf("the webhook did not start with the every-value environment: %v", err)
	}
	t.Logf("the webhook started with %d settings from the ConfigMap and the generated certificate", len(data))
}

// parseSecretCerts returns the serving certificate and the CA of a TLS Secret.
func parseSecretCerts(t *testing.T, secret obj) (leaf, ca *x509.Certificate) {
	t.Helper()
	parse := func(key string) *x509.Certificate {
		t.Helper()
		raw, err := base64.StdEncoding.DecodeString(secret["data"].(obj)[key].(string))
		must(t, err)
		block, _ := pem.Decode(raw)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("Secret %s: %s is not a PEM certificate", nameOf(secret), key)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		must(t, err)
		return c
	}
	return parse("tls.crt"), parse("ca.crt")
}
