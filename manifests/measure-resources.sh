#!/usr/bin/env bash
# measure-resources.sh BINARY [FIXTURE_POD_YAML]
#
# The figures behind the Deployment's resources: memory (VmRSS / VmHWM from
# /proc) and CPU of `harbor-iam-webhook serve`, idle and under bounded load on
# loopback only. Needs python3 with PyYAML, curl, bc and `hey`
# (go install github.com/rakyll/hey@latest). Every load phase is bounded by a
# request count; nothing leaves 127.0.0.1.
set -euo pipefail

bin=${1:?usage: $0 BINARY [FIXTURE_POD_YAML]}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fixture=${2:-$here/../../shared/fixtures/pods/harbor-helm-1.16-core.yaml}
hey=${HEY:-$(command -v hey || echo "$(go env GOPATH 2>/dev/null)/bin/hey")}
[[ -x $hey ]] || { echo "hey not found (go install github.com/rakyll/hey@latest)" >&2; exit 1; }
port=${PORT:-18443}
url=https://127.0.0.1:$port
work=$(mktemp -d)

# AdmissionReviews: the fixture pod as is, and two oversized variants (the
# API server accepts request bodies up to about 3 MiB).
python3 - "$fixture" "$work" <<'EOF'
import copy, json, sys, yaml
pod = yaml.safe_load(open(sys.argv[1]))
gvk = {"group": "", "version": "v1", "kind": "Pod"}
gvr = {"group": "", "version": "v1", "resource": "pods"}
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "00000000-0000-4000-8000-000000000001", "kind": gvk, "resource": gvr,
    "requestKind": gvk, "requestResource": gvr, "namespace": "harbor", "operation": "CREATE",
    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
    "object": pod, "oldObject": None, "dryRun": False}}
json.dump(review, open(f"{sys.argv[2]}/review.json", "w"))
for name, n in (("review-1m.json", 12000), ("review-3m.json", 36000)):
    big = copy.deepcopy(review)
    big["request"]["object"]["spec"]["containers"][0].setdefault("env", []).extend(
        {"name": f"FILLER_{i}", "value": "x" * 60} for i in range(n))
    json.dump(big, open(f"{sys.argv[2]}/{name}", "w"))
EOF

"$bin" serve --aws-region eu-west-1 --listen "127.0.0.1:$port" --metrics-listen off \
	--cluster-facts off --log-format json --log warn >"$work/webhook.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -skf "$url/readyz" >/dev/null && break; sleep 0.1; done

mem() { awk '/^(VmRSS|VmHWM)/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$pid/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
tck=$(getconf CLK_TCK)

sleep 3
printf '%-14s %s\n' idle "$(mem)"
phase() { # phase NAME HEY-ARGS...
	local name=$1 c0 t0 c1 t1
	shift
	c0=$(cpu_ticks) t0=$(date +%s.%N)
	"$hey" -host localhost -m POST -T application/json "$@" "$url/mutate" >"$work/hey.txt"
	c1=$(cpu_ticks) t1=$(date +%s.%N)
	printf '%-14s %s cpu %.2f cores; %s; %s\n' "$name" "$(mem)" \
		"$(echo "($c1 - $c0) / $tck / ($t1 - $t0)" | bc -l)" \
		"$(grep -m1 'Requests/sec' "$work/hey.txt" | xargs)" \
		"$(grep -A3 'Status code distribution' "$work/hey.txt" | tail -n +2 | xargs)"
}
phase c1           -n 2000 -c 1 -D "$work/review.json"
phase c16-h2       -n 20000 -c 16 -h2 -D "$work/review.json"
phase c64-h2       -n 20000 -c 64 -h2 -D "$work/review.json"
phase c32-newconn  -n 4000 -c 32 -disable-keepalive -D "$work/review.json"
phase 1.2MB-c8     -n 200 -c 8 -D "$work/review-1m.json"
phase 3.5MB-c16    -n 160 -c 16 -D "$work/review-3m.json"
