#!/usr/bin/env bash
# Self-test of certs/gen-certs.sh: everything it does with files, and --apply
# against a stand-in kubectl that records what it is asked (no cluster needed).
# Exits non-zero on any failure; the last line reads "N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gen=$here/gen-certs.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-gen-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
all_output=$tmp/all-output.log
: >"$all_output"

passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; [[ -z ${2:-} ]] || printf '     %s\n' "$2"; }
check() { # check NAME COMMAND...
	local name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name" "$*"; fi
}

# run [ARGS...]: run gen-certs.sh, keep its output in $tmp/last.log and the
# whole log; its exit status in $rc.
run() {
	"$gen" "$@" >"$tmp/last.log" 2>&1
	rc=$?
	cat "$tmp/last.log" >>"$all_output"
	return 0
}

files=(ca.crt ca.key tls.crt tls.key ca-bundle.crt)
hashes() { (cd "$1" && openssl dgst -sha256 "${files[@]}" 2>/dev/null); }
hash_of() { openssl dgst -sha256 "$1" 2>/dev/null | awk '{print $NF}'; }
mode_of() { stat -c %a "$1" 2>/dev/null || stat -f %Lp "$1"; }
# SANs as `openssl x509 -ext subjectAltName` prints them, one per line, sorted.
sans_of() {
	openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | tail -n +2 |
		tr ',' '\n' | sed 's/^ *//; s/ *$//' | awk 'NF' | LC_ALL=C sort
}
verifies() { openssl verify -CAfile "$1" "$2" >/dev/null 2>&1; }
valid_for_days() { openssl x509 -in "$1" -noout -checkend $(($2 * 86400)) >/dev/null 2>&1; }
pub_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
pub_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
pair() { [[ "$(pub_of_key "$1")" == "$(pub_of_cert "$2")" ]]; }
said() { grep -q -- "$1" "$tmp/last.log"; }
count_certs() { grep -c 'BEGIN CERTIFICATE' "$1"; }

default_sans=$(printf '%s\n' DNS:harbor-iam-webhook DNS:harbor-iam-webhook.harbor-iam-webhook \
	DNS:harbor-iam-webhook.harbor-iam-webhook.svc DNS:harbor-iam-webhook.harbor-iam-webhook.svc.cluster.local |
	LC_ALL=C sort)

command -v openssl >/dev/null || { echo "openssl not found"; exit 1; }

# ---- fresh run -----------------------------------------------------------------
d=$tmp/fresh
run --out "$d"
check "fresh: exit 0" test "$rc" -eq 0
for f in "${files[@]}"; do check "fresh: wrote $f" test -s "$d/$f"; done
check "fresh: ca.key is 0600" test "$(mode_of "$d/ca.key")" = 600
check "fresh: tls.key is 0600" test "$(mode_of "$d/tls.key")" = 600
check "fresh: tls.crt is 0644" test "$(mode_of "$d/tls.crt")" = 644
check "fresh: openssl verify -CAfile ca.crt tls.crt" verifies "$d/ca.crt" "$d/tls.crt"
check "fresh: SANs are the Service DNS names" test "$(sans_of "$d/tls.crt")" = "$default_sans"
check "fresh: CA is a CA" grep -q 'CA:TRUE' <(openssl x509 -in "$d/ca.crt" -noout -text)
check "fresh: CA key is ECDSA P-256" grep -q 'prime256v1' <(openssl x509 -in "$d/ca.crt" -noout -text)
check "fresh: serving key is ECDSA P-256" grep -q 'prime256v1' <(openssl x509 -in "$d/tls.crt" -noout -text)
check "fresh: serving cert is for TLS servers" grep -q 'TLS Web Server Authentication' <(openssl x509 -in "$d/tls.crt" -noout -text)
check "fresh: serving cert is not a CA" grep -q 'CA:FALSE' <(openssl x509 -in "$d/tls.crt" -noout -text)
check "fresh: serving cert valid ~365 days" valid_for_days "$d/tls.crt" 364
check "fresh: tls.key matches tls.crt" pair "$d/tls.key" "$d/tls.crt"
check "fresh: ca.key matches ca.crt" pair "$d/ca.key" "$d/ca.crt"
check "fresh: keys are PKCS#8 PEM" grep -q 'BEGIN PRIVATE KEY' "$d/tls.key"
check "fresh: ca-bundle.crt is the CA" cmp -s "$d/ca.crt" "$d/ca-bundle.crt"

# ---- rerun: nothing re-issued --------------------------------------------------
before=$(hashes "$d")
run --out "$d"
check "rerun: exit 0" test "$rc" -eq 0
check "rerun: same files" test "$(hashes "$d")" = "$before"
check "rerun: says it kept the certificate" said 'keeping the serving certificate'

# ---- changed SANs: re-issue, CA kept -------------------------------------------
ca_hash=$(hash_of "$d/ca.crt") tls_hash=$(hash_of "$d/tls.crt") key_hash=$(hash_of "$d/tls.key")
run --out "$d" --extra-san IP:127.0.0.1 --extra-san DNS:webhook.example.test
check "extra SANs: exit 0" test "$rc" -eq 0
check "extra SANs: re-issued" test "$(hash_of "$d/tls.crt")" != "$tls_hash"
check "extra SANs: new serving key" test "$(hash_of "$d/tls.key")" != "$key_hash"
check "extra SANs: CA kept" test "$(hash_of "$d/ca.crt")" = "$ca_hash"
want=$(printf '%s\n' "$default_sans" "IP Address:127.0.0.1" DNS:webhook.example.test | LC_ALL=C sort)
check "extra SANs: SANs are Service names + extras" test "$(sans_of "$d/tls.crt")" = "$want"
check "extra SANs: verifies" verifies "$d/ca.crt" "$d/tls.crt"

before=$(hashes "$d")
run --out "$d" --extra-san webhook.EXAMPLE.test --extra-san=127.0.0.1
check "same SANs, other order and spelling: nothing re-issued" test "$(hashes "$d")" = "$before"

run --out "$d"
check "SANs dropped: re-issued" test "$(hashes "$d")" != "$before"
check "SANs dropped: back to the Service names" test "$(sans_of "$d/tls.crt")" = "$default_sans"
check "SANs dropped: CA kept" test "$(hash_of "$d/ca.crt")" = "$ca_hash"

run --out "$d" --namespace other-ns --service hook
want=$(printf '%s\n' DNS:hook DNS:hook.other-ns DNS:hook.other-ns.svc DNS:hook.other-ns.svc.cluster.local | LC_ALL=C sort)
check "other namespace/service: SANs follow" test "$(sans_of "$d/tls.crt")" = "$want"
check "other namespace/service: CA kept" test "$(hash_of "$d/ca.crt")" = "$ca_hash"

# ---- near expiry ---------------------------------------------------------------
e=$tmp/expiry
run --out "$e" --days 1
check "--days 1: exit 0" test "$rc" -eq 0
check "--days 1: valid for a day only" bash -c "! openssl x509 -in '$e/tls.crt' -noout -checkend 172800 >/dev/null"
ca_hash=$(hash_of "$e/ca.crt") tls_hash=$(hash_of "$e/tls.crt")
run --out "$e"
check "near expiry: re-issued" test "$(hash_of "$e/tls.crt")" != "$tls_hash"
check "near expiry: says why" said 'expires within 30 days'
check "near expiry: CA kept" test "$(hash_of "$e/ca.crt")" = "$ca_hash"
check "near expiry: new cert valid ~365 days" valid_for_days "$e/tls.crt" 364
before=$(hashes "$e")
run --out "$e"
check "after renewal: rerun changes nothing" test "$(hashes "$e")" = "$before"

# ---- damaged or foreign files --------------------------------------------------
before_ca=$(hash_of "$e/ca.crt")
rm -f "$e/tls.key"
run --out "$e"
check "tls.key missing: re-issued, pair matches" pair "$e/tls.key" "$e/tls.crt"
check "tls.key missing: CA kept" test "$(hash_of "$e/ca.crt")" = "$before_ca"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$e/tls.key" 2>/dev/null
run --out "$e"
check "tls.key of another pair: re-issued, pair matches" pair "$e/tls.key" "$e/tls.crt"

f=$tmp/foreign
run --out "$f"
cp "$f/tls.crt" "$e/tls.crt"
cp "$f/tls.key" "$e/tls.key"
run --out "$e"
check "cert of another CA: re-issued under ours" verifies "$e/ca.crt" "$e/tls.crt"
check "cert of another CA: CA kept" test "$(hash_of "$e/ca.crt")" = "$before_ca"

# ---- CA replaced: the old one stays in the bundle --------------------------------
c=$tmp/ca-rotation
run --out "$c"
old_ca=$(hash_of "$c/ca.crt")
cp "$c/ca.crt" "$tmp/old-ca.crt"
rm -f "$c/ca.key"
run --out "$c"
check "ca.key lost: new CA" test "$(hash_of "$c/ca.crt")" != "$old_ca"
check "ca.key lost: serving cert re-issued under the new CA" verifies "$c/ca.crt" "$c/tls.crt"
check "ca.key lost: old CA kept as ca-previous.crt" cmp -s "$tmp/old-ca.crt" "$c/ca-previous.crt"
check "ca.key lost: bundle holds both CAs" test "$(count_certs "$c/ca-bundle.crt")" -eq 2
check "ca.key lost: Secret's ca.crt is the new CA only" test "$(count_certs "$c/ca.crt")" -eq 1

# A CA that would not outlive a new serving certificate is renewed.
s=$tmp/short-ca
mkdir -p "$s"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$s/ca.key" 2>/dev/null
openssl req -x509 -new -key "$s/ca.key" -days 100 -subj "/CN=short-lived test CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out "$s/ca.crt" 2>/dev/null
short_ca=$(hash_of "$s/ca.crt")
run --out "$s"
check "CA expiring before the new cert: renewed" test "$(hash_of "$s/ca.crt")" != "$short_ca"
check "CA expiring before the new cert: says why" said 'the CA expires within'
check "CA expiring before the new cert: new CA valid ~10 years" valid_for_days "$s/ca.crt" 3600

# ---- default output directory (next to the script) and relative --out ------------
mkdir -p "$tmp/copy"
cp "$gen" "$tmp/copy/gen-certs.sh"
(cd "$tmp" && "$tmp/copy/gen-certs.sh" >>"$all_output" 2>&1)
check "default --out is out/ next to the script" test -s "$tmp/copy/out/tls.crt"
(cd "$tmp" && "$gen" --out rel/dir >>"$all_output" 2>&1)
check "relative --out is taken from the working directory" test -s "$tmp/rel/dir/tls.crt"

# ---- bad arguments -------------------------------------------------------------
for args in "--bogus" "--days 0" "--days 5000" "--days x" "--extra-san DNS:a,DNS:b" \
	"--extra-san URI:spiffe://x" "--extra-san IP:not-an-ip" "--namespace Bad_NS" "--out"; do
	# shellcheck disable=SC2086 # split on purpose
	run --out "$tmp/bad" $args
	check "rejects: $args (exit 2)" test "$rc" -eq 2
done
check "rejected runs wrote no serving certificate" test ! -e "$tmp/bad/tls.crt"

# ---- --apply with a stand-in kubectl ---------------------------------------------
stub=$tmp/kubectl-stub
cat >"$stub" <<'EOF'
#!/usr/bin/env bash
# Records its arguments (one call a line) and answers like kubectl would.
printf '%s\n' "$*" >>"$STUB_DIR/calls.log"
case "$1 $2" in
"get mutatingwebhookconfiguration")
	# With --ignore-not-found, a missing object prints nothing and succeeds.
	if [[ -n ${STUB_GET_FAILS:-} ]]; then
		echo 'error: You must be logged in to the server (Unauthorized)' >&2
		exit 1
	fi
	[[ -n ${STUB_MWC_MISSING:-} ]] || printf '%s\n' $STUB_HOOKS
	;;
"get validatingwebhookconfiguration")
	printf '%s\n' ${STUB_VHOOKS:-}
	;;
"patch mutatingwebhookconfiguration" | "patch validatingwebhookconfiguration")
	echo "$2.admissionregistration.k8s.io/harbor-iam-webhook patched"
	;;
"apply --server-side")
	cat >"$STUB_DIR/secret.json"
	echo "secret/harbor-iam-webhook-tls serverside-applied"
	;;
*) echo "stub: unexpected call: $*" >&2; exit 1 ;;
esac
EOF
chmod +x "$stub"
export STUB_DIR=$tmp/stub
mkdir -p "$STUB_DIR"

a=$tmp/apply
export STUB_HOOKS="mutate.harbor-iam-webhook.io second.harbor-iam-webhook.io"
KUBECTL="$stub" run --out "$a" --namespace hooks-ns --apply
check "--apply: exit 0" test "$rc" -eq 0
calls=$(awk '{print $1}' "$STUB_DIR/calls.log" | paste -sd' ' -)
check "--apply: caBundle patch, then Secret apply" test "$calls" = "get patch get apply"
check "--apply: no ValidatingWebhookConfiguration: skipped" said 'no validatingwebhookconfiguration harbor-iam-webhook installed: skipped'
check "--apply: reads with --ignore-not-found" grep -q -- '^get mutatingwebhookconfiguration harbor-iam-webhook --ignore-not-found -o jsonpath=' "$STUB_DIR/calls.log"
bundle_b64=$(openssl base64 -A -in "$a/ca-bundle.crt")
patch_call=$(grep '^patch ' "$STUB_DIR/calls.log")
check "--apply: JSON patch on MutatingWebhookConfiguration harbor-iam-webhook" \
	grep -q -- '^patch mutatingwebhookconfiguration harbor-iam-webhook --type=json -p ' <<<"$patch_call"
for i in 0 1; do
	check "--apply: caBundle set on webhook $i" \
		grep -qF -- "{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle_b64\"}" <<<"$patch_call"
done
check "--apply: patch tests each webhook's name first" \
	grep -qF -- '{"op":"test","path":"/webhooks/1/name","value":"second.harbor-iam-webhook.io"}' <<<"$patch_call"
check "--apply: server-side apply from stdin" grep -q -- '^apply --server-side --force-conflicts --field-manager=harbor-iam-webhook-gen-certs -f -$' "$STUB_DIR/calls.log"
secret=$(cat "$STUB_DIR/secret.json" 2>/dev/null)
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$secret"; }
check "--apply: Secret harbor-iam-webhook-tls in the namespace" \
	grep -q '"name":"harbor-iam-webhook-tls","namespace":"hooks-ns"' <<<"$secret"
check "--apply: Secret type kubernetes.io/tls" grep -q '"type":"kubernetes.io/tls"' <<<"$secret"
for k in tls.crt tls.key ca.crt; do
	check "--apply: Secret $k is the file" cmp -s <(field "$k" | openssl base64 -d -A) "$a/$k"
done
check "--apply: no key material on any command line" bash -c "! grep -q 'PRIVATE' '$STUB_DIR/calls.log' && ! grep -qF '$(field tls.key | cut -c1-40)' '$STUB_DIR/calls.log'"

: >"$STUB_DIR/calls.log"
rm -f "$STUB_DIR/secret.json"
STUB_MWC_MISSING=1 KUBECTL="$stub" run --out "$a" --apply
check "--apply without the manifests: fails" test "$rc" -ne 0
check "--apply without the manifests: says to install them" said 'install the manifests first'
check "--apply without the manifests: no Secret applied" test ! -e "$STUB_DIR/secret.json"

KUBECTL="$tmp/no-such-kubectl" run --out "$a" --apply
check "--apply without kubectl: fails with a message" said 'not found'

# ---- never prints key material -------------------------------------------------
# With the validating-webhook component installed, its caBundle is set too, before the Secret.
: >"$STUB_DIR/calls.log"
STUB_VHOOKS=validate.harbor-iam-webhook.io KUBECTL="$stub" run --out "$a" --namespace hooks-ns --apply
check "--apply with a ValidatingWebhookConfiguration: exit 0" test "$rc" -eq 0
calls=$(awk '{print $1 "-" $2}' "$STUB_DIR/calls.log" | paste -sd' ' -)
check "--apply with a ValidatingWebhookConfiguration: both patched before the Secret" \
	test "$calls" = "get-mutatingwebhookconfiguration patch-mutatingwebhookconfiguration get-validatingwebhookconfiguration patch-validatingwebhookconfiguration apply---server-side"
check "--apply with a ValidatingWebhookConfiguration: its caBundle" \
	grep -qF -- '{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"'"$bundle_b64"'"}' <(grep '^patch validatingwebhookconfiguration ' "$STUB_DIR/calls.log")

: >"$STUB_DIR/calls.log"
rm -f "$STUB_DIR/secret.json"
STUB_GET_FAILS=1 KUBECTL="$stub" run --out "$a" --apply
check "--apply when kubectl fails: fails" test "$rc" -ne 0
check "--apply when kubectl fails: shows kubectl's error" said 'Unauthorized'
check "--apply when kubectl fails: no Secret applied" test ! -e "$STUB_DIR/secret.json"

check "no output contains a PEM private key" bash -c "! grep -q 'PRIVATE KEY' '$all_output'"
leaked=0
while IFS= read -r keyfile; do
	while IFS= read -r line; do
		[[ $line == -----* || ${#line} -lt 16 ]] && continue
		if grep -qF -- "$line" "$all_output"; then leaked=1; fi
	done <"$keyfile"
done < <(find "$tmp" -name '*.key' -type f)
check "no output contains a line of any key file" test "$leaked" -eq 0

echo
echo "gen-certs: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
