package e2e

// Ordering with the real amazon-eks-pod-identity-webhook (built by run.sh
// from its Go module, tools/pod-identity-webhook). The API server calls
// mutating webhook configurations in the order of their names; ours is
// "harbor-iam-webhook" (reinvocationPolicy IfNeeded, as shipped). EKS ships
// its webhook as "pod-identity-webhook" (after ours, never reinvoked); any
// configuration named to sort before ours runs first.
//
// The EKS webhook's rules (v0.6.17, pkg/handler/handler.go, pkg/cache,
// pkg/validation.go) that differ from ours (src/mutate/identity.rs):
//   - token lifetime: pod annotation > ServiceAccount annotation > flag,
//     raised to 600 s when lower, no upper cap (ours does the same);
//   - eks.amazonaws.com/skip-containers is read as one CSV record (quotes
//     understood; a malformed value skips nothing); ours splits on commas;
//   - both add the token volume and mount only when none of that name
//     exists, so whichever injects first decides the token's lifetime;
//   - ours leaves a container alone that already mounts something at the
//     token path; the EKS webhook looks for its mount by name only and adds
//     a second one there, which the API server's validation refuses;
//   - neither looks at automountServiceAccountToken.

import (
	"encoding/json"
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
	// E2E_ALLOW_SKIP_EKS_WEBHOOK=1: skip, rather than fail, this spec when
	// run.sh could not build the EKS webhook (offline development only).
	allowSkipEKSVar = "E2E_ALLOW_SKIP_EKS_WEBHOOK"
	// harbor-sa in nsEKS asks for 7200 s tokens; default there asks nothing (86400).
	eksHarborSAExpiration = 7200
)

type eksWebhook struct {
	proc  *proc
	url   string
	caPEM []byte
}

// eksOutcome is what the pod ends with in one order.
type eksOutcome struct {
	expiration int  // of the one aws-iam-token projected token
	injected   bool // container core has AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, the region and the mount
	reviews    int  // how often the API server calls our webhook for the pod (2: reinvoked after the EKS webhook changed it)
	why        string
	eks        string // what the EKS webhook's log says it did (it is called once: failurePolicy Ignore would hide a failure)
	refused    string // the pod is refused with this in the error
	ownToken   bool   // core keeps the pod's own token mount (aws-token) as the only mount at the token path
}

// What the EKS webhook logs at -v=4 for a pod (pkg/handler/handler.go).
const (
	eksMutated = "Pod was mutated."
	eksInPlace = "Pod was not mutated. Reason: Required volume mounts and env variables were already present."
	eksNoRole  = "Pod was not mutated. Reason: Service account did not have the right annotations"
)

// verdicts counts each verdict in the EKS webhook's log.
func (e *eksWebhook) verdicts() map[string]int {
	data, _ := os.ReadFile(e.proc.log)
	n := map[string]int{}
	for _, l := range strings.Split(string(data), "\n") {
		for _, v := range []string{eksMutated, eksInPlace, eksNoRole} {
			if strings.Contains(l, v) {
				n[v]++
			}
		}
	}
	return n
}

func eksVerdictTotal(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

type eksCase struct {
	name        string
	ns          string
	ours        *webhook
	annotations map[string]string // added to the core fixture pod
	ownToken    bool              // the pod mounts its own token volume aws-token at the token path in core
	sa, role    string            // the pod's ServiceAccount and AWS_ROLE_ARN in both orders
	oursFirst   eksOutcome        // EKS configuration named pod-identity-webhook
	eksFirst    eksOutcome        // EKS configuration named 0-pod-identity-webhook
}

func (a *aware) specEKSWebhookOrdering(t *testing.T) {
	bin := os.Getenv("E2E_POD_IDENTITY_WEBHOOK")
	if bin == "" {
		reason := os.Getenv("E2E_POD_IDENTITY_WEBHOOK_UNAVAILABLE")
		if reason == "" {
			reason = "E2E_POD_IDENTITY_WEBHOOK is not set (run the suite through tests/e2e/run.sh)"
		}
		if os.Getenv(allowSkipEKSVar) == "1" {
			t.Skipf("%s=1: skipped, the real amazon-eks-pod-identity-webhook is not available: %s", allowSkipEKSVar, reason)
		}
		t.Fatalf("the real amazon-eks-pod-identity-webhook is not available: %s\n(for offline development only, %s=1 skips this spec)", reason, allowSkipEKSVar)
	}
	a.use(t, a.facts)
	items := []any{
		obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": nsEKS, "labels": obj{injectLabel: "enabled"}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": "default", "namespace": nsEKS,
			"annotations": obj{"eks.amazonaws.com/role-arn": defaultRoleARN}}},
		obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": obj{"name": irsaSA, "namespace": nsEKS,
			"annotations": obj{"eks.amazonaws.com/role-arn": roleARN, "eks.amazonaws.com/token-expiration": itoa(eksHarborSAExpiration)}}},
	}
	// The same ConfigMaps as in harbor, so that our DB changes are the fixture's withFacts expectation in both.
	cms, _ := filepath.Glob(filepath.Join(a.fixtures, "configmaps", "*.yaml"))
	for _, f := range cms {
		items = append(items, eksNamespacedObj(t, readYAMLObject(t, f), nsEKS))
	}
	if !strings.Contains(a.rbacHow, "itself") {
		items = append(items, a.roleBinding(nsEKS))
	}
	a.c.mustKubectl(t, marshal(t, obj{"apiVersion": "v1", "kind": "List", "items": items}), "create", "-f", "-")
	eks := a.startEKSWebhook(t, bin)
	// The only way our webhook replaces an account that has a role of its own.
	force := startServe(t, a.repo, a.c.dir, "webhook-force-sa", []string{"KUBECONFIG=" + a.saKubeconfig, "HOME=" + a.c.home},
		"--cluster-facts", "on", "--force-service-account")
	dbChanges := a.withFacts(t, coreFixture)

	ann := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const (
		expiry = "eks.amazonaws.com/token-expiration"
		skip   = "eks.amazonaws.com/skip-containers"
	)
	// o builds an outcome: the token lifetime, whether core is injected, how
	// often ours is called, what the EKS webhook logs, and why.
	o := func(exp int, injected bool, reviews int, eks, why string) eksOutcome {
		return eksOutcome{expiration: exp, injected: injected, reviews: reviews, eks: eks, why: why}
	}
	refused := func(reviews int, eks, why string) eksOutcome {
		return eksOutcome{reviews: reviews, eks: eks, refused: "must be unique", why: why}
	}
	cases := []eksCase{
		{"harbor, default has no role", nsHarbor, a.facts, nil, false, irsaSA, roleARN,
			o(86400, true, 1, eksInPlace, "ours injects; the EKS webhook then finds everything in place"),
			o(86400, true, 1, eksNoRole, "the EKS webhook does nothing (default has no role); ours injects")},
		{"ca-eks, default has a role, kept by ours", nsEKS, a.facts, nil, false, "default", defaultRoleARN,
			o(86400, true, 1, eksInPlace, "ours injects for default; the EKS webhook finds everything in place"),
			o(86400, true, 1, eksMutated, "the EKS webhook injects for default; ours finds everything in place")},
		{"ca-eks, --force-service-account", nsEKS, force, nil, false, irsaSA, roleARN,
			o(eksHarborSAExpiration, true, 1, eksInPlace, "ours switches to harbor-sa and injects with its 7200 s; the EKS webhook sees harbor-sa and finds everything in place"),
			o(86400, true, 1, eksMutated, "the EKS webhook injects default's role and token (86400 s); ours switches to harbor-sa and re-points AWS_ROLE_ARN, but keeps that token volume: harbor-sa's 7200 s is lost")},
		// Token lifetime: both raise it to 600 when lower and keep it otherwise (no upper cap).
		{"harbor, token-expiration 300", nsHarbor, a.facts, ann(expiry, "300"), false, irsaSA, roleARN,
			o(600, true, 1, eksInPlace, "ours: 300 raised to 600; the EKS webhook keeps the volume it finds"),
			o(600, true, 1, eksNoRole, "the EKS webhook does nothing (default has no role); ours: 600")},
		{"ca-eks, token-expiration 300", nsEKS, a.facts, ann(expiry, "300"), false, "default", defaultRoleARN,
			o(600, true, 1, eksInPlace, "ours: 300 raised to 600; the EKS webhook keeps the volume it finds"),
			o(600, true, 1, eksMutated, "the EKS webhook: 300 raised to 600; ours keeps the volume it finds")},
		{"ca-eks, token-expiration 172800", nsEKS, a.facts, ann(expiry, "172800"), false, "default", defaultRoleARN,
			o(172800, true, 1, eksInPlace, "ours: no upper cap; the EKS webhook keeps the volume it finds"),
			o(172800, true, 1, eksMutated, "the EKS webhook: no upper cap; ours keeps the volume it finds")},
		// skip-containers: the same for a plain name; parsed differently as CSV.
		{"ca-eks, skip-containers core", nsEKS, a.facts, ann(skip, "core"), false, "default", defaultRoleARN,
			o(86400, false, 1, eksInPlace, "both skip core (ours still adds the volume)"),
			o(86400, false, 1, eksMutated, "both skip core (the EKS webhook still adds the volume)")},
		{`ca-eks, skip-containers "core" (quoted CSV)`, nsEKS, a.facts, ann(skip, `"core"`), false, "default", defaultRoleARN,
			o(86400, true, 1, eksInPlace, `ours reads the name "core" with its quotes and injects core; the EKS webhook finds it done`),
			o(86400, true, 1, eksMutated, "the EKS webhook reads core, skips it and adds only the volume; ours injects core")},
		{`harbor, skip-containers core," (malformed CSV)`, nsHarbor, a.facts, ann(skip, `core,"`), false, irsaSA, roleARN,
			o(86400, true, 2, eksMutated, "ours skips core; the EKS webhook cannot parse the value, skips nothing and injects core; the API server reinvokes ours, which keeps it"),
			o(86400, false, 1, eksNoRole, "the EKS webhook does nothing (default has no role); ours skips core")},
		{`ca-eks, skip-containers core," (malformed CSV)`, nsEKS, a.facts, ann(skip, `core,"`), false, "default", defaultRoleARN,
			o(86400, true, 2, eksMutated, "ours skips core; the EKS webhook injects it; ours, reinvoked, keeps it"),
			o(86400, true, 1, eksMutated, "the EKS webhook injects core; ours keeps it")},
		// The pod brings its own token at the token path (under another volume name).
		{"harbor, own token mounted at the token path", nsHarbor, a.facts, nil, true, irsaSA, roleARN,
			refused(2, eksMutated, "ours adds the env but no second mount; the EKS webhook, looking by name, adds aws-iam-token at the same path; ours is reinvoked; validation refuses the pod"),
			eksOutcome{reviews: 1, eks: eksNoRole, ownToken: true, why: "the EKS webhook does nothing (default has no role); ours adds the env, no second mount: admitted"}},
		{"ca-eks, own token mounted at the token path", nsEKS, a.facts, nil, true, "default", defaultRoleARN,
			refused(2, eksMutated, "ours adds no second mount; the EKS webhook adds one; validation refuses the pod"),
			refused(1, eksMutated, "the EKS webhook adds a second mount at the token path; validation refuses the pod")},
	}
	podOf := func(c eksCase) []byte {
		p := a.fixtureObj(t, coreFixture)
		for k, v := range c.annotations {
			p["metadata"].(obj)["annotations"].(obj)[k] = v
		}
		if c.ownToken {
			spec := p["spec"].(obj)
			spec["volumes"] = append(spec["volumes"].([]any), obj{"name": "aws-token", "projected": obj{"sources": []any{
				obj{"serviceAccountToken": obj{"audience": defaultAudience, "expirationSeconds": 86400, "path": "token"}}}}})
			core := listOf(spec["containers"])[0]
			core["volumeMounts"] = append(core["volumeMounts"].([]any), obj{"name": "aws-token", "mountPath": tokenMountPath, "readOnly": true})
		}
		return marshal(t, p)
	}
	// What our webhook alone makes of each pod.
	alone := map[string]pod{}
	for _, c := range cases {
		a.use(t, c.ours)
		p, _, err := a.dryRunCreate(t, c.ns, podOf(c))
		if err != nil {
			t.Fatalf("%s, our webhook alone: %v", c.name, err)
		}
		alone[c.name] = p
	}

	for _, order := range []struct{ name, config string }{
		{"named pod-identity-webhook as on EKS (called after ours)", "pod-identity-webhook"},
		{"named 0-pod-identity-webhook (called before ours)", "0-pod-identity-webhook"},
	} {
		t.Run(order.name, func(t *testing.T) {
			a.registerEKS(t, eks, order.config)
			for _, c := range cases {
				want := c.oursFirst
				if order.config != "pod-identity-webhook" {
					want = c.eksFirst
				}
				t.Run(c.name, func(t *testing.T) {
					t.Log(want.why)
					a.use(t, c.ours)
					before, eksBefore := c.ours.reviews(), eks.verdicts()
					got, warnings, err := a.dryRunCreate(t, c.ns, podOf(c))
					for _, w := range warnings {
						if strings.Contains(w, "AWS_") {
							t.Logf("warning: %s", w)
						}
					}
					switch {
					case want.refused != "" && err == nil:
						t.Errorf("admitted, want refused with %q", want.refused)
					case want.refused != "" && !strings.Contains(err.Error(), want.refused):
						t.Errorf("refused with %v, want %q in the error", err, want.refused)
					case want.refused == "" && err != nil:
						t.Fatalf("refused: %v", err)
					case want.refused == "":
						checkEKSOutcome(t, got, c, want)
						checkContainers(t, got, "containers", dbChanges.Containers)
						// Apart from web identity, exactly what ours alone made.
						if d := diff(withoutWebIdentity(alone[c.name].raw), withoutWebIdentity(got.raw)); d != "" {
							t.Errorf("outside web identity, the pod differs from ours alone (- ours alone, + both):\n%s", d)
						}
					}
					// The API server calls ours again only when a later webhook changed the pod.
					// Both webhooks log a review before answering it, so by the time kubectl
					// returns every call is in the logs; the wait only covers a slow write.
					waitFor(t, 10*time.Second, "our webhook to log its reviews", func() bool { return c.ours.reviews()-before >= want.reviews })
					if n := c.ours.reviews() - before; n != want.reviews {
						t.Errorf("our webhook was called %d times for the pod, want %d", n, want.reviews)
					}
					// Called once (never reinvoked), with the verdict the table says.
					waitFor(t, 10*time.Second, "the EKS webhook to log its verdict", func() bool { return eksVerdictTotal(eks.verdicts()) > eksVerdictTotal(eksBefore) })
					after := eks.verdicts()
					if eksVerdictTotal(after)-eksVerdictTotal(eksBefore) != 1 || after[want.eks] != eksBefore[want.eks]+1 {
						t.Errorf("the EKS webhook's verdicts went from %v to %v, want one more %q", eksBefore, after, want.eks)
					}
				})
			}
		})
	}
}

// checkEKSOutcome: ServiceAccount, role, exactly one set of web identity (or
// none in core when it is skipped), one token volume with the lifetime of
// the webhook that won, and automountServiceAccountToken: false (as the
// fixture has it) kept without either webhook caring.
func checkEKSOutcome(t *testing.T, got pod, c eksCase, want eksOutcome) {
	t.Helper()
	if got.Spec.ServiceAccountName != c.sa {
		t.Errorf("serviceAccountName = %q, want %q", got.Spec.ServiceAccountName, c.sa)
	}
	spec := got.raw["spec"].(obj)
	if spec["automountServiceAccountToken"] != false {
		t.Errorf("automountServiceAccountToken = %v, want false (as submitted)", spec["automountServiceAccountToken"])
	}
	for _, v := range listOf(spec["volumes"]) {
		if n, _ := v["name"].(string); strings.HasPrefix(n, "kube-api-access-") {
			t.Errorf("volume %s: the API token was mounted although automountServiceAccountToken is false", n)
		}
	}
	if want.ownToken {
		core, _ := got.container("containers", "core")
		for _, n := range []string{"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
			if es := core.entries(n); len(es) != 1 {
				t.Errorf("core: %s = %v, want exactly one", n, es)
			}
		}
		if r := roleOf(t, got); r != c.role {
			t.Errorf("AWS_ROLE_ARN = %q, want %q", r, c.role)
		}
		var at []any
		for _, m := range listOf(containerObj(t, got, "containers", "core")["volumeMounts"]) {
			if m["mountPath"] == tokenMountPath {
				at = append(at, m["name"])
			}
		}
		if len(at) != 1 || at[0] != "aws-token" {
			t.Errorf("mounts at %s: %v, want only the pod's own aws-token", tokenMountPath, at)
		}
		return
	}
	if want.injected {
		checkWebIdentity(t, got, webIdentity{role: c.role, audience: defaultAudience, expiration: want.expiration})
		return
	}
	core, _ := got.container("containers", "core")
	for _, e := range core.Env {
		if strings.HasPrefix(e.Name, "AWS_") {
			t.Errorf("skipped container core: %v injected", e)
		}
	}
	if n := countNamed(containerObj(t, got, "containers", "core")["volumeMounts"], irsaVolume); n != 0 {
		t.Errorf("skipped container core: %d %s mounts", n, irsaVolume)
	}
	var vols []obj
	for _, v := range listOf(spec["volumes"]) {
		if v["name"] == irsaVolume {
			vols = append(vols, v)
		}
	}
	if len(vols) != 1 {
		t.Fatalf("%d %s volumes, want exactly one", len(vols), irsaVolume)
	}
	wantVol := obj{"name": irsaVolume, "projected": obj{"defaultMode": float64(420), "sources": []any{obj{"serviceAccountToken": obj{
		"audience": defaultAudience, "expirationSeconds": float64(want.expiration), "path": "token"}}}}}
	if d := diff(wantVol, vols[0]); d != "" {
		t.Errorf("%s volume (- want, + got):\n%s", irsaVolume, d)
	}
}

// withoutWebIdentity: the pod normalised, without the AWS_* env entries, the
// aws-iam-token mounts and volume.
func withoutWebIdentity(o obj) obj {
	c := normalised(o, false)
	spec := c["spec"].(obj)
	spec["volumes"] = withoutNamed(spec["volumes"], irsaVolume)
	for _, kind := range []string{"containers", "initContainers"} {
		for _, co := range listOf(spec[kind]) {
			co["volumeMounts"] = withoutNamed(co["volumeMounts"], irsaVolume)
			var env []any
			for _, e := range listOf(co["env"]) {
				if n, _ := e["name"].(string); !strings.HasPrefix(n, "AWS_") {
					env = append(env, e)
				}
			}
			co["env"] = env
		}
	}
	return c
}

func eksNamespacedObj(t *testing.T, objJSON []byte, ns string) obj {
	t.Helper()
	var o obj
	must(t, json.Unmarshal(withNamespace(t, objJSON, ns), &o))
	return o
}

// startEKSWebhook runs the EKS webhook out of cluster: the suite's serving
// certificate, the admin kubeconfig (its ServiceAccount informer lists and
// watches), the annotation prefix and region EKS uses, and -v=4 so that its
// log says what it did with each pod.
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
		"--aws-default-region=eu-west-1",
		"-v=4")
	// Its /healthz is on the webhook's TLS port (the metrics port serves /metrics only).
	waitFor(t, 60*time.Second, "amazon-eks-pod-identity-webhook /healthz", func() bool {
		if p.exited() {
			t.Fatalf("amazon-eks-pod-identity-webhook exited: %v\n%s", p.err, p.tail(30))
		}
		code, _, err := httpsGet("https://127.0.0.1:"+itoa(port)+"/healthz", a.w.caPEM)
		return err == nil && code == http.StatusOK
	})
	return &eksWebhook{proc: p, url: "https://127.0.0.1:" + itoa(port) + "/mutate", caPEM: a.w.caPEM}
}

// registerEKS registers the EKS webhook under configName the way EKS ships
// it (deploy/mutatingwebhook.yaml): pods CREATE, objectSelector on the skip
// label, failurePolicy Ignore, sideEffects None, admissionReviewVersions
// v1beta1, no namespaceSelector, and no reinvocationPolicy (Never). It waits
// until the API server calls it (a pod in the unlabelled namespace running
// as harbor-sa gets AWS_ROLE_ARN: only the EKS webhook can have put it
// there) and removes it again when t ends.
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
			"failurePolicy": "Ignore",
			"sideEffects":   "None",
		}}}
	a.c.mustKubectl(t, marshal(t, mwc), "apply", "-f", "-")
	var got obj
	must(t, json.Unmarshal([]byte(a.c.mustKubectl(t, nil, "get", "mutatingwebhookconfiguration", configName, "-o", "json")), &got))
	if p := listOf(got["webhooks"])[0]["reinvocationPolicy"]; p != "Never" {
		t.Fatalf("the EKS webhook's reinvocationPolicy defaulted to %v, want Never", p)
	}
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
