package e2e

// `harbor-iam-webhook mutate -o yaml` must read back, through kubectl's own reader
// (sigs.k8s.io/yaml's YAMLToJSON, YAML 1.1 rules), as exactly what `-o json` prints: every
// generated string (env values, annotation keys and values) comes back a string, unchanged.

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// Words YAML 1.1 or 1.2 would read as something other than the string, and pieces of syntax.
var yamlTrickyWords = []string{
	"on", "On", "ON", "off", "yes", "Yes", "no", "NO", "y", "Y", "n", "N", "true", "False",
	"null", "Null", "~", "", " ", "1", "-1", "+1", "1_000", "0o17", "017", "0x1F", "0b101",
	"1e3", "1E+3", "1.5", ".5", "-.inf", ".NaN", "1:20", "190:20:30", "2001-12-14",
	"2001-12-14t21:59:43.10-05:00", "=", "<<", "a: b", "a:b", "- x", "-", "? x", "#x", "a #b",
	"'q'", "\"d\"", "@at", "`t", "%p", "!tag", "&anchor", "*alias", "|", ">", "[a]", "{a: 1}",
	"a,b", " lead", "trail ", "multi\nline", "tab\there", "cr\rlf", "\u0085nel", "\u2028ls",
	"\u00a0nbsp", "\ufeffbom", "del\u007f", "é", "日本", "emoji 🚀", "\\back", "$(VAR)", "$$",
	"postgres://u:$(POSTGRESQL_PASSWORD)@h/d?sslmode=require",
}

func yamlRandomString(r *rand.Rand) string {
	var b strings.Builder
	for n := r.Intn(4) + 1; n > 0; n-- {
		if r.Intn(3) == 0 {
			b.WriteRune(rune(r.Intn(0x80)))
		} else {
			b.WriteString(yamlTrickyWords[r.Intn(len(yamlTrickyWords))])
		}
	}
	return b.String()
}

func TestMutateYAMLReadsBackAsPrinted(t *testing.T) {
	bin := os.Getenv("E2E_WEBHOOK_BIN")
	if bin == "" {
		t.Fatal("E2E_WEBHOOK_BIN is not set (tests/e2e/run.sh sets it)")
	}
	r := rand.New(rand.NewSource(20261207))
	dir := t.TempDir()
	strs := 0
	for batch := 0; batch < 12; batch++ {
		var values []string
		if batch == 0 {
			values = yamlTrickyWords
		}
		for len(values) < 200 {
			values = append(values, yamlRandomString(r))
		}
		env := []any{}
		annotations := map[string]any{}
		for i, v := range values {
			env = append(env, map[string]any{"name": fmt.Sprintf("X_%d", i), "value": v})
			annotations[fmt.Sprintf("k%d/%s", i, v)] = v
		}
		pod := map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"generateName": "harbor-core-", "namespace": "harbor",
				"labels": map[string]any{"app": "harbor", "component": "core"}, "annotations": annotations},
			"spec": map[string]any{"containers": []any{map[string]any{
				"name": "core", "image": "goharbor/harbor-core:v2.12.4", "env": env}}},
		}
		file := filepath.Join(dir, fmt.Sprintf("pod-%d.json", batch))
		data, err := json.Marshal(pod)
		must(t, err)
		must(t, os.WriteFile(file, data, 0o600))
		run := func(format string) []byte {
			cmd := exec.Command(bin, "mutate", "-f", file, "-o", format, "--aws-region", "eu-west-1")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("mutate -o %s: %v\n%s", format, err, stderr.String())
			}
			return out
		}
		printed := run("yaml")
		viaKubectl, err := yaml.YAMLToJSON(printed)
		if err != nil {
			t.Fatalf("batch %d: kubectl's reader refuses the YAML: %v", batch, err)
		}
		var got, want any
		must(t, json.Unmarshal(viaKubectl, &got))
		must(t, json.Unmarshal(run("json"), &want))
		if !reflect.DeepEqual(got, want) {
			gotEnv := got.(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"].([]any)
			for i, v := range values {
				if e, _ := gotEnv[i].(map[string]any); e["value"] != v {
					t.Errorf("batch %d: %q came back as %#v", batch, v, e["value"])
				}
			}
			t.Fatalf("batch %d: -o yaml read by kubectl differs from -o json", batch)
		}
		strs += len(values)
	}
	t.Logf("%d generated strings read back unchanged", strs)
}
