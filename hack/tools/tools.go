//go:build tools

// Package tools pins the versions of the Go-built tools that gomemlimit-injector's
// install scripts use (hack/build-helm.sh). Nothing here is compiled into the webhook:
// the blank import keeps helm's command package, and so its exact version and every
// dependency's, in go.mod and go.sum.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
