#!/usr/bin/env bash
# Build the fuzz targets and run each for SECONDS_PER_TARGET seconds (default 60), one after
# the other. Exits non-zero when a target finds something (its reproducer is left in
# fuzz/artifacts/<target>/) or cannot be built; prints a summary either way.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: "review mutate")
#   FUZZ_TOOLCHAIN  toolchain cargo-fuzz builds with (default: nightly; cargo-fuzz needs one)
#   FUZZ_SANITIZER  none (default: the code under test is safe Rust, and ASan halves the
#                   exec rate) or address
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-seed=1 -max_len=8192"
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a nightly toolchain. Not part of
# CI. The growing corpus (fuzz/corpus/<target>) and findings (fuzz/artifacts) are git-ignored;
# the committed seeds (fuzz/seeds/<target>) are read as an extra corpus.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

secs=${1:-60}
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1)); then
	echo "usage: $0 [SECONDS_PER_TARGET]" >&2
	exit 2
fi
read -r -a targets <<<"${FUZZ_TARGETS:-review mutate}"
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-none}
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
	echo "cargo-fuzz or the $toolchain toolchain is missing: cargo install cargo-fuzz --locked" >&2
	exit 2
fi

# One build for all targets (release, debug assertions on: overflow checks, debug_assert!).
if ! cargo "+$toolchain" fuzz build --sanitizer "$sanitizer" --debug-assertions; then
	echo "fuzz targets do not build" >&2
	exit 2
fi

summary=()
status=0
for t in "${targets[@]}"; do
	mkdir -p "corpus/$t" "artifacts/$t"
	corpora=("corpus/$t")
	[[ -d seeds/$t ]] && corpora+=("seeds/$t")
	flags=(-max_total_time="$secs" -timeout=20 -print_final_stats=1)
	[[ -f $t.dict ]] && flags+=(-dict="$t.dict")
	mkdir -p target/run-logs
	log="target/run-logs/$t.log"
	before=$(find "artifacts/$t" -maxdepth 1 -type f | wc -l)
	echo "== $t: ${secs}s (log: fuzz/$log)"
	start=$(date +%s)
	cargo "+$toolchain" fuzz run --sanitizer "$sanitizer" --debug-assertions "$t" "${corpora[@]}" \
		-- "${flags[@]}" "${extra[@]}" >"$log" 2>&1
	rc=$?
	elapsed=$(($(date +%s) - start))
	after=$(find "artifacts/$t" -maxdepth 1 -type f | wc -l)
	findings=$((after - before))
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
	if ((rc != 0)); then
		status=1
		((findings == 0)) && findings="?"
		echo "-- $t failed (exit $rc); the end of its log:"
		tail -n 40 "$log"
		find "artifacts/$t" -maxdepth 1 -type f -newermt "@$start" -printf '   reproducer: fuzz/%p\n'
	fi
	summary+=("$(printf '%-8s %12s %10s %8s %6s %9s' "$t" "${runs:-?}" "${rate:-?}" "$elapsed" "${cov:-?}" "$findings")")
done

echo
printf '%-8s %12s %10s %8s %6s %9s\n' target runs execs/s seconds cov findings
printf '%s\n' "${summary[@]}"
exit "$status"
