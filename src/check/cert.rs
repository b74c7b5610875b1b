//! The serving certificate against the caBundle the API server trusts, the DNS name the API
//! server asks for, and the time left.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Check, EXPIRY_WARNING_DAYS};

const DAY: i64 = 86_400;

/// Judge the chain (PEM, leaf first) from the Secret against `ca_bundle` (PEM) for
/// `dns_name` (`<service>.<namespace>.svc`, what the API server verifies), at `now` (Unix
/// seconds). Returns the certificate check and the expiry check.
pub fn judge(
    ca_bundle: &[u8],
    chain_pem: &[u8],
    dns_name: &str,
    now: i64,
    renew_hint: &str,
) -> Vec<Check> {
    let title = "webhook certificate";
    let chain: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(chain_pem).collect::<Result<Vec<_>, _>>() {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                return vec![Check::fail(
                    title,
                    "the TLS Secret holds no PEM certificate",
                    renew_hint,
                )];
            }
            Err(e) => {
                return vec![Check::fail(
                    title,
                    format!("the TLS Secret's certificate is not valid PEM: {e}"),
                    renew_hint,
                )];
            }
        };
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(chain[0].as_ref()) else {
        return vec![Check::fail(
            title,
            "the TLS Secret's certificate cannot be parsed",
            renew_hint,
        )];
    };
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut checks = Vec::new();
    // The chain is judged at a moment inside the leaf's validity, so that expiry is reported
    // on its own line rather than as "does not verify".
    let at = now.clamp(not_before, not_after.max(not_before));
    let chain_verdict = verify_chain(ca_bundle, &chain, dns_name, at);
    let covered = names.iter().any(|n| name_matches(n, dns_name));
    let problem = match (&chain_verdict, covered) {
        (Err(e), _) => Some(e.clone()),
        (Ok(()), false) => Some(format!(
            "the certificate does not cover {dns_name}, the name the API server verifies (it has: {})",
            if names.is_empty() {
                "no DNS names".to_owned()
            } else {
                names.join(", ")
            }
        )),
        (Ok(()), true) => None,
    };
    checks.push(match problem {
        Some(p) => Check::fail(title, p, renew_hint),
        None => Check::ok(
            title,
            format!("the caBundle verifies the serving certificate for {dns_name}"),
        ),
    });
    let left = not_after - now;
    let until = format_time(not_after);
    checks.push(if now < not_before {
        Check::fail(
            "certificate expiry",
            format!("not valid before {}", format_time(not_before)),
            renew_hint,
        )
    } else if left <= 0 {
        Check::fail(
            "certificate expiry",
            format!("expired on {until}"),
            renew_hint,
        )
    } else if left < EXPIRY_WARNING_DAYS * DAY {
        Check::warn(
            "certificate expiry",
            format!(
                "expires on {until}, in {} day(s) (less than {EXPIRY_WARNING_DAYS})",
                left / DAY
            ),
            renew_hint,
        )
    } else {
        Check::ok(
            "certificate expiry",
            format!("valid until {until} ({} days)", left / DAY),
        )
    });
    checks
}

fn verify_chain(
    ca_bundle: &[u8],
    chain: &[CertificateDer<'static>],
    dns_name: &str,
    at: i64,
) -> Result<(), String> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_bundle)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the caBundle is not valid PEM: {e}"))?;
    if roots.is_empty() {
        return Err(
            "the caBundle is empty: the API server cannot verify the webhook (TLS fails)".into(),
        );
    }
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(roots);
    if added == 0 {
        return Err("the caBundle holds no usable CA certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| format!("the caBundle cannot be used: {e}"))?;
    let name = ServerName::try_from(dns_name.to_owned())
        .map_err(|e| format!("{dns_name} is not a DNS name: {e}"))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64));
    match verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], time) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => Ok(()), // names are judged separately, with the list of what the cert has
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        )) => Err(
            "the caBundle does not verify the serving certificate in the TLS Secret (signed by another CA): the API server's TLS handshake with the webhook fails".into(),
        ),
        Err(e) => Err(format!(
            "the caBundle does not verify the serving certificate: {e}"
        )),
    }
}

/// A SAN covers a name exactly or by a leftmost `*` label.
fn name_matches(san: &str, name: &str) -> bool {
    let san = san.trim_end_matches('.').to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    match san.strip_prefix("*.") {
        Some(rest) => name.split_once('.').is_some_and(|(_, tail)| tail == rest),
        None => san == name,
    }
}

/// `2026-12-07 01:49 UTC`.
fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(cn: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(ca: &Ca, names: &[&str], days: i64, now: i64) -> String {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(now - DAY).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(now + days * DAY).unwrap();
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &ca.issuer).unwrap().pem()
    }

    const NAME: &str = "harbor-iam-webhook.harbor-iam-webhook.svc";
    const NOW: i64 = 1_796_000_000;

    fn statuses(c: &[Check]) -> Vec<Status> {
        c.iter().map(|c| c.status).collect()
    }

    #[test]
    fn a_good_certificate_passes_both() {
        let a = ca("a");
        let c = judge(
            a.pem.as_bytes(),
            leaf(&a, &[NAME], 365, NOW).as_bytes(),
            NAME,
            NOW,
            "fix",
        );
        assert_eq!(statuses(&c), [Status::Ok, Status::Ok], "{c:?}");
        assert!(c[1].message.contains("365 days"), "{}", c[1].message);
    }

    #[test]
    fn another_ca_fails_verification() {
        let (a, b) = (ca("a"), ca("b"));
        let c = judge(
            b.pem.as_bytes(),
            leaf(&a, &[NAME], 365, NOW).as_bytes(),
            NAME,
            NOW,
            "fix",
        );
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].message.contains("does not verify"), "{}", c[0].message);
        assert_eq!(c[0].hint, "fix");
        let empty = judge(
            b"",
            leaf(&a, &[NAME], 365, NOW).as_bytes(),
            NAME,
            NOW,
            "fix",
        );
        assert!(empty[0].message.contains("caBundle is empty"));
    }

    #[test]
    fn names_must_cover_the_service() {
        let a = ca("a");
        let c = judge(
            a.pem.as_bytes(),
            leaf(&a, &["other.example.com"], 365, NOW).as_bytes(),
            NAME,
            NOW,
            "fix",
        );
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].message.contains("does not cover"), "{}", c[0].message);
        assert!(c[0].message.contains("other.example.com"));
        let wild = judge(
            a.pem.as_bytes(),
            leaf(&a, &["*.harbor-iam-webhook.svc"], 365, NOW).as_bytes(),
            NAME,
            NOW,
            "fix",
        );
        assert_eq!(wild[0].status, Status::Ok, "{wild:?}");
    }

    #[test]
    fn expiry_warns_within_30_days_and_fails_after() {
        let a = ca("a");
        let soon = judge(
            a.pem.as_bytes(),
            leaf(&a, &[NAME], 10, NOW).as_bytes(),
            NAME,
            NOW,
            "fix",
        );
        assert_eq!(statuses(&soon), [Status::Ok, Status::Warn], "{soon:?}");
        assert!(
            soon[1].message.contains("in 10 day(s)"),
            "{}",
            soon[1].message
        );
        let past = judge(
            a.pem.as_bytes(),
            leaf(&a, &[NAME], 10, NOW).as_bytes(),
            NAME,
            NOW + 11 * DAY,
            "fix",
        );
        assert_eq!(statuses(&past), [Status::Ok, Status::Fail], "{past:?}");
        assert!(past[1].message.starts_with("expired on"));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_time(1_796_000_000), "2026-11-30 00:53 UTC");
    }
}
