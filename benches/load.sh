#!/usr/bin/env bash
# benches/load.sh: the webhook (`serve`) and the ceiling server (benches/ceiling.rs) under the
# same HTTPS load, back to back in one run, and a table of ours / ceiling.
#
#   benches/load.sh                  # everything, about 10 minutes on 2 cores
#   ROUNDS=1 SCALE=0.2 benches/load.sh   # a quick look
#
# Loopback only. Each server runs pinned to one core (SERVER_CPU, default 1), the load generator
# (oha, installed from crates.io if missing) to the other (LOAD_CPU, default 0). Both servers
# load the same certificate (certs/gen-certs.sh: ECDSA P-256) and both are running throughout;
# for every scenario each gets a warm-up then a measured run, alternating which goes first,
# ROUNDS times; the table shows medians. Per run: requests/s, latency p50/p99/p99.9 (oha's,
# so including the client), errors (anything but 200), the server's CPU time per request
# (utime+stime from /proc/PID/stat around the run) and its CPU share (saturation check). Then
# startup to the first successful review (median of 5 starts), RSS after a 100,000-review soak
# in two halves (growth), VmHWM, and the binary size.
#
# Both servers run with the process environment of the image: the Dockerfile's GLIBC_TUNABLES
# (a deeper per-thread malloc cache), read from the Dockerfile itself.
#
# Environment: SERVER_CPU, LOAD_CPU, ROUNDS (3), SCALE (1.0: request counts multiplier),
# OUT (results directory, default a new temporary one), PORT (first of two ports, 18443),
# CARGO_TARGET_DIR.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}
PORT=${PORT:-18443}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/harbor-iam-webhook-load.XXXXXX")}
OHA_VERSION=1.16.0
target_dir=${CARGO_TARGET_DIR:-$repo/target}

log() { printf 'load: %s\n' "$*" >&2; }
n() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); print (v < 100 ? 100 : v) }'; }

mkdir -p "$OUT"
: >"$OUT/runs.tsv"
: >"$OUT/extra.tsv"

# ---- tools and binaries -------------------------------------------------------------------------
if ! command -v oha >/dev/null || [[ $(oha --version) != *"$OHA_VERSION"* ]]; then
	log "installing oha $OHA_VERSION from crates.io"
	cargo install --locked oha --version "$OHA_VERSION"
fi
log "building release binaries (the webhook and the ceiling)"
cargo build --release --locked --bin harbor-iam-webhook --example ceiling
ours_bin=$target_dir/release/harbor-iam-webhook
ceiling_bin=$target_dir/release/examples/ceiling

"$ceiling_bin" bodies "$OUT"
certs/gen-certs.sh --out "$OUT/certs" --extra-san DNS:localhost --extra-san IP:127.0.0.1 2>/dev/null
crt=$OUT/certs/tls.crt key=$OUT/certs/tls.key ca=$OUT/certs/ca.crt

# The image's malloc tuning, for both servers alike (the load generator keeps the default).
tunables=$(sed -n 's/^ENV GLIBC_TUNABLES=//p' Dockerfile)
[[ -n $tunables ]] || { log "no ENV GLIBC_TUNABLES line in the Dockerfile"; exit 1; }
log "servers run with GLIBC_TUNABLES=$tunables"

declare -A port=([ours]=$PORT [ceiling]=$((PORT + 1)))
declare -A pid=()
server_cmd() { # NAME: the command line that serves on its port
	printf 'env GLIBC_TUNABLES=%s ' "$tunables"
	case $1 in
	ours) echo "$ours_bin" serve --aws-region eu-west-1 --listen "127.0.0.1:${port[ours]}" \
		--tls-cert "$crt" --tls-key "$key" --metrics-listen 127.0.0.1:0 --cluster-facts off ;;
	ceiling) echo "$ceiling_bin" serve "127.0.0.1:${port[ceiling]}" "$crt" "$key" ;;
	esac
}
cleanup() {
	for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
fact() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUT/extra.tsv"; }

log "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg-start"

# ---- startup to the first successful review -----------------------------------------------------
for name in ours ceiling; do
	times=()
	for _ in 1 2 3 4 5; do
		# shellcheck disable=SC2046
		times+=("$(taskset -c "$LOAD_CPU" "$ceiling_bin" first-review "127.0.0.1:${port[$name]}" "$ca" \
			"$OUT/core.json" -- taskset -c "$SERVER_CPU" $(server_cmd "$name"))")
	done
	median=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 3p)
	log "$name: startup to first review ${times[*]} ms (median $median)"
	fact startup_ms "$name" "$median"
done

# ---- the two servers, running throughout --------------------------------------------------------
for name in ours ceiling; do
	# shellcheck disable=SC2046
	taskset -c "$SERVER_CPU" $(server_cmd "$name") 2>"$OUT/$name.log" &
	pid[$name]=$!
	taskset -c "$LOAD_CPU" "$ceiling_bin" first-review "127.0.0.1:${port[$name]}" "$ca" "$OUT/core.json" >/dev/null
	fact rss_start_kib "$name" "$(status_kib "${pid[$name]}" VmRSS)"
done

oha_run() { # NAME BODY REQUESTS OUTFILE OHA-ARGS...
	local name=$1 body=$2 requests=$3 file=$4
	shift 4
	taskset -c "$LOAD_CPU" oha --no-tui --output-format json --insecure --worker-threads 1 \
		-m POST -T application/json -D "$OUT/$body.json" -n "$requests" "$@" \
		"https://127.0.0.1:${port[$name]}/mutate" >"$file"
}

# name body requests oha-args
scenarios=(
	"h1-c1-core core $(n 10000) -c 1"
	"h2-c1-core core $(n 10000) --http2 -c 1 -p 1"
	"h1-c32-core core $(n 40000) -c 32"
	"h2-c32-core core $(n 40000) --http2 -c 1 -p 32"
	"h1-c32-nonharbor non-harbor $(n 40000) -c 32"
	"h2-c32-nonharbor non-harbor $(n 40000) --http2 -c 1 -p 32"
	"newconn-c1-core core $(n 3000) -c 1 --disable-keepalive"
	"newconn-c32-core core $(n 10000) -c 32 --disable-keepalive"
)

for round in $(seq 1 "$ROUNDS"); do
	for s in "${scenarios[@]}"; do
		read -r scenario body requests args <<<"$s"
		order=(ours ceiling)
		((round % 2 == 0)) && order=(ceiling ours)
		for name in "${order[@]}"; do
			# shellcheck disable=SC2086
			oha_run "$name" "$body" $((requests / 10 + 100)) /dev/null $args
			file=r$round-$scenario-$name.json
			before=$(cpu_ticks "${pid[$name]}")
			# shellcheck disable=SC2086
			oha_run "$name" "$body" "$requests" "$OUT/$file" $args
			after=$(cpu_ticks "${pid[$name]}")
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$scenario" "$name" "$requests" \
				$((after - before)) "$file" >>"$OUT/runs.tsv"
			log "round $round $scenario $name: $(jq -r '"\(.summary.requestsPerSec | floor) req/s, p99 \(.latencyPercentiles."p99" * 1000 * 1000 | floor) µs"' "$OUT/$file")"
		done
	done
done

# ---- soak: 100,000 reviews, RSS after each half ---------------------------------------------------
soak=$(n 100000)
for name in ours ceiling; do
	fact rss_before_soak_kib "$name" "$(status_kib "${pid[$name]}" VmRSS)"
	oha_run "$name" core $((soak / 2)) "$OUT/soak1-$name.json" -c 32
	fact rss_soak_half_kib "$name" "$(status_kib "${pid[$name]}" VmRSS)"
	oha_run "$name" core $((soak / 2)) "$OUT/soak2-$name.json" -c 32
	fact rss_soak_kib "$name" "$(status_kib "${pid[$name]}" VmRSS)"
	fact hwm_kib "$name" "$(status_kib "${pid[$name]}" VmHWM)"
	fact rss_anon_kib "$name" "$(status_kib "${pid[$name]}" RssAnon)"
	fact rss_file_kib "$name" "$(status_kib "${pid[$name]}" RssFile)"
	log "$name: soak done, VmHWM $(status_kib "${pid[$name]}" VmHWM) KiB"
done

# ---- binaries ---------------------------------------------------------------------------------------
for name in ours ceiling; do
	bin=$ours_bin
	[[ $name == ceiling ]] && bin=$ceiling_bin
	fact binary_bytes "$name" "$(stat -c %s "$bin")"
	strip -o "$OUT/$name.stripped" "$bin"
	fact binary_stripped_bytes "$name" "$(stat -c %s "$OUT/$name.stripped")"
done

cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg-end"
{
	echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(free -g | awk '/Mem:/ { print $2 }') GiB, Linux $(uname -r); server on CPU $SERVER_CPU, oha $OHA_VERSION on CPU $LOAD_CPU."
	echo "Load average (1/5/15 min) at start: $(cat "$OUT/loadavg-start"); at end: $(cat "$OUT/loadavg-end"). Rounds: $ROUNDS, scale: $SCALE."
	echo
	"$ceiling_bin" report "$OUT"
} | tee "$OUT/report.md"
log "results in $OUT"
