#!/usr/bin/env bash
# gen-certs.sh: a private CA and the webhook's serving certificate, with openssl.
#
#   certs/gen-certs.sh [--out DIR] [--namespace NS] [--service NAME]
#                      [--extra-san SAN]... [--days N] [--apply]
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt, DIR/tls.key (keys 0600) and
# DIR/ca-bundle.crt (what goes into the webhook's caBundle). Idempotent:
#   - an existing CA is kept while it is valid: its key matches, it is an ECDSA
#     P-256 CA, and it outlives a serving certificate issued now by 30 days;
#   - the serving certificate is re-issued (with a new key) only when it is
#     missing, does not match its key, is not signed by the CA, its SANs differ
#     from the ones asked for, or it expires within 30 days.
# A rerun with nothing to do changes no file. When the CA is replaced while the
# old one is still valid, the old one stays in ca-bundle.crt (as
# ca-previous.crt) until it expires, so a caBundle update never breaks
# verification of a certificate that pods still serve.
#
# --apply (current kubectl context; set KUBECTL to use another command, e.g.
# KUBECTL="kubectl --context prod"): first sets caBundle on every webhook of the
# MutatingWebhookConfiguration harbor-iam-webhook (and of the
# ValidatingWebhookConfiguration of that name, when installed), then
# creates/updates the Secret harbor-iam-webhook-tls (type kubernetes.io/tls:
# tls.crt, tls.key, ca.crt) in NS by server-side apply, the manifest passed on
# stdin.
#
# Key material is never printed, nor passed on a command line.
set -euo pipefail
umask 077

readonly SECRET_NAME=harbor-iam-webhook-tls
readonly WEBHOOK_CONFIG_NAME=harbor-iam-webhook
readonly FIELD_MANAGER=harbor-iam-webhook-gen-certs
readonly CA_DAYS=3650
readonly MAX_DAYS=1825
readonly RENEW_DAYS=30

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="$script_dir/out"
namespace=harbor-iam-webhook
service=harbor-iam-webhook
days=365
apply=0
extra_sans=()

log() { printf 'gen-certs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage_error() {
	log "$*"
	log "usage: $0 [--out DIR] [--namespace NS] [--service NAME] [--extra-san SAN]... [--days N] [--apply]"
	exit 2
}

usage() {
	cat <<'EOF'
usage: gen-certs.sh [--out DIR] [--namespace NS] [--service NAME]
                    [--extra-san SAN]... [--days N] [--apply]

Makes (or keeps) a private ECDSA P-256 CA and a serving certificate for the
harbor-iam-webhook Service, in DIR (default: certs/out next to this script).

  --out DIR         where ca.crt, ca.key, tls.crt, tls.key, ca-bundle.crt go
  --namespace NS    the webhook's namespace       (default harbor-iam-webhook)
  --service NAME    the webhook's Service name    (default harbor-iam-webhook)
  --extra-san SAN   another subjectAltName, DNS:name or IP:address; repeatable
  --days N          serving certificate lifetime in days, 1..1825 (default 365)
  --apply           with the current kubectl context: set the caBundle of the
                    MutatingWebhookConfiguration harbor-iam-webhook (and of
                    the ValidatingWebhookConfiguration of that name, if any)
                    and create/update the Secret harbor-iam-webhook-tls in NS
  -h, --help        this text

The serving certificate is re-issued only when missing, mismatched, not signed
by the CA, with other SANs, or expiring within 30 days. Run it again at any
time (e.g. monthly, from CI or cron, with --apply) to renew.
EOF
}

# ---- arguments ---------------------------------------------------------------

need_value() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
	case $1 in
	--out) need_value "$@"; out_dir=$2; shift 2 ;;
	--out=*) out_dir=${1#*=}; shift ;;
	--namespace) need_value "$@"; namespace=$2; shift 2 ;;
	--namespace=*) namespace=${1#*=}; shift ;;
	--service) need_value "$@"; service=$2; shift 2 ;;
	--service=*) service=${1#*=}; shift ;;
	--extra-san) need_value "$@"; extra_sans+=("$2"); shift 2 ;;
	--extra-san=*) extra_sans+=("${1#*=}"); shift ;;
	--days) need_value "$@"; days=$2; shift 2 ;;
	--days=*) days=${1#*=}; shift ;;
	--apply) apply=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage_error "unknown argument: $1" ;;
	esac
done

dns_label='[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?'
[[ $namespace =~ ^${dns_label}$ ]] || usage_error "--namespace: not a DNS label: $namespace"
[[ $service =~ ^${dns_label}$ ]] || usage_error "--service: not a DNS label: $service"
if ! [[ $days =~ ^[0-9]+$ ]] || ((10#$days < 1 || 10#$days > MAX_DAYS)); then
	usage_error "--days: a whole number of days from 1 to $MAX_DAYS, got: $days"
fi
days=$((10#$days))
[[ -n $out_dir ]] || usage_error "--out: empty"

# normalise_san SAN -> "DNS:name" or "IP:addr" on stdout, or fail.
normalise_san() {
	local san=$1 kind value
	case $san in
	[Dd][Nn][Ss]:*) kind=DNS value=${san#*:} ;;
	[Ii][Pp]:*) kind=IP value=${san#*:} ;;
	*:*:*) kind=IP value=$san ;; # a bare IPv6 address
	*:*) return 1 ;;             # another kind (URI:, email:, ...)
	*) if [[ $san =~ ^[0-9.]+$ ]]; then kind=IP; else kind=DNS; fi; value=$san ;;
	esac
	if [[ $kind == DNS ]]; then
		value=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')
		[[ ${#value} -le 253 && $value =~ ^(\*\.)?${dns_label}(\.${dns_label})*$ ]] || return 1
	else
		[[ $value =~ ^[0-9A-Fa-f:.]+$ && $value == *[.:]* ]] || return 1
	fi
	printf '%s:%s\n' "$kind" "$value"
}

sans=(
	"DNS:$service"
	"DNS:$service.$namespace"
	"DNS:$service.$namespace.svc"
	"DNS:$service.$namespace.svc.cluster.local"
)
for san in ${extra_sans[@]+"${extra_sans[@]}"}; do
	norm=$(normalise_san "$san") || usage_error "--extra-san: expected DNS:name or IP:address, got: $san"
	sans+=("$norm")
done
# Unique, in order.
san_csv=$(printf '%s\n' "${sans[@]}" | awk '!seen[$0]++' | paste -sd, -)

# ---- tools and work space ----------------------------------------------------

command -v openssl >/dev/null 2>&1 || die "openssl not found (OpenSSL 1.1.1 or newer is needed)"

mkdir -p "$out_dir" || die "cannot create $out_dir"
out_dir=$(cd "$out_dir" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gen-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

if command -v flock >/dev/null 2>&1; then
	exec 9>"$out_dir/.lock"
	flock 9
fi

ca_crt=$out_dir/ca.crt ca_key=$out_dir/ca.key
tls_crt=$out_dir/tls.crt tls_key=$out_dir/tls.key
ca_prev=$out_dir/ca-previous.crt ca_bundle=$out_dir/ca-bundle.crt

# ---- checks ------------------------------------------------------------------

# Sorted SANs of a certificate, one per line, in openssl's notation.
cert_sans() {
	openssl x509 -in "$1" -noout -text 2>/dev/null |
		awk '/X509v3 Subject Alternative Name/ { getline; print; exit }' |
		tr ',' '\n' | sed 's/^ *//; s/ *$//' | awk 'NF' | LC_ALL=C sort -u
}

# The SANs asked for, in the same notation: openssl prints them from a
# throw-away certificate (so IPv6 and case compare the way openssl writes them).
wanted_sans() {
	[[ -s $work/probe.key ]] || new_key "$work/probe.key" || die "openssl could not make a key"
	openssl req -x509 -new -key "$work/probe.key" -out "$work/probe.crt" -days 1 \
		-subj "/CN=probe" -addext "subjectAltName=$san_csv" 2>"$work/probe.err" ||
		{ cat "$work/probe.err" >&2; die "openssl rejected the SANs: $san_csv"; }
	cert_sans "$work/probe.crt"
}

# key_matches KEY CERT: the certificate carries the key's public half.
key_matches() {
	local a b
	a=$(openssl pkey -in "$1" -pubout 2>/dev/null) || return 1
	b=$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null) || return 1
	[[ -n $a && $a == "$b" ]]
}

is_p256() { openssl x509 -in "$1" -noout -text 2>/dev/null | grep -Eq 'prime256v1|NIST CURVE: P-256'; }

# expires_within CERT DAYS: true if CERT is no longer valid in DAYS days.
expires_within() { ! openssl x509 -in "$1" -noout -checkend $(($2 * 86400)) >/dev/null 2>&1; }

ca_problem() {
	[[ -s $ca_crt ]] || { echo "no CA yet"; return; }
	[[ -s $ca_key ]] || { echo "ca.key is missing"; return; }
	openssl x509 -in "$ca_crt" -noout 2>/dev/null || { echo "ca.crt is not a certificate"; return; }
	key_matches "$ca_key" "$ca_crt" || { echo "ca.key does not match ca.crt"; return; }
	openssl x509 -in "$ca_crt" -noout -text | grep -q 'CA:TRUE' || { echo "ca.crt is not a CA"; return; }
	is_p256 "$ca_crt" || { echo "the CA key is not ECDSA P-256"; return; }
	if expires_within "$ca_crt" $((days + RENEW_DAYS)); then
		echo "the CA expires within $((days + RENEW_DAYS)) days"
	fi
	return 0
}

tls_problem() {
	[[ -s $tls_crt ]] || { echo "no serving certificate yet"; return; }
	[[ -s $tls_key ]] || { echo "tls.key is missing"; return; }
	openssl x509 -in "$tls_crt" -noout 2>/dev/null || { echo "tls.crt is not a certificate"; return; }
	key_matches "$tls_key" "$tls_crt" || { echo "tls.key does not match tls.crt"; return; }
	openssl verify -CAfile "$ca_crt" "$tls_crt" >/dev/null 2>&1 || { echo "tls.crt is not valid under the current CA"; return; }
	is_p256 "$tls_crt" || { echo "the serving key is not ECDSA P-256"; return; }
	expires_within "$tls_crt" "$RENEW_DAYS" && { echo "it expires within $RENEW_DAYS days"; return; }
	[[ $(cert_sans "$tls_crt") == "$(wanted_sans)" ]] || { echo "its SANs differ from the ones asked for"; return; }
	return 0
}

# ---- issuing -----------------------------------------------------------------

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out "$1" 2>/dev/null; }

make_ca() {
	cat >"$work/ca.cnf" <<-'EOF'
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		[v3_ca]
		basicConstraints = critical, CA:TRUE, pathlen:0
		keyUsage = critical, keyCertSign, cRLSign
		subjectKeyIdentifier = hash
	EOF
	new_key "$work/ca.key" || die "openssl could not make the CA key"
	openssl req -x509 -new -sha256 -key "$work/ca.key" -days "$CA_DAYS" \
		-subj "/CN=harbor-iam-webhook CA $(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		-config "$work/ca.cnf" -extensions v3_ca -out "$work/ca.crt" 2>"$work/err" ||
		{ cat "$work/err" >&2; die "openssl could not make the CA certificate"; }
	# Keep the old CA in the bundle while certificates it signed may still be served.
	if [[ -s $ca_crt ]] && openssl x509 -in "$ca_crt" -noout -checkend 0 >/dev/null 2>&1; then
		cp "$ca_crt" "$ca_prev.new" && chmod 0644 "$ca_prev.new" && mv -f "$ca_prev.new" "$ca_prev"
	fi
	install_file "$work/ca.key" "$ca_key" 0600
	install_file "$work/ca.crt" "$ca_crt" 0644
}

make_tls() {
	new_key "$work/tls.key" || die "openssl could not make the serving key"
	openssl req -new -sha256 -key "$work/tls.key" -subj "/CN=$service.$namespace.svc" \
		-out "$work/tls.csr" 2>"$work/err" || { cat "$work/err" >&2; die "openssl could not make the CSR"; }
	cat >"$work/tls.ext" <<-EOF
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature
		extendedKeyUsage = serverAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
		subjectAltName = $san_csv
	EOF
	openssl x509 -req -sha256 -in "$work/tls.csr" -CA "$ca_crt" -CAkey "$ca_key" \
		-set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$work/tls.ext" \
		-out "$work/tls.crt" 2>"$work/err" || { cat "$work/err" >&2; die "openssl could not sign the serving certificate"; }
	openssl verify -CAfile "$ca_crt" "$work/tls.crt" >/dev/null 2>&1 || die "the new serving certificate does not verify"
	install_file "$work/tls.key" "$tls_key" 0600
	install_file "$work/tls.crt" "$tls_crt" 0644
}

# install_file SRC DEST MODE: atomic replace within DEST's directory.
install_file() {
	if ! { cp "$1" "$2.new" && chmod "$3" "$2.new" && mv -f "$2.new" "$2"; }; then
		die "cannot write $2"
	fi
}

# ---- main --------------------------------------------------------------------

ca_changed=0 tls_changed=0
reason=$(ca_problem) || die "cannot check the CA"
if [[ -n $reason ]]; then
	log "making a new CA ($reason)"
	make_ca
	ca_changed=1
else
	log "keeping the CA ($(openssl x509 -in "$ca_crt" -noout -enddate | sed 's/notAfter=/valid until /'))"
fi

reason=$(tls_problem) || die "cannot check the serving certificate"
if [[ -n $reason ]]; then
	log "issuing the serving certificate ($reason)"
	make_tls
	tls_changed=1
else
	log "keeping the serving certificate (nothing to renew)"
fi
chmod 0600 "$ca_key" "$tls_key"

# caBundle: the current CA, plus the previous one while it is still valid.
if [[ -s $ca_prev ]] && ! openssl x509 -in "$ca_prev" -noout -checkend 0 >/dev/null 2>&1; then
	log "dropping the expired previous CA from the bundle"
	rm -f "$ca_prev"
fi
cat "$ca_crt" >"$work/ca-bundle.crt"
[[ -s $ca_prev ]] && cat "$ca_prev" >>"$work/ca-bundle.crt"
if ! cmp -s "$work/ca-bundle.crt" "$ca_bundle" 2>/dev/null; then
	install_file "$work/ca-bundle.crt" "$ca_bundle" 0644
fi

log "serving certificate: $(openssl x509 -in "$tls_crt" -noout -enddate | sed 's/notAfter=/valid until /')"
log "SANs: $(cert_sans "$tls_crt" | paste -sd, - | sed 's/,/, /g')"
log "files in $out_dir"

# ---- --apply -----------------------------------------------------------------

[[ $apply == 1 ]] || exit 0

read -r -a kubectl_cmd <<<"${KUBECTL:-kubectl}"
[[ ${#kubectl_cmd[@]} -gt 0 ]] || die "KUBECTL is empty"
command -v "${kubectl_cmd[0]}" >/dev/null 2>&1 || die "${kubectl_cmd[0]} not found (needed for --apply)"
kc() { "${kubectl_cmd[@]}" "$@"; }

b64() { openssl base64 -A -in "$1"; }

# 1. caBundles first: from then on the API server trusts the (new) CA, while
#    pods may still serve a certificate from before (covered by the bundle).
#    The MutatingWebhookConfiguration must exist; the ValidatingWebhookConfiguration
#    (components/validating-webhook) is patched when it is installed.
bundle=$(b64 "$ca_bundle")
set_ca_bundle() { # set_ca_bundle RESOURCE REQUIRED
	local resource=$1 required=$2 hooks hook patch='' i=0
	hooks=$(kc get "$resource" "$WEBHOOK_CONFIG_NAME" --ignore-not-found \
		-o jsonpath='{range .webhooks[*]}{.name}{"\n"}{end}' 2>"$work/err") || {
		cat "$work/err" >&2
		die "cannot read $resource $WEBHOOK_CONFIG_NAME"
	}
	while IFS= read -r hook; do
		[[ -n $hook ]] || continue
		[[ $hook =~ ^[A-Za-z0-9._-]+$ ]] || die "unexpected webhook name in $resource $WEBHOOK_CONFIG_NAME: $hook"
		patch+="${patch:+,}{\"op\":\"test\",\"path\":\"/webhooks/$i/name\",\"value\":\"$hook\"}"
		patch+=",{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle\"}"
		i=$((i + 1))
	done <<<"$hooks"
	if [[ $i -eq 0 ]]; then
		[[ $required == 1 ]] &&
			die "no $resource $WEBHOOK_CONFIG_NAME (or it has no webhooks): install the manifests first (kubectl apply -k manifests/)"
		log "no $resource $WEBHOOK_CONFIG_NAME installed: skipped"
		return 0
	fi
	kc patch "$resource" "$WEBHOOK_CONFIG_NAME" --type=json -p "[$patch]" >&2 ||
		die "cannot set the caBundle of $resource $WEBHOOK_CONFIG_NAME"
	log "caBundle set on $i webhook(s) of $resource $WEBHOOK_CONFIG_NAME"
}
set_ca_bundle mutatingwebhookconfiguration 1
set_ca_bundle validatingwebhookconfiguration 0

# 2. The Secret, by server-side apply from stdin (no key on a command line, and
#    no copy of it in a last-applied annotation).
{
	printf '{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/tls",'
	printf '"metadata":{"name":"%s","namespace":"%s",' "$SECRET_NAME" "$namespace"
	printf '"labels":{"app.kubernetes.io/name":"harbor-iam-webhook","app.kubernetes.io/part-of":"harbor-iam-webhook"}},'
	printf '"data":{"tls.crt":"%s","tls.key":"%s","ca.crt":"%s"}}\n' "$(b64 "$tls_crt")" "$(b64 "$tls_key")" "$(b64 "$ca_crt")"
} | kc apply --server-side --force-conflicts --field-manager="$FIELD_MANAGER" -f - >&2 ||
	die "cannot apply Secret $namespace/$SECRET_NAME (does namespace $namespace exist? install the manifests first)"
log "Secret $namespace/$SECRET_NAME applied"
if [[ $tls_changed == 1 || $ca_changed == 1 ]]; then
	log "new certificate: the kubelet updates the mounted Secret files within about a minute and the webhook re-reads them (no restart needed)"
fi
