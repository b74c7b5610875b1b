package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster is one etcd + kube-apiserver pair on loopback, reachable through
// the kubectl binary built by run.sh.
type cluster struct {
	dir        string
	kubectlBin string
	kubeconfig string
	home       string // HOME for kubectl, so it never touches the user's ~/.kube
	server     string
	caPEM      []byte
	token      string
	etcd       string // etcd's client URL
}

const adminToken = "e2e-admin-token"

// startCluster starts etcd and kube-apiserver with the default admission
// plugins (and the extra kube-apiserver flags given) and waits for /readyz.
// Everything is stopped by t.Cleanup.
func startCluster(t *testing.T, dir string, extra ...string) *cluster {
	t.Helper()
	etcdURL := startEtcd(t, dir)

	pki := filepath.Join(dir, "apiserver-pki")
	must(t, os.MkdirAll(pki, 0o700))
	ca, caKey := newCA(t, "e2e-apiserver-ca")
	writePEM(t, filepath.Join(pki, "ca.crt"), "CERTIFICATE", ca.Raw)
	leafDER, leafKey := newLeaf(t, ca, caKey, "kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)})
	writePEM(t, filepath.Join(pki, "serving.crt"), "CERTIFICATE", leafDER)
	writeKey(t, filepath.Join(pki, "serving.key"), leafKey)
	saKey := newKey(t)
	writeKey(t, filepath.Join(pki, "sa.key"), saKey)
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	must(t, err)
	writePEM(t, filepath.Join(pki, "sa.pub"), "PUBLIC KEY", saPub)
	must(t, os.WriteFile(filepath.Join(pki, "tokens.csv"),
		[]byte(adminToken+`,e2e-admin,e2e-admin-uid,"system:masters"`+"\n"), 0o600))

	c := &cluster{
		dir:        dir,
		kubectlBin: mustEnv(t, "E2E_KUBECTL"),
		home:       filepath.Join(dir, "kubectl-home"),
		kubeconfig: filepath.Join(dir, "kubeconfig"),
		caPEM:      pemBytes("CERTIFICATE", ca.Raw),
		token:      adminToken,
		etcd:       etcdURL,
	}
	must(t, os.MkdirAll(c.home, 0o700))

	var p *proc
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		c.server = "https://127.0.0.1:" + itoa(port)
		p = startProc(t, dir, fmt.Sprintf("kube-apiserver-%d", attempt), nil, nil, mustEnv(t, "E2E_KUBE_APISERVER"), append([]string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + itoa(port),
			"--cert-dir=" + filepath.Join(pki, "generated"),
			"--tls-cert-file=" + filepath.Join(pki, "serving.crt"),
			"--tls-private-key-file=" + filepath.Join(pki, "serving.key"),
			"--token-auth-file=" + filepath.Join(pki, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
			"--service-cluster-ip-range=10.96.0.0/16",
			// No kubelet or controller-manager: nothing should try to reach a node,
			// and the "kubernetes" endpoints would point at loopback (invalid).
			"--endpoint-reconciler-type=none",
			"--profiling=false",
			"--v=1",
		}, extra...)...)
		err := waitReady(p, c.server+"/readyz", c.caPEM, c.token, 3*time.Minute)
		if err == nil {
			break
		}
		if attempt < 3 && p.exited() && strings.Contains(p.tail(40), "address already in use") {
			t.Logf("kube-apiserver port %d was taken meanwhile; retrying", port)
			continue
		}
		t.Fatalf("kube-apiserver: %v", err)
	}

	c.writeKubeconfig(t, c.kubeconfig, "e2e-admin", c.token)
	t.Logf("kube-apiserver ready at %s (etcd %s); logs in %s", c.server, etcdURL, dir)
	return c
}

// writeKubeconfig writes a kubeconfig for this API server that authenticates
// with a bearer token.
func (c *cluster) writeKubeconfig(t *testing.T, path, user, token string) {
	t.Helper()
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: %s}
current-context: e2e
`, c.server, base64.StdEncoding.EncodeToString(c.caPEM), user, token, user)
	must(t, os.WriteFile(path, []byte(kubeconfig), 0o600))
}

// kubectlResult is what one kubectl invocation returned.
type kubectlResult struct {
	Stdout, Stderr string
	Err            error
}

// kubectl runs the suite's kubectl with stdin (may be nil). It never fails
// the test itself: callers decide what an error means.
func (c *cluster) kubectl(t *testing.T, stdin []byte, args ...string) kubectlResult {
	t.Helper()
	return c.kubectlAs(t, c.kubeconfig, stdin, args...)
}

// kubectlAs is kubectl with another kubeconfig (another identity).
func (c *cluster) kubectlAs(t *testing.T, kubeconfig string, stdin []byte, args ...string) kubectlResult {
	t.Helper()
	cmd := exec.Command(c.kubectlBin, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=60s"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+c.home, "KUBECONFIG="+kubeconfig, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return kubectlResult{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// mustKubectl runs kubectl and fails the test on error.
func (c *cluster) mustKubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	r := c.kubectl(t, stdin, args...)
	if r.Err != nil {
		t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// ---- certificates for the API server (the webhook's come from certs/gen-certs.sh) ----

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	return k
}

func newCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return cert, key
}

func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, dns []string, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	must(t, err)
	return der, key
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	must(t, os.WriteFile(path, pemBytes(typ, der), 0o600))
}

func writeKey(t *testing.T, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	writePEM(t, path, "EC PRIVATE KEY", der)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
