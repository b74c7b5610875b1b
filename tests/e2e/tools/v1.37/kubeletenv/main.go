// Command kubeletenv prints the environment the kubelet gives a container, for the webhook's
// differential test (tests/kubelet_env.rs): its model of the kubelet must agree with this.
//
// It reads a JSON array of cases from stdin, each a container (envFrom ConfigMaps and env
// entries with value or configMapKeyRef), the ConfigMaps that exist and the service-link
// variables, and writes a JSON array with, per case, the final environment or the error the
// kubelet would stop the container with. Expansion is the kubelet's own code
// (k8s.io/kubernetes/third_party/forked/golang/expansion, used by makeEnvironmentVariables in
// pkg/kubelet/kubelet_pods.go); the steps around it follow makeEnvironmentVariables of the same
// version: envFrom in order, then env in order against the environment built so far, optional
// references to nothing skipped, then the service variables not set by the container.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

type testCase struct {
	ConfigMaps map[string]map[string]string `json:"configMaps"`
	Services   map[string]string            `json:"services"`
	Container  v1.Container                 `json:"container"`
}

type result struct {
	Env   map[string]string `json:"env,omitempty"`
	Error string            `json:"error,omitempty"`
}

func optional(o *bool) bool { return o != nil && *o }

func environment(c testCase) (map[string]string, error) {
	env := map[string]string{}
	for _, from := range c.Container.EnvFrom {
		ref := from.ConfigMapRef
		if ref == nil {
			return nil, fmt.Errorf("only configMapRef sources are supported here")
		}
		data, ok := c.ConfigMaps[ref.Name]
		if !ok {
			if optional(ref.Optional) {
				continue
			}
			return nil, fmt.Errorf("configMap %q not found", ref.Name)
		}
		for k, v := range data {
			env[from.Prefix+k] = v
		}
	}
	mapping := expansion.MappingFuncFor(env, c.Services)
	for _, e := range c.Container.Env {
		value := e.Value
		if value != "" {
			value = expansion.Expand(value, mapping)
		} else if e.ValueFrom != nil {
			ref := e.ValueFrom.ConfigMapKeyRef
			if ref == nil {
				return nil, fmt.Errorf("only configMapKeyRef references are supported here")
			}
			data, ok := c.ConfigMaps[ref.Name]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("configMap %q not found", ref.Name)
			}
			if value, ok = data[ref.Key]; !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("key %q not found in configMap %q", ref.Key, ref.Name)
			}
		}
		env[e.Name] = value
	}
	for k, v := range c.Services {
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
	return env, nil
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "kubeletenv: reading cases:", err)
		os.Exit(2)
	}
	out := make([]result, len(cases))
	for i, c := range cases {
		env, err := environment(c)
		if err != nil {
			out[i].Error = err.Error()
		} else {
			out[i].Env = env
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "kubeletenv: writing results:", err)
		os.Exit(2)
	}
}
