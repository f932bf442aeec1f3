//go:build tools

// Package tools pins the control-plane binaries that kcert's test bed builds, and kubemark's
// hollow node (a real kubelet over a fake container runtime) for the node tests.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubemark"
)
