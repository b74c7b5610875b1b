//! TLS material: PEM files, the self-signed development certificate, the rustls config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {source}")]
    ReadCertificate {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read private key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate and key do not form a usable TLS config: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot generate the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

/// A certificate chain and its key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::ReadCertificate {
                path: cert.into(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate { path: cert.into() });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
            path: key.into(),
            source,
        })?;
        Ok(Identity { chain, key })
    }
}

/// A throw-away CA and a serving certificate signed by it (ECDSA P-256), for running locally.
pub struct DevCertificate {
    pub identity: Identity,
    pub ca_pem: String,
}

pub fn dev_certificate(hosts: &[&str]) -> Result<DevCertificate, TlsError> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "harbor-iam-webhook development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().copied().unwrap_or("localhost"),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(DevCertificate {
        identity: Identity {
            chain: vec![cert.der().clone(), ca_cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| rcgen::Error::PemError(e.to_string()))?,
        },
        ca_pem: ca_cert.pem(),
    })
}

pub fn write_ca(path: &Path, pem: &str) -> Result<(), TlsError> {
    std::fs::write(path, pem).map_err(|source| TlsError::Write {
        path: path.into(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// The signing form rustls serves, after checking that key and certificate belong together.
    pub fn certified_key(self) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = provider().key_provider.load_private_key(self.key)?;
        let ck = CertifiedKey::new(self.chain, key);
        match ck.keys_match() {
            Ok(()) => Ok(Arc::new(ck)),
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
            // Keys whose public half can't be derived can't be checked; serve them as given.
            Err(_) => Ok(Arc::new(ck)),
        }
    }
}

/// What is worth saying about a served certificate: never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: String,
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// `not_after` as a date, for people (`Dec  7 02:27:00 2027 +00:00`).
    pub expires: String,
}

pub fn cert_info(ck: &CertifiedKey) -> Option<CertInfo> {
    let der = ck.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(CertInfo {
        serial: cert.raw_serial_as_string(),
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        expires: cert.validity().not_after.to_string(),
    })
}

/// Serves whatever certificate is current; [`watch_files`] swaps it without a restart.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(ck: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(CertResolver {
            current: ArcSwap::new(ck),
        })
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    pub fn set(&self, ck: Arc<CertifiedKey>) {
        self.current.store(ck);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 with the ring provider, ALPN h2 then http/1.1, session resumption by
/// tickets and by the server-side cache.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The outcome of one look at the certificate files.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded(Option<CertInfo>),
    /// The files changed but don't form a usable pair: the last good certificate stays.
    Failed(TlsError),
}

/// Polls certificate and key files. Kubernetes swaps Secret volumes through a `..data`
/// symlink, which file-event watches on the paths miss, so the files are read and compared.
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl CertFiles {
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        CertFiles {
            cert,
            key,
            last: None,
        }
    }

    /// Load the pair for the first time.
    pub fn load(&mut self) -> Result<Arc<CertifiedKey>, TlsError> {
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        let seen = (read(&self.cert), read(&self.key));
        let ck = Identity::from_pem_files(&self.cert, &self.key)?.certified_key()?;
        self.last = Some(seen);
        Ok(ck)
    }

    /// Re-read the files; swap the resolver's certificate when they changed and are good.
    pub fn poll(&mut self, resolver: &CertResolver) -> Reload {
        let (Ok(cert), Ok(key)) = (std::fs::read(&self.cert), std::fs::read(&self.key)) else {
            return Reload::Unchanged; // mid-swap or briefly missing: look again next time
        };
        if self
            .last
            .as_ref()
            .is_some_and(|(c, k)| *c == cert && *k == key)
        {
            return Reload::Unchanged;
        }
        let parsed =
            Identity::from_pem_files(&self.cert, &self.key).and_then(Identity::certified_key);
        // Remember the bytes either way, so a bad pair is reported once, not every poll.
        self.last = Some((cert, key));
        match parsed {
            Ok(ck) => {
                let info = cert_info(&ck);
                resolver.set(ck);
                Reload::Reloaded(info)
            }
            Err(err) => Reload::Failed(err),
        }
    }
}

/// Poll `files` every `interval` forever, reporting each change through `on_change`.
pub async fn watch_files(
    mut files: CertFiles,
    resolver: Arc<CertResolver>,
    interval: Duration,
    mut on_change: impl FnMut(&Reload),
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let outcome = files.poll(&resolver);
        if !matches!(outcome, Reload::Unchanged) {
            on_change(&outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_round_trips_through_pem_files() {
        let dev = dev_certificate(&["localhost", "127.0.0.1"]).unwrap();
        assert_eq!(dev.identity.chain.len(), 2);
        assert!(dev.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(
            &cert,
            pem_encode("CERTIFICATE", dev.identity.chain[0].as_ref()),
        )
        .unwrap();
        std::fs::write(
            &key,
            pem_encode("PRIVATE KEY", dev.identity.key.secret_der()),
        )
        .unwrap();
        let id = Identity::from_pem_files(&cert, &key).unwrap();
        let ck = id.certified_key().unwrap();
        let info = cert_info(&ck).unwrap();
        assert!(info.not_after > 1_700_000_000, "{info:?}");
        // The date a person reads, the same instant as the timestamp.
        let parsed = x509_parser::time::ASN1Time::from_timestamp(info.not_after).unwrap();
        assert_eq!(info.expires, parsed.to_string(), "{info:?}");
        assert!(info.expires.ends_with("+00:00"), "{info:?}");
        assert!(server_config(CertResolver::new(ck)).is_ok());
    }

    #[test]
    fn missing_and_empty_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = Identity::from_pem_files(&empty, &empty).err().unwrap();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = Identity::from_pem_files(&dir.path().join("nope.pem"), &empty)
            .err()
            .unwrap();
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn reload_swaps_good_pairs_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |dev: &DevCertificate| {
            std::fs::write(
                &cert,
                pem_encode("CERTIFICATE", dev.identity.chain[0].as_ref()),
            )
            .unwrap();
            std::fs::write(
                &key,
                pem_encode("PRIVATE KEY", dev.identity.key.secret_der()),
            )
            .unwrap();
        };
        let first = dev_certificate(&["localhost"]).unwrap();
        write(&first);
        let mut files = CertFiles::new(cert.clone(), key.clone());
        let resolver = CertResolver::new(files.load().unwrap());
        let serial = |r: &CertResolver| cert_info(&r.current()).unwrap().serial;
        let s1 = serial(&resolver);
        assert!(matches!(files.poll(&resolver), Reload::Unchanged));

        let second = dev_certificate(&["localhost"]).unwrap();
        write(&second);
        assert!(matches!(files.poll(&resolver), Reload::Reloaded(Some(_))));
        let s2 = serial(&resolver);
        assert_ne!(s1, s2);

        // A key that doesn't match: refused, the second certificate stays.
        let third = dev_certificate(&["localhost"]).unwrap();
        std::fs::write(
            &key,
            pem_encode("PRIVATE KEY", third.identity.key.secret_der()),
        )
        .unwrap();
        assert!(matches!(
            files.poll(&resolver),
            Reload::Failed(TlsError::KeyMismatch)
        ));
        assert_eq!(serial(&resolver), s2);
        // Garbage: refused too, reported once.
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(matches!(files.poll(&resolver), Reload::Failed(_)));
        assert!(matches!(files.poll(&resolver), Reload::Unchanged));
        assert_eq!(serial(&resolver), s2);
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            body.join("\n")
        )
    }
}
