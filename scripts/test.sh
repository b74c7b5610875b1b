#!/usr/bin/env bash
# Every test of the project, in the order a failure is cheapest to find:
#   1. cargo: unit, golden (insta), property (proptest) and HTTPS server tests
#   2. the certificate script's self-test (openssl)
#   3. the end-to-end suite against a real kube-apiserver + etcd (tests/e2e/run.sh builds
#      them from their Go modules on first use and caches them; see tests/e2e/README.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo test"
cargo test --locked --all-targets
echo "== certs/test-gen-certs.sh"
certs/test-gen-certs.sh
echo "== tests/e2e/run.sh"
tests/e2e/run.sh
