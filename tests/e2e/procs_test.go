package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one child process of the suite. It runs in its own process group,
// gets SIGKILL if the test binary dies (Pdeathsig), is recorded in
// $E2E_PIDFILE so run.sh can reap it after a crash, and is stopped by
// t.Cleanup at the latest.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
	once sync.Once
}

// startProc starts bin with args; stdout and stderr go to <dir>/<name>.log.
// If stdout is non-nil it receives the process's stdout lines instead.
func startProc(t *testing.T, dir, name string, stdout io.Writer, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(inheritedEnv(), env...)
	cmd.Stderr = logFile
	cmd.Stdout = logFile
	if stdout != nil {
		cmd.Stdout = io.MultiWriter(logFile, stdout)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s (%s): %v", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	recordPid(cmd.Process.Pid)
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// inheritedEnv is the suite's environment minus settings of the webhook
// (HARBOR_IAM_WEBHOOK_*, AWS_*) that would make a run depend on the caller.
func inheritedEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HARBOR_IAM_WEBHOOK_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func recordPid(pid int) {
	path := os.Getenv("E2E_PIDFILE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, pid)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 15s.
func (p *proc) stop(t *testing.T) {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		if !p.exited() {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
		}
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Logf("%s did not stop after SIGTERM; killing", p.name)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		// Anything left in the group (there should be nothing) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// tail returns the last n lines of the process log, for failure messages.
func (p *proc) tail(n int) string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort asks the kernel for a free loopback port. The port is released
// before the caller's process binds it; callers retry on a bind race.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitReady polls url (HTTPS, verified against caPEM) until it answers 200.
func waitReady(p *proc, url string, caPEM []byte, token string, timeout time.Duration) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate")
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before it was ready; log tail:\n%s", p.name, p.err, p.tail(30))
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s within %s (last: %s); log tail:\n%s", p.name, url, timeout, last, p.tail(30))
}

// etcd starts the embedded etcd (tools/etcd) and returns its client URL.
func startEtcd(t *testing.T, dir string) string {
	t.Helper()
	pr, pw := io.Pipe()
	p := startProc(t, dir, "etcd", pw, nil, mustEnv(t, "E2E_ETCD"), "--data-dir", filepath.Join(dir, "etcd-data"))
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ETCD_CLIENT_URL="); ok {
				found <- v
			}
		}
	}()
	go func() { <-p.done; pw.Close() }()
	select {
	case u := <-found:
		return u
	case <-p.done:
		t.Fatalf("etcd exited: %v\n%s", p.err, p.tail(30))
	case <-time.After(90 * time.Second):
		t.Fatalf("etcd did not report its URL within 90s\n%s", p.tail(30))
	}
	return ""
}

func mustEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run the suite through tests/e2e/run.sh", name)
	}
	return v
}

func itoa(i int) string { return strconv.Itoa(i) }
