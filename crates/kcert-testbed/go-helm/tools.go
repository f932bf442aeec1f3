//go:build tools

// Package tools pins the Helm that kcert-testbed builds to lint and install the chart.

package tools

import _ "helm.sh/helm/v4/cmd/helm"
