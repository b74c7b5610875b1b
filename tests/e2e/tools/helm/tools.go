//go:build tools

// Package tools pins the command run.sh builds from this module; it is never compiled.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
