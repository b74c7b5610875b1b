// The real amazon-eks-pod-identity-webhook, for the ordering spec
// (eks_webhook_test.go). run.sh builds its main package; when the module
// cannot be downloaded, the spec is skipped with the reason. Once it can:
// `GOFLAGS=-mod=mod go mod tidy` here writes go.sum.
module harbor-iam-webhook/tests/e2e/tools/pod-identity-webhook

go 1.26.0

require github.com/aws/amazon-eks-pod-identity-webhook v0.6.9
