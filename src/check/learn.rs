//! The webhook's configuration as its Deployment sets it: the container's arguments and
//! environment (literal values and ConfigMaps), read by the same flag definitions as `serve`.

use std::collections::BTreeMap;

use clap::{CommandFactory, FromArgMatches};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::Check;
use crate::config::{Cli, Command, ServeArgs};
use crate::mutate::{IdentityMode, MutateConfig};

/// What the check learned from the Deployment.
#[derive(Debug, Clone)]
pub struct Learned {
    pub config: MutateConfig,
    /// `(Secret, key)` holding the serving certificate; `None` when the webhook serves a
    /// generated development certificate.
    pub tls_secret: Option<(String, String)>,
}

/// The Deployment whose pods a Service selects.
pub fn deployment_for_service<'a>(
    deployments: &'a [Deployment],
    selector: &BTreeMap<String, String>,
) -> Option<&'a Deployment> {
    if selector.is_empty() {
        return None;
    }
    deployments.iter().find(|d| {
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref());
        selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    })
}

fn pod_spec(d: &Deployment) -> Option<&PodSpec> {
    d.spec.template.spec.as_ref()
}

/// The container that runs `serve` (else the first one).
fn webhook_container(spec: &PodSpec) -> Option<&Container> {
    spec.containers
        .iter()
        .find(|c| argv(c).iter().any(|a| a == "serve"))
        .or_else(|| spec.containers.first())
}

/// The arguments the binary gets: `command` after the program, then `args`; the image runs
/// the binary with `serve` when neither is set.
fn argv(c: &Container) -> Vec<String> {
    let mut v: Vec<String> = c.command.iter().flatten().skip(1).cloned().collect();
    v.extend(c.args.iter().flatten().cloned());
    if c.command.is_none() && v.is_empty() {
        v.push("serve".into());
    }
    v
}

/// The ConfigMaps the webhook container reads its environment from.
pub fn config_map_names(d: &Deployment) -> Vec<String> {
    let Some(c) = pod_spec(d).and_then(webhook_container) else {
        return Vec::new();
    };
    let mut names: Vec<String> = c
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.config_map_ref.as_ref().map(|r| r.name.clone()))
        .chain(c.env.iter().flatten().filter_map(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.config_map_key_ref.as_ref())
                .map(|r| r.name.clone())
        }))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The container's environment as far as literals and the given ConfigMaps tell
/// (`env` over `envFrom`, later `envFrom` entries over earlier ones).
fn environment(
    c: &Container,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for ef in c.env_from.iter().flatten() {
        if let Some(data) = ef
            .config_map_ref
            .as_ref()
            .and_then(|r| config_maps.get(&r.name))
        {
            let prefix = ef.prefix.as_deref().unwrap_or("");
            for (k, v) in data {
                env.insert(format!("{prefix}{k}"), v.clone());
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            env.insert(e.name.clone(), v.clone());
        } else if let Some(v) = e
            .value_from
            .as_ref()
            .and_then(|v| v.config_map_key_ref.as_ref())
            .and_then(|r| config_maps.get(&r.name).and_then(|d| d.get(&r.key)))
        {
            env.insert(e.name.clone(), v.clone());
        } else {
            env.remove(&e.name);
        }
    }
    env
}

/// `serve`'s flags from the arguments after `serve` and the environment, parsed by the same
/// definitions as the real command, but with the environment given rather than this process's.
fn parse_serve(args: &[String], env: &BTreeMap<String, String>) -> Result<ServeArgs, String> {
    let with_env = Cli::command();
    let serve = with_env
        .find_subcommand("serve")
        .expect("the CLI has a serve subcommand");
    let mut full: Vec<String> = vec!["harbor-iam-webhook".into(), "serve".into()];
    full.extend(args.iter().cloned());
    for arg in serve.get_arguments() {
        let (Some(name), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = name.to_str().and_then(|n| env.get(n)) else {
            continue;
        };
        let flag = format!("--{long}");
        if args
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        if arg.get_action().takes_values() {
            full.push(format!("{flag}={value}"));
        } else if !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "n" | "no" | "f" | "false" | "off"
        ) {
            full.push(flag);
        }
    }
    let without_env = Cli::command().mut_subcommand("serve", |sc| {
        let ids: Vec<String> = sc
            .get_arguments()
            .map(|a| a.get_id().as_str().to_owned())
            .collect();
        ids.into_iter()
            .fold(sc, |sc, id| sc.mut_arg(id, |a| a.env(None::<&'static str>)))
    });
    let matches = without_env
        .try_get_matches_from(full)
        .map_err(|e| e.to_string().lines().next().unwrap_or("").to_owned())?;
    match Cli::from_arg_matches(&matches)
        .map_err(|e| e.to_string())?
        .command
    {
        Command::Serve(a) => Ok(a),
        _ => Err("not the serve command".into()),
    }
}

/// The Secret and key behind a file path in the container.
fn secret_behind(spec: &PodSpec, c: &Container, path: &str) -> Option<(String, String)> {
    for m in c.volume_mounts.iter().flatten() {
        let key = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if path == m.mount_path => sub.to_owned(),
            Some(_) => continue,
            None => match path.strip_prefix(m.mount_path.trim_end_matches('/')) {
                Some(rest) if rest.starts_with('/') => rest[1..].to_owned(),
                _ => continue,
            },
        };
        let secret = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .and_then(|v| v.secret.as_ref())?;
        let key = secret
            .items
            .iter()
            .flatten()
            .find(|i| i.path == key)
            .map(|i| i.key.clone())
            .unwrap_or(key);
        return Some((secret.secret_name.clone()?, key));
    }
    None
}

/// Read the Deployment. `Err` is the failing check (the webhook would not start as configured).
pub fn learn(
    d: &Deployment,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Learned, Check> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let title = "webhook deployment";
    let fail =
        |m: String, hint: &str| Check::fail(title, format!("Deployment {ns}/{name}: {m}"), hint);
    let spec = pod_spec(d).ok_or_else(|| fail("has no pod template".into(), ""))?;
    let c = webhook_container(spec).ok_or_else(|| fail("has no container".into(), ""))?;
    let argv = argv(c);
    let Some(at) = argv.iter().position(|a| a == "serve") else {
        return Err(fail(
            format!("container {} does not run `serve`", c.name),
            "",
        ));
    };
    let env = environment(c, config_maps);
    let args = parse_serve(&argv[at + 1..], &env).map_err(|e| {
        fail(
            format!("the webhook would not start: {e}"),
            "fix the container's args, or the settings in manifests/base/config.env, then kubectl apply -k manifests/",
        )
    })?;
    let config = args.engine.to_config().map_err(|e| {
        fail(
            format!("the webhook would not start: {e}"),
            "set it in manifests/base/config.env (e.g. AWS_REGION=eu-west-1), then kubectl apply -k manifests/",
        )
    })?;
    let tls_secret = args.tls_cert.as_ref().map(|path| {
        secret_behind(spec, c, &path.to_string_lossy())
            .unwrap_or_else(|| ("harbor-iam-webhook-tls".into(), "tls.crt".into()))
    });
    Ok(Learned { config, tls_secret })
}

/// The line saying what was learned.
pub fn summary(d: &Deployment, l: &Learned) -> Check {
    let c = &l.config;
    let mut accounts = c.service_account.clone();
    for (comp, sa) in &c.component_service_accounts {
        accounts.push_str(&format!(", {comp}: {sa}"));
    }
    Check::ok(
        "webhook deployment",
        format!(
            "Deployment {}/{}: region {}, identity mode {}, ServiceAccount {}",
            d.metadata.namespace.as_deref().unwrap_or(""),
            d.metadata.name.as_deref().unwrap_or(""),
            c.region,
            match c.identity_mode {
                IdentityMode::Irsa => "irsa",
                IdentityMode::PodIdentity => "pod-identity",
            },
            accounts
        ),
    )
}
