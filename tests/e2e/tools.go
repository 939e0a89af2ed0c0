//go:build tools

// The binaries make e2e builds from their upstream modules; importing them here keeps
// their requirements in go.mod/go.sum.
package e2e

import (
	_ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
