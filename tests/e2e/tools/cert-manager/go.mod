// cert-manager's CRDs (deploy/crds/ of its Go module), which run.sh copies
// into the tool cache so the chart spec can install them before server-side
// dry-runs of Issuer and Certificate objects. Nothing here is compiled: the
// module is only downloaded (`go mod download`), verified against go.sum.
// To move: edit the version below and run `GOFLAGS=-mod=mod go mod download
// github.com/cert-manager/cert-manager` here (it writes go.sum).
module harbor-iam-webhook/tests/e2e/tools/cert-manager

go 1.26.0

require github.com/cert-manager/cert-manager v1.21.2
