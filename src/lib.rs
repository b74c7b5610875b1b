//! harbor-iam-webhook: a mutating admission webhook that switches Harbor's database clients
//! to AWS RDS IAM authentication.

pub mod admission;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod consts;
pub mod facts;
pub mod metrics;
pub mod mutate;
pub mod server;
pub mod telemetry;
pub mod tls;

use anyhow::Context as _;
use tracing::{info, warn};

use crate::config::ServeArgs;
use crate::facts::Facts;

/// The audit as a metric: every `interval`, count the pods `harbor-iam-webhook audit` would list.
async fn audit_loop(
    client: kube::Client,
    state: std::sync::Arc<server::AppState>,
    interval: std::time::Duration,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        match audit::run(&client, &[], &state.config).await {
            Ok((namespaces, findings)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                state.metrics.audit(findings.len(), now as i64);
                info!(
                    namespaces = namespaces.len(),
                    findings = findings.len(),
                    "background audit"
                );
            }
            Err(err) => warn!(error = %err, "background audit failed"),
        }
    }
}

/// The cluster facts source `--cluster-facts` asks for, if any.
async fn start_facts_cache(
    args: &ServeArgs,
    lookups: metrics::LookupCounters,
) -> anyhow::Result<Option<std::sync::Arc<cluster::FactsCache>>> {
    let wanted = match args.cluster_facts {
        config::FactsMode::Off => false,
        config::FactsMode::On => true,
        config::FactsMode::Auto => cluster::cluster_available(),
    };
    if !wanted {
        info!("cluster facts off: ServiceAccount and ConfigMap checks become warnings");
        return Ok(None);
    }
    let client = match cluster::client().await {
        Ok(c) => c,
        Err(err) if args.cluster_facts == config::FactsMode::Auto => {
            warn!(error = %err, "cluster facts: no usable kubeconfig or in-cluster config; continuing without");
            return Ok(None);
        }
        Err(err) => {
            return Err(anyhow::anyhow!(
                "--cluster-facts on: cannot build a Kubernetes client: {err}"
            ));
        }
    };
    let ttl = std::time::Duration::from_secs(args.facts_ttl_seconds.max(1));
    info!(
        ttl_seconds = ttl.as_secs(),
        "cluster facts on: ServiceAccounts and ConfigMaps looked up by name"
    );
    Ok(Some(cluster::FactsCache::new(
        client,
        ttl,
        std::time::Duration::from_secs(2),
        lookups,
    )))
}

/// `harbor-iam-webhook serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.engine.to_config()?;
    let options = args.serve_options();
    let (resolver, files) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut files = tls::CertFiles::new(cert.clone(), key.clone());
            (tls::CertResolver::new(files.load()?), Some(files))
        }
        _ => {
            let dev = tls::dev_certificate(&["localhost", "127.0.0.1", "::1"])?;
            tls::write_ca(&args.dev_ca_out, &dev.ca_pem)?;
            info!(
                ca = %args.dev_ca_out.display(),
                "no --tls-cert/--tls-key: serving a generated development certificate for localhost; trust its CA from this file"
            );
            (tls::CertResolver::new(dev.identity.certified_key()?), None)
        }
    };
    let tls_config = tls::server_config(resolver.clone())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(
        region = %config.region,
        service_account = %config.service_account,
        strict_images = config.strict_images,
        "configuration"
    );
    let state = server::AppState::new(config, Facts::default(), &options.limits);
    if let Some(cluster) = start_facts_cache(&args, state.metrics.cluster_lookups()).await? {
        state.set_facts_cache(cluster.clone());
        tokio::spawn(cluster.clone().wait_until_reachable());
        if args.audit_interval_seconds > 0 {
            let interval = std::time::Duration::from_secs(args.audit_interval_seconds);
            tokio::spawn(audit_loop(cluster.client(), state.clone(), interval));
        }
    }
    let info = tls::cert_info(&resolver.current());
    if let Some(i) = &info {
        info!(serial = %i.serial, subject = %i.subject, expires = %i.expires, "serving certificate");
    }
    state.metrics.certificate(info.map(|i| i.not_after), None);
    if let Some(files) = files {
        let (state, resolver) = (state.clone(), resolver.clone());
        let interval = std::time::Duration::from_secs(args.tls_reload_interval_seconds.max(1));
        tokio::spawn(tls::watch_files(
            files,
            resolver,
            interval,
            move |outcome| match outcome {
                tls::Reload::Reloaded(info) => {
                    if let Some(i) = info {
                        info!(serial = %i.serial, subject = %i.subject, expires = %i.expires, "serving certificate reloaded");
                    }
                    state
                        .metrics
                        .certificate(info.as_ref().map(|i| i.not_after), Some(true));
                }
                tls::Reload::Failed(err) => {
                    warn!(error = %err, "new certificate files are not usable; keeping the current certificate");
                    state.metrics.certificate(None, Some(false));
                }
                tls::Reload::Unchanged => {}
            },
        ));
    }
    if let Some(addr) = args.metrics_listen.0 {
        // Metrics are auxiliary: a port clash must not stop admission.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                info!(addr = %l.local_addr()?, "serving metrics over plain HTTP at /metrics");
                let app = server::metrics_router(state.clone());
                tokio::spawn(async move { axum::serve(l, app).await });
            }
            Err(err) => warn!(%addr, error = %err, "cannot serve metrics; continuing without them"),
        }
    }
    let app = server::router(state.clone());
    server::serve(
        listener,
        tls_config,
        app,
        state,
        options,
        server::shutdown_signal(),
    )
    .await?;
    info!("stopped");
    Ok(())
}
pub mod cluster;
