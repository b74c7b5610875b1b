package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// The harness has no cert-manager CRDs, so cert-manager objects in an
// overlay cannot go through the API server. They are checked here instead,
// client-side: only fields of the cert-manager.io/v1 schema, the required
// ones present, and consistent with the rest of the rendered overlay.
var certManagerSpecFields = map[string][]string{
	"Certificate": {"additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses",
		"encodeUsagesInRequest", "ipAddresses", "isCA", "issuerRef", "keystores", "literalSubject",
		"nameConstraints", "otherNames", "privateKey", "renewBefore", "renewBeforePercentage",
		"revisionHistoryLimit", "secretName", "secretTemplate", "signatureAlgorithm", "subject", "uris", "usages"},
	"Issuer":        {"acme", "ca", "selfSigned", "vault", "venafi"},
	"ClusterIssuer": {"acme", "ca", "selfSigned", "vault", "venafi"},
}

func checkCertManagerObjects(t *testing.T, all, cm []obj) {
	t.Helper()
	certs := map[string]obj{}   // ns/name
	issuers := map[string]obj{} // Kind/ns/name (ClusterIssuer: no ns)
	for _, o := range cm {
		kind, _ := o["kind"].(string)
		id := fmt.Sprintf("%s %s/%s", kind, namespaceOf(o), nameOf(o))
		allowed, known := certManagerSpecFields[kind]
		if !known {
			t.Errorf("%s: kind not checked by this suite (add it to certManagerSpecFields)", id)
			continue
		}
		if o["apiVersion"] != "cert-manager.io/v1" {
			t.Errorf("%s: apiVersion %v, want cert-manager.io/v1", id, o["apiVersion"])
		}
		if nameOf(o) == "" {
			t.Errorf("%s: no metadata.name", id)
		}
		spec, _ := o["spec"].(obj)
		if spec == nil {
			t.Errorf("%s: no spec", id)
			continue
		}
		for k := range spec {
			if !contains(allowed, k) {
				t.Errorf("%s: unknown field spec.%s", id, k)
			}
		}
		switch kind {
		case "Certificate":
			if namespaceOf(o) == "" {
				t.Errorf("%s: no namespace", id)
			}
			if s, _ := spec["secretName"].(string); s == "" {
				t.Errorf("%s: spec.secretName is required", id)
			}
			ref, _ := spec["issuerRef"].(obj)
			if n, _ := ref["name"].(string); n == "" {
				t.Errorf("%s: spec.issuerRef.name is required", id)
			}
			certs[namespaceOf(o)+"/"+nameOf(o)] = o
		case "Issuer", "ClusterIssuer":
			n := 0
			for _, k := range allowed {
				if _, ok := spec[k]; ok {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: exactly one issuer type (%s) must be set, got %d", id, strings.Join(allowed, ", "), n)
			}
			if ca, ok := spec["ca"].(obj); ok {
				if s, _ := ca["secretName"].(string); s == "" {
					t.Errorf("%s: spec.ca.secretName is required", id)
				}
			}
			ns := namespaceOf(o)
			if kind == "ClusterIssuer" {
				ns = ""
			}
			issuers[kind+"/"+ns+"/"+nameOf(o)] = o
		}
	}

	// Every Certificate's issuer is in the overlay, and its names cover the
	// webhook Service the API server will call.
	var svcNames []string
	for _, o := range all {
		if o["kind"] == "Service" {
			svcNames = append(svcNames, fmt.Sprintf("%s.%s.svc", nameOf(o), namespaceOf(o)))
		}
	}
	for id, c := range certs {
		spec := c["spec"].(obj)
		ref, _ := spec["issuerRef"].(obj)
		kind, _ := ref["kind"].(string)
		if kind == "" {
			kind = "Issuer"
		}
		ns := namespaceOf(c)
		if kind == "ClusterIssuer" {
			ns = ""
		}
		if grp, _ := ref["group"].(string); grp == "" || grp == "cert-manager.io" {
			if _, ok := issuers[fmt.Sprintf("%s/%s/%v", kind, ns, ref["name"])]; !ok {
				t.Errorf("Certificate %s: issuerRef %s %v is not in the overlay", id, kind, ref["name"])
			}
		}
		if isCA, _ := spec["isCA"].(bool); isCA {
			continue
		}
		dns, _ := spec["dnsNames"].([]any)
		for _, s := range svcNames {
			found := false
			for _, d := range dns {
				if d == s {
					found = true
				}
			}
			if !found {
				t.Errorf("Certificate %s: dnsNames %v do not include the Service name %s", id, dns, s)
			}
		}
	}

	// cert-manager.io/inject-ca-from points at a Certificate of the overlay,
	// and the Deployment mounts the Secret a Certificate writes.
	secrets := map[string]bool{}
	for _, c := range certs {
		secrets[namespaceOf(c)+"/"+fmt.Sprint(c["spec"].(obj)["secretName"])] = true
	}
	injected := 0
	for _, o := range all {
		md, _ := o["metadata"].(obj)
		ann, _ := md["annotations"].(obj)
		if ref, ok := ann["cert-manager.io/inject-ca-from"].(string); ok {
			injected++
			if _, ok := certs[ref]; !ok {
				t.Errorf("%v %s: cert-manager.io/inject-ca-from %q names no Certificate of the overlay (have %v)", o["kind"], nameOf(o), ref, sortedKeys(certs))
			}
		}
		if o["kind"] == "Deployment" {
			spec, _ := o["spec"].(obj)
			tmpl, _ := spec["template"].(obj)
			pspec, _ := tmpl["spec"].(obj)
			vols, _ := pspec["volumes"].([]any)
			for _, v := range vols {
				sec, _ := v.(obj)["secret"].(obj)
				if name, ok := sec["secretName"].(string); ok && len(certs) > 0 && !secrets[namespaceOf(o)+"/"+name] {
					t.Errorf("Deployment %s mounts Secret %s, which no Certificate of the overlay writes (%v)", nameOf(o), name, sortedKeys(secrets))
				}
			}
		}
	}
	if len(certs) > 0 && injected == 0 {
		t.Errorf("the overlay has Certificates but no object with cert-manager.io/inject-ca-from")
	}
	ids := make([]string, 0, len(cm))
	for _, o := range cm {
		ids = append(ids, fmt.Sprintf("%v %s", o["kind"], nameOf(o)))
	}
	sort.Strings(ids)
	t.Logf("checked client-side (no CRDs on this API server): %s", strings.Join(ids, ", "))
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
