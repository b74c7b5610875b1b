#!/usr/bin/env bash
# End-to-end suite: the webhook against a real kube-apiserver + etcd.
# See tests/e2e/README.md.
#
#   tests/e2e/run.sh                 build (or reuse) the tools, build the webhook, run go test
#   tests/e2e/run.sh --build-only    only build (or reuse) the tool binaries
#
# Environment:
#   E2E_KUBE_VERSIONS   Kubernetes minors to test, space separated, each a directory
#                       tests/e2e/tools/<minor> (default "v1.37"; e.g. "v1.37 v1.34"; "all")
#   E2E_CACHE_DIR       where built tools are cached
#                       (default ${XDG_CACHE_HOME:-$HOME/.cache}/harbor-iam-webhook/e2e)
#   E2E_GO_BUILD_P      go build -p for the tools (default: number of CPUs, at most 2)
#   E2E_GO_TEST_FLAGS   flags for go test (default "-v"; e.g. "-v -run TestWebhookAgainstAPIServer/fixtures")
#   E2E_KEEP_WORKDIR=1  keep the per-run directory (logs, certs, kubeconfig) even when all pass
#   E2E_ALLOW_SKIP_EKS_WEBHOOK=1  offline development only: skip (instead of fail) the ordering
#                       spec when amazon-eks-pod-identity-webhook cannot be built
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/harbor-iam-webhook/e2e}
versions=${E2E_KUBE_VERSIONS:-v1.37}
if [[ $versions == all ]]; then
	versions=$(cd "$here/tools" && ls -d v1.* | sort -t. -k2,2nr | tr '\n' ' ')
fi
build_only=0
case ${1:-} in
	--build-only) build_only=1 ;;
	"") ;;
	*) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac

# Use the machine's Go toolchain as is (never download another one), build
# reproducibly from the committed go.sum, and statically.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
go_p=${E2E_GO_BUILD_P:-$(( ncpu < 2 ? ncpu : 2 ))}
# Bump when the build recipe below changes: it is part of the cache key.
recipe=1

t_start=$SECONDS
now() { echo $(( SECONDS - t_start ))s; }
log() { echo "[e2e $(now)] $*" >&2; }

command -v go >/dev/null || { log "go is not installed"; exit 2; }
command -v cargo >/dev/null || { log "cargo is not installed"; exit 2; }

# cache_dir MODULE_DIR NAME -> the cache directory for that module's binaries
cache_dir() {
	local hash
	hash=$(cat "$1/go.mod" "$1/go.sum" <(echo "recipe=$recipe $(go env GOVERSION GOOS GOARCH)") | sha256sum | cut -c1-16)
	echo "$cache_root/$2-$hash"
}

# build MODULE_DIR NAME LDFLAGS PKG... -> builds the packages into the cache
# unless they are there already; prints the directory.
build() {
	local mod=$1 name=$2 ldflags=$3; shift 3
	local dir; dir=$(cache_dir "$mod" "$name")
	if [[ -f $dir/.complete ]]; then
		touch "$dir/.complete"
		log "$name: reusing $dir"
		echo "$dir"; return
	fi
	log "$name: building $* into $dir (go build -p $go_p; a cold kube-apiserver build takes several minutes)"
	mkdir -p "$cache_root"
	local tmp; tmp=$(mktemp -d "$cache_root/.build-$name.XXXXXX")
	local t0=$SECONDS
	if ! (cd "$mod" && go build -p "$go_p" -trimpath -ldflags "$ldflags" -o "$tmp/" "$@" >&2); then
		rm -rf "$tmp"; log "$name: build FAILED"; return 1
	fi
	chmod 755 "$tmp"
	touch "$tmp/.complete"
	# A directory without .complete is debris of an interrupted rename.
	[[ -d $dir && ! -f $dir/.complete ]] && rm -rf "$dir"
	# Another run may have finished the same build meanwhile: keep either.
	mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
	log "$name: built in $(( SECONDS - t0 ))s"
	echo "$dir"
}

# Forget tools not used for 30 days (each kube-* entry is ~180 MB).
if [[ -d $cache_root ]]; then
	find "$cache_root" -mindepth 2 -maxdepth 2 -name .complete -mtime +30 -printf '%h\n' 2>/dev/null |
		while read -r old; do log "removing unused $old"; rm -rf "$old"; done
	find "$cache_root" -mindepth 1 -maxdepth 1 -name '.build-*' -mmin +240 -exec rm -rf {} + 2>/dev/null || true
fi

etcd_dir=$(build "$here/tools/etcd" etcd "-s -w" .)
declare -A kube_dir kube_full
for v in $versions; do
	mod="$here/tools/$v"
	[[ -f $mod/go.mod ]] || { log "no tool module for $v at $mod (create it with tools/new-version.sh vX.Y.Z)"; exit 2; }
	full=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$mod/go.mod")
	[[ $full =~ ^v1\.([0-9]+)\. ]] || { log "cannot read the k8s.io/kubernetes version from $mod/go.mod"; exit 2; }
	vpkg=k8s.io/component-base/version
	ldflags="-s -w -X $vpkg.gitVersion=$full -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=${BASH_REMATCH[1]} -X $vpkg.gitTreeState=clean"
	kube_dir[$v]=$(build "$mod" "kube-$v" "$ldflags" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
	kube_full[$v]=$full
done

# The real amazon-eks-pod-identity-webhook (tools/pod-identity-webhook), for
# the ordering spec, cached like the tools above. Not fatal here: when it
# cannot be built (e.g. offline), the reason goes to the spec, which then
# FAILS, unless E2E_ALLOW_SKIP_EKS_WEBHOOK=1 lets it skip.
pidw_mod=$here/tools/pod-identity-webhook
pidw_pkg=github.com/aws/amazon-eks-pod-identity-webhook
pidw_ver=$(sed -n "s|^require $pidw_pkg \(v[^ ]*\)\$|\1|p" "$pidw_mod/go.mod")
export E2E_POD_IDENTITY_WEBHOOK="" E2E_POD_IDENTITY_WEBHOOK_UNAVAILABLE=""
if pidw_dir=$(build "$pidw_mod" "pod-identity-webhook-$pidw_ver" "-s -w" "$pidw_pkg"); then
	E2E_POD_IDENTITY_WEBHOOK=$pidw_dir/amazon-eks-pod-identity-webhook
else
	# Say why when it is the download (in a scratch copy: nothing here is written).
	probe=$(mktemp -d)
	cp "$pidw_mod/go.mod" "$pidw_mod/go.sum" "$probe/"
	why=$( (cd "$probe" && GOFLAGS=-mod=mod go mod download -json "$pidw_pkg@$pidw_ver" 2>&1 || true) |
		sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' | sed 's/\\[nt]/ /g' | head -n 1)
	rm -rf "$probe"
	E2E_POD_IDENTITY_WEBHOOK_UNAVAILABLE="go build of $pidw_pkg@$pidw_ver (tools/pod-identity-webhook) failed: ${why:-see the go build output above}"
	log "$E2E_POD_IDENTITY_WEBHOOK_UNAVAILABLE"
	log "amazon-eks-pod-identity-webhook unavailable; its ordering spec will $([[ ${E2E_ALLOW_SKIP_EKS_WEBHOOK:-} == 1 ]] && echo "be skipped (E2E_ALLOW_SKIP_EKS_WEBHOOK=1)" || echo FAIL)"
fi
# helm (tools/helm) for the chart specs (helm_test.go and friends), cached
# like the others; and cert-manager's CRDs (deploy/crds/ of its Go module,
# tools/cert-manager), downloaded and verified against go.sum, then copied
# into the cache so the chart's cert-manager objects meet the real schema.
helm_mod=$here/tools/helm
helm_ver=$(sed -n 's|^require helm.sh/helm/v4 \(v[^ ]*\)$|\1|p' "$helm_mod/go.mod")
[[ -n $helm_ver ]] || { log "cannot read the helm.sh/helm/v4 version from $helm_mod/go.mod"; exit 2; }
hv=helm.sh/helm/v4/internal/version
helm_dir=$(build "$helm_mod" "helm-$helm_ver" "-s -w -X $hv.version=$helm_ver -X $hv.gitTreeState=clean" helm.sh/helm/v4/cmd/helm)
cm_mod=$here/tools/cert-manager
cm_pkg=github.com/cert-manager/cert-manager
cm_ver=$(sed -n "s|^require $cm_pkg \(v[^ ]*\)\$|\1|p" "$cm_mod/go.mod")
cm_crds=$(cache_dir "$cm_mod" "cert-manager-crds-$cm_ver")
if [[ -f $cm_crds/.complete ]]; then
	touch "$cm_crds/.complete"
	log "cert-manager CRDs: reusing $cm_crds"
else
	log "cert-manager CRDs: go mod download $cm_pkg@$cm_ver"
	cm_src=$( (cd "$cm_mod" && go mod download -json "$cm_pkg" || true) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[[ -d $cm_src/deploy/crds ]] || { log "cert-manager CRDs: no deploy/crds in $cm_pkg@$cm_ver (${cm_src:-download failed})"; exit 1; }
	mkdir -p "$cache_root"
	tmp=$(mktemp -d "$cache_root/.build-cert-manager-crds.XXXXXX")
	cp "$cm_src"/deploy/crds/*.yaml "$tmp/" && chmod 644 "$tmp"/*.yaml && chmod 755 "$tmp" && touch "$tmp/.complete"
	[[ -d $cm_crds && ! -f $cm_crds/.complete ]] && rm -rf "$cm_crds"
	mv -T "$tmp" "$cm_crds" 2>/dev/null || rm -rf "$tmp"
fi
log "tools ready"
(( build_only )) && exit 0

# ---- the webhook ----
log "webhook: cargo build --locked --bin harbor-iam-webhook"
(cd "$repo" && cargo build --locked --bin harbor-iam-webhook >&2)
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
webhook_bin=${target_dir:-$repo/target}/debug/harbor-iam-webhook
[[ -x $webhook_bin ]] || { log "no webhook binary at $webhook_bin"; exit 1; }
log "webhook built"

# ---- the suite, once per Kubernetes version ----
# Every process the suite starts is recorded here. They stop with the test
# (t.Cleanup) or with the test binary (Pdeathsig); whatever is left after a
# crash is killed, by process group, on exit.
pidfile=$(mktemp "${TMPDIR:-/tmp}/harbor-iam-webhook-e2e-pids.XXXXXX")
reap() {
	local pid
	while read -r pid; do
		[[ $pid =~ ^[0-9]+$ ]] && kill -KILL -- "-$pid" 2>/dev/null || true
	done < "$pidfile"
	rm -f "$pidfile"
}
trap reap EXIT
trap 'exit 130' INT TERM

(cd "$here" && go vet ./...)
status=0
summary=()
for v in $versions; do
	dir=${kube_dir[$v]}
	log "go test against Kubernetes ${kube_full[$v]}"
	t0=$SECONDS
	# shellcheck disable=SC2086 # E2E_GO_TEST_FLAGS is a list of flags
	if (cd "$here" && \
		E2E_ETCD="$etcd_dir/etcd" \
		E2E_KUBE_APISERVER="$dir/kube-apiserver" \
		E2E_KUBECTL="$dir/kubectl" \
		E2E_KUBE_VERSION="${kube_full[$v]}" \
		E2E_WEBHOOK_BIN="$webhook_bin" \
		E2E_REPO_ROOT="$repo" \
		E2E_PIDFILE="$pidfile" \
		E2E_HELM="$helm_dir/helm" \
		E2E_CERT_MANAGER_CRDS="$cm_crds" \
		go test -trimpath -count=1 -timeout 20m ${E2E_GO_TEST_FLAGS:--v} .); then
		summary+=("Kubernetes ${kube_full[$v]}: PASS ($(( SECONDS - t0 ))s)")
	else
		summary+=("Kubernetes ${kube_full[$v]}: FAIL ($(( SECONDS - t0 ))s)")
		status=1
	fi
done
for s in "${summary[@]}"; do log "$s"; done
log "total $(now)"
exit $status
