//! harbor-iam-webhook: a mutating admission webhook that switches Harbor's database clients
//! to AWS RDS IAM authentication.

pub mod admission;
pub mod cli;
pub mod config;
pub mod consts;
pub mod facts;
pub mod mutate;
pub mod server;
pub mod telemetry;
pub mod tls;

use anyhow::Context as _;
use tracing::info;

use crate::config::ServeArgs;
use crate::facts::Facts;

/// `harbor-iam-webhook serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.engine.to_config()?;
    let limits = args.limits();
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => tls::Identity::from_pem_files(cert, key)?,
        _ => {
            let dev = tls::dev_certificate(&["localhost", "127.0.0.1", "::1"])?;
            tls::write_ca(&args.dev_ca_out, &dev.ca_pem)?;
            info!(
                ca = %args.dev_ca_out.display(),
                "no --tls-cert/--tls-key: serving a generated development certificate for localhost; trust its CA from this file"
            );
            dev.identity
        }
    };
    let tls_config = tls::server_config(identity)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(
        region = %config.region,
        service_account = %config.service_account,
        strict_images = config.strict_images,
        "configuration"
    );
    let state = server::AppState::new(config, Facts::default(), &limits);
    let app = server::router(state.clone(), &limits);
    server::serve(
        listener,
        tls_config,
        app,
        state,
        limits,
        server::shutdown_signal(),
    )
    .await?;
    info!("stopped");
    Ok(())
}
