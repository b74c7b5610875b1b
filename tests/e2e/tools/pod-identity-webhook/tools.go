//go:build tools

// Package tools pins the command run.sh builds from this module; it is never compiled.
package tools

import _ "github.com/aws/amazon-eks-pod-identity-webhook"
