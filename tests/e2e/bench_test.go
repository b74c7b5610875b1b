package e2e

// Admission latency and memory with cluster facts on and off, side by side in
// one run against the real API server. A benchmark, not a test: it asserts
// only that every review succeeded, and is skipped unless E2E_BENCH_FACTS=1.
//
//	cargo build --release --locked --bin harbor-iam-webhook
//	E2E_BENCH_FACTS=1 E2E_BENCH_WEBHOOK_BIN=$PWD/target/release/harbor-iam-webhook \
//	  E2E_GO_TEST_FLAGS="-v -run TestFactsBenchmark" tests/e2e/run.sh

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFactsBenchmark(t *testing.T) {
	if os.Getenv("E2E_BENCH_FACTS") != "1" {
		t.Skip("a benchmark: set E2E_BENCH_FACTS=1 to run it")
	}
	if bin := os.Getenv("E2E_BENCH_WEBHOOK_BIN"); bin != "" {
		t.Setenv("E2E_WEBHOOK_BIN", bin)
	}
	e := setUp(t)
	a := &aware{env: e, active: e.w}
	e.c.mustKubectl(t, nil, "create", "serviceaccount", webhookSA, "-n", nsWebhook)
	e.c.mustKubectl(t, nil, "annotate", "--overwrite", "serviceaccount", irsaSA, "-n", nsHarbor, "eks.amazonaws.com/role-arn="+roleARN)
	a.grantShippedRBAC(t)
	token := strings.TrimSpace(e.c.mustKubectl(t, nil, "create", "token", webhookSA, "-n", nsWebhook, "--duration=2h"))
	kubeconfig := filepath.Join(e.c.dir, "bench-sa.kubeconfig")
	e.c.writeKubeconfig(t, kubeconfig, webhookSA, token)
	env := []string{"KUBECONFIG=" + kubeconfig, "HOME=" + e.c.home, "HARBOR_IAM_WEBHOOK_LOG=warn"}
	servers := []struct {
		name string
		w    *webhook
	}{
		{"facts off", startServe(t, e.repo, e.c.dir, "bench-off", env, "--cluster-facts", "off")},
		{"facts on", startServe(t, e.repo, e.c.dir, "bench-on", env, "--cluster-facts", "on")},
	}

	body := reviewBody(t, e, coreFixture, nsHarbor)

	scenarios := []struct {
		concurrency, requests int
	}{{1, 3000}, {32, 20000}}
	rounds := 3
	type result struct{ rps, p50, p99, cpuPerReq float64 }
	results := map[string][]result{}
	for round := 0; round < rounds; round++ {
		for _, sc := range scenarios {
			for i := range servers {
				s := servers[(i+round)%len(servers)] // alternate who goes first
				client := benchClient(t, s.w.caPEM)
				load(t, client, s.w.url, body, sc.concurrency, sc.requests/10) // warm-up
				before := cpuTicks(t, s.w.proc.cmd.Process.Pid)
				lat, elapsed := load(t, client, s.w.url, body, sc.concurrency, sc.requests)
				ticks := cpuTicks(t, s.w.proc.cmd.Process.Pid) - before
				key := fmt.Sprintf("%s c%d", s.name, sc.concurrency)
				results[key] = append(results[key], result{
					rps:       float64(sc.requests) / elapsed.Seconds(),
					p50:       percentile(lat, 0.50),
					p99:       percentile(lat, 0.99),
					cpuPerReq: float64(ticks) * 10_000 / float64(sc.requests), // 100 ticks/s → µs
				})
			}
		}
	}
	med := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	var out strings.Builder
	fmt.Fprintf(&out, "Kubernetes %s, %d rounds, medians; HTTP/1.1 keep-alive, Go client in the test process\n", os.Getenv("E2E_KUBE_VERSION"), rounds)
	fmt.Fprintf(&out, "| webhook | concurrency | req/s | p50 µs | p99 µs | server CPU µs/review |\n|---|--:|--:|--:|--:|--:|\n")
	for _, sc := range scenarios {
		for _, s := range servers {
			rs := results[fmt.Sprintf("%s c%d", s.name, sc.concurrency)]
			fmt.Fprintf(&out, "| %s | %d | %.0f | %.0f | %.0f | %.1f |\n", s.name, sc.concurrency,
				med(rs, func(r result) float64 { return r.rps }),
				med(rs, func(r result) float64 { return r.p50 }),
				med(rs, func(r result) float64 { return r.p99 }),
				med(rs, func(r result) float64 { return r.cpuPerReq }))
		}
	}
	fmt.Fprintf(&out, "\n| webhook | VmRSS MiB | VmHWM MiB |\n|---|--:|--:|\n")
	for _, s := range servers {
		pid := s.w.proc.cmd.Process.Pid
		fmt.Fprintf(&out, "| %s | %.2f | %.2f |\n", s.name, statusKiB(t, pid, "VmRSS")/1024, statusKiB(t, pid, "VmHWM")/1024)
	}
	t.Log("\n" + out.String())
	if path := os.Getenv("E2E_BENCH_OUT"); path != "" {
		must(t, os.WriteFile(path, []byte(out.String()), 0o644))
	}
}

// reviewBody is the AdmissionReview the API server would send for creating
// fixture f in namespace ns.
func reviewBody(t *testing.T, e *env, f, ns string) []byte {
	t.Helper()
	var object map[string]any
	must(t, json.Unmarshal(e.fixtureJSON(t, f), &object))
	body, err := json.Marshal(obj{
		"apiVersion": "admission.k8s.io/v1",
		"kind":       "AdmissionReview",
		"request": obj{
			"uid":       "bench",
			"kind":      obj{"group": "", "version": "v1", "kind": "Pod"},
			"resource":  obj{"group": "", "version": "v1", "resource": "pods"},
			"namespace": ns,
			"operation": "CREATE",
			"object":    object,
		},
	})
	must(t, err)
	return body
}

func benchClient(t *testing.T, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 64,
		},
	}
}

// load POSTs body n times from c workers; every answer must be a 200 with a
// mutating patch. Returns each request's latency.
func load(t *testing.T, client *http.Client, url string, body []byte, c, n int) ([]time.Duration, time.Duration) {
	t.Helper()
	lat := make([]time.Duration, n)
	var next int
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				t0 := time.Now()
				err := post(client, url, body)
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return lat, elapsed
}

func post(client *http.Client, url string, body []byte) error {
	res, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK || !bytes.Contains(data, []byte(`"patch"`)) {
		return fmt.Errorf("status %d, no patch: %.300s", res.StatusCode, data)
	}
	return nil
}

func percentile(lat []time.Duration, q float64) float64 {
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[int(q*float64(len(s)-1))].Microseconds())
}

func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	must(t, err)
	// Fields after the command name (which may hold spaces) are space separated.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

func statusKiB(t *testing.T, pid int, key string) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}
