//go:build tools

// Package tools pins actionlint, which checks the GitHub Actions workflows
// (hack/check-workflows.sh). A module of its own, so that its dependencies never move
// helm's or promtool's.
package tools

import (
	_ "github.com/rhysd/actionlint/cmd/actionlint"
)
