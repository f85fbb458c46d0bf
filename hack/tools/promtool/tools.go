//go:build tools

// Package tools pins promtool, which checks and unit-tests the Prometheus rules the Helm
// chart ships (hack/check-monitoring.sh). It is a module of its own, apart from helm's in
// the parent folder, so that neither tool's dependencies move the other's.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
