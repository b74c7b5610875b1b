//! Reading the cluster for `check`: get, list and server-side dry-run create, nothing else.
//! A failed read becomes a check that says what could not be read (for a permission error,
//! which verb on which resource), and the run goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;

use http_body_util::BodyExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::learn::{self, Learned};
use super::{
    Check, MUTATING_WEBHOOK, Report, Status, WebhookRef, Workload, api_failure, cert,
    dry_run_blockers, judge_configuration, judge_dry_run, judge_dry_run_error, judge_endpoints,
    judge_namespace, judge_pods, judge_secret, judge_service_account, no_configuration,
    password_sources, ready_in_endpoints, ready_in_slices, webhooks_of,
};
use crate::consts::EKS_ROLE_ARN_ANNOTATION;
use crate::mutate::{Component, MutateConfig, Target};

/// A client from `--kubeconfig` / `--context`, else as kubectl would find one.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client, String> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no usable kubeconfig or in-cluster config: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// The plural resource name for messages (`deployments.apps`).
fn resource<K: Resource<DynamicType = ()>>() -> String {
    let group = K::group(&());
    if group.is_empty() {
        K::plural(&()).into_owned()
    } else {
        format!("{}.{group}", K::plural(&()))
    }
}

async fn list_cluster<K>(client: &Client, name: &str) -> Result<Vec<K>, Check>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope> + Clone + DeserializeOwned + Debug,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| api_failure(name, "list", &resource::<K>(), None, &e))
}

async fn list_ns<K>(client: &Client, ns: &str, name: &str, lp: &ListParams) -> Result<Vec<K>, Check>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(lp)
        .await
        .map(|l| l.items)
        .map_err(|e| api_failure(name, "list", &resource::<K>(), Some(ns), &e))
}

async fn get_ns<K>(client: &Client, ns: &str, object: &str, name: &str) -> Result<Option<K>, Check>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(object)
        .await
        .map_err(|e| api_failure(name, "get", &resource::<K>(), Some(ns), &e))
}

/// `kubectl create --dry-run=server` of a pod: the admitted pod and the warnings the API
/// server passed on (the webhooks' among them).
async fn dry_run(client: &Client, ns: &str, pod: &Pod) -> Result<(Pod, Vec<String>), kube::Error> {
    let body = serde_json::to_vec(pod).map_err(kube::Error::SerdeError)?;
    let pp = PostParams {
        dry_run: true,
        field_manager: Some("harbor-iam-webhook-check".into()),
    };
    let req = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
        .create(&pp, body)
        .map_err(kube::Error::BuildRequest)?;
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let warnings = res
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let s = serde_json::from_slice::<kube::core::Status>(&bytes).unwrap_or_else(|_| {
            kube::core::Status::failure(String::from_utf8_lossy(&bytes).trim(), "")
                .with_code(status.as_u16())
        });
        return Err(kube::Error::Api(Box::new(s)));
    }
    let pod = serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
    Ok((pod, warnings))
}

/// The text of a `Warning: 299 - "text"` header.
fn warning_text(header: &str) -> String {
    let rest = header.splitn(3, ' ').nth(2).unwrap_or(header).trim();
    match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => rest.to_owned(),
    }
}

/// Where the webhook runs, as far as its configuration and Service tell.
struct WebhookSite {
    namespace: String,
    deployment: Option<Deployment>,
    learned: Option<Learned>,
}

/// Every check, in order. Never fails: what can't be read becomes a failing check.
pub async fn run(client: &Client, namespace: &str, now: i64) -> Report {
    let mut r = Report::default();

    // 1. The webhook configuration, its Service, the Deployment behind it, the certificate.
    let mutating =
        list_cluster::<MutatingWebhookConfiguration>(client, "webhook configuration").await;
    let validating =
        list_cluster::<ValidatingWebhookConfiguration>(client, "webhook configuration").await;
    let webhooks = webhooks_of(
        mutating.as_deref().unwrap_or_default(),
        validating.as_deref().unwrap_or_default(),
    );
    for c in [mutating.as_ref().err(), validating.as_ref().err()]
        .into_iter()
        .flatten()
    {
        r.push(c.clone());
    }
    let ours: Vec<&WebhookRef> = webhooks.iter().filter(|w| w.is_ours()).collect();
    let main = ours.iter().copied().find(|w| w.name == MUTATING_WEBHOOK);
    if main.is_none() && mutating.is_ok() {
        r.push(no_configuration());
    }
    for w in &ours {
        r.push(judge_configuration(w));
    }
    let site = match main {
        Some(w) => webhook_site(client, w, now, &mut r).await,
        None => None,
    };
    let config = site
        .as_ref()
        .and_then(|s| s.learned.as_ref())
        .map(|l| l.config.clone())
        .unwrap_or_else(|| MutateConfig::new(""));

    // 2. The namespace.
    let ns = get_cluster_namespace(client, namespace).await;
    let ns_labels = match &ns {
        Ok(n) => {
            r.push(judge_namespace(namespace, n.as_ref(), main));
            let mut l = n
                .as_ref()
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            l.entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| namespace.to_owned());
            l
        }
        Err(c) => {
            r.push(c.clone());
            BTreeMap::new()
        }
    };

    // 3. The ServiceAccounts DB pods are switched to.
    let mut components = vec![
        Component::Core,
        Component::Jobservice,
        Component::Exporter,
        Component::Migrator,
    ];
    if config.registry_s3_irsa {
        components.push(Component::Registry);
    }
    let targets: BTreeSet<String> = components
        .iter()
        .map(|c| config.service_account_for(*c).to_owned())
        .collect();
    let mut with_role: BTreeSet<String> = BTreeSet::new();
    for name in &targets {
        match get_ns::<ServiceAccount>(
            client,
            namespace,
            name,
            &format!("ServiceAccount {namespace}/{name}"),
        )
        .await
        {
            Ok(sa) => {
                if has_role(sa.as_ref()) {
                    with_role.insert(name.clone());
                }
                r.push(judge_service_account(
                    namespace,
                    name,
                    sa.as_ref(),
                    config.identity_mode,
                ));
            }
            Err(c) => r.push(c),
        }
    }

    // 4. The proof: a server-side dry run of every Harbor workload's pod.
    let workloads = harbor_workloads(client, namespace, &config, &mut r).await;
    for sa in workloads
        .iter()
        .filter_map(|w| w.template.spec.as_ref()?.service_account_name.clone())
        .collect::<BTreeSet<_>>()
    {
        if with_role.contains(&sa) || targets.contains(&sa) {
            continue;
        }
        if let Ok(found) = get_ns::<ServiceAccount>(client, namespace, &sa, "").await
            && has_role(found.as_ref())
        {
            with_role.insert(sa);
        }
    }
    for c in dry_run_blockers(&webhooks, &ns_labels) {
        r.push(c);
    }
    let down_hint = match &site {
        Some(s) => match s.deployment.as_ref().and_then(|d| d.metadata.name.clone()) {
            Some(d) => format!(
                "kubectl -n {0} get pods; kubectl -n {0} rollout status deployment/{d}",
                s.namespace
            ),
            None => format!("kubectl -n {} get pods", s.namespace),
        },
        None => "kubectl get mutatingwebhookconfigurations".into(),
    };
    let mut proof_failed = false;
    if workloads.is_empty() {
        r.push(Check::warn(
            "dry run",
            format!("no Harbor Deployment, StatefulSet or Job in namespace {namespace}: nothing to prove"),
            "install Harbor there, or pass its namespace with -n",
        ));
    }
    for w in &workloads {
        let target = w.target(&config);
        let check = match dry_run(client, namespace, &w.pod(namespace)).await {
            Ok((pod, warnings)) => judge_dry_run(w, &target, &pod, &warnings, &config, &|sa| {
                with_role.contains(sa)
            }),
            Err(kube::Error::Api(s)) if super::is_rbac_denial(&s) => api_failure(
                &format!("dry run {}", w.subject()),
                "create",
                "pods (dry run)",
                Some(namespace),
                &kube::Error::Api(s),
            ),
            Err(kube::Error::Api(s)) => judge_dry_run_error(w, &down_hint, &s.message),
            Err(e) => Check::fail(
                format!("dry run {}", w.subject()),
                format!("cannot run: {e}"),
                "",
            ),
        };
        // Only a proof that passed lets the password go (a warning means not proven).
        proof_failed |= check.status != Status::Ok;
        r.push(check);
    }

    // 5. Running DB pods the webhook did not inject.
    let not_injected =
        match list_ns::<Pod>(client, namespace, "running pods", &ListParams::default()).await {
            Ok(pods) => {
                let (checks, n) = judge_pods(namespace, &pods, &config);
                for c in checks {
                    r.push(c);
                }
                Some(n)
            }
            Err(c) => {
                r.push(c);
                None
            }
        };

    // 6. Once every DB pod is injected: Secrets that still hold a password.
    let sources = password_sources(&workloads, &config);
    if not_injected != Some(0) || proof_failed {
        r.push(Check::ok(
            "database password",
            "kept in Harbor's Secrets for now: remove it only once every DB pod is injected and the dry runs pass",
        ));
    } else if sources.is_empty() {
        r.push(Check::ok(
            "database password",
            "no Secret hands Harbor's DB pods a password",
        ));
    } else {
        let mut clean = Vec::new();
        for (name, source) in &sources {
            match get_ns::<Secret>(
                client,
                namespace,
                name,
                &format!("Secret {namespace}/{name}"),
            )
            .await
            {
                Ok(Some(s)) => match judge_secret(namespace, name, source, &s) {
                    Some(c) => r.push(c),
                    None => clean.push(name.clone()),
                },
                Ok(None) => clean.push(name.clone()),
                Err(c) => r.push(c),
            }
        }
        if clean.len() == sources.len() {
            r.push(Check::ok(
                "database password",
                format!("gone from Harbor's Secrets ({})", clean.join(", ")),
            ));
        }
    }
    r
}

async fn get_cluster_namespace(client: &Client, name: &str) -> Result<Option<Namespace>, Check> {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|e| api_failure(&format!("namespace {name}"), "get", "namespaces", None, &e))
}

fn has_role(sa: Option<&ServiceAccount>) -> bool {
    sa.and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(EKS_ROLE_ARN_ANNOTATION))
        .is_some_and(|r| !r.trim().is_empty())
}

/// The webhook's Service, endpoints, Deployment (and what it configures) and certificate.
async fn webhook_site(
    client: &Client,
    w: &WebhookRef,
    now: i64,
    r: &mut Report,
) -> Option<WebhookSite> {
    let Some(svc_ref) = &w.client.service else {
        r.push(Check::warn(
            "webhook endpoints",
            format!(
                "{} calls {} directly (clientConfig.url), not a Service: endpoints, Deployment and serving certificate not checked",
                w.name,
                w.client.url.as_deref().unwrap_or("?")
            ),
            "",
        ));
        return None;
    };
    let (ns, name) = (svc_ref.namespace.clone(), svc_ref.name.clone());
    let service = match get_ns::<Service>(client, &ns, &name, "webhook endpoints").await {
        Ok(s) => s,
        Err(c) => {
            r.push(c);
            None
        }
    };
    let selector = service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let deployment = match list_ns::<Deployment>(
        client,
        &ns,
        "webhook deployment",
        &ListParams::default(),
    )
    .await
    {
        Ok(ds) => learn::deployment_for_service(&ds, &selector).cloned(),
        Err(c) => {
            r.push(c);
            None
        }
    };
    let learned = match &deployment {
        Some(d) => {
            let mut cms = BTreeMap::new();
            for cm in learn::config_map_names(d) {
                match get_ns::<ConfigMap>(client, &ns, &cm, "webhook deployment").await {
                    Ok(Some(c)) => {
                        cms.insert(cm, c.data.unwrap_or_default());
                    }
                    Ok(None) => {}
                    Err(c) => r.push(c),
                }
            }
            match learn::learn(d, &cms) {
                Ok(l) => {
                    r.push(learn::summary(d, &l));
                    Some(l)
                }
                Err(c) => {
                    r.push(c);
                    None
                }
            }
        }
        None => {
            r.push(Check::warn(
                "webhook deployment",
                format!(
                    "no Deployment in {ns} matches Service {name}'s selector: region, ServiceAccount and identity mode assumed to be the defaults"
                ),
                format!("kubectl -n {ns} get deployments"),
            ));
            None
        }
    };
    if service.is_some() {
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
        let mut ready = match list_ns::<EndpointSlice>(client, &ns, "webhook endpoints", &lp).await
        {
            Ok(slices) => Some(ready_in_slices(&slices)),
            Err(c) => {
                r.push(c);
                None
            }
        };
        if ready.unwrap_or(0) == 0 {
            #[allow(deprecated)]
            if let Ok(Some(ep)) = get_ns::<Endpoints>(client, &ns, &name, "webhook endpoints").await
            {
                ready = Some(ready.unwrap_or(0).max(ready_in_endpoints(&ep)));
            }
        }
        if let Some(n) = ready {
            let d = deployment.as_ref().and_then(|d| d.metadata.name.as_deref());
            r.push(judge_endpoints(&ns, &name, true, n, d));
        }
    } else {
        r.push(judge_endpoints(&ns, &name, false, 0, None));
    }
    // The certificate the Deployment serves, against the caBundle.
    let secret_ref = match &learned {
        Some(l) => l.tls_secret.clone(),
        None => Some(("harbor-iam-webhook-tls".into(), "tls.crt".into())),
    };
    match secret_ref {
        None => r.push(Check::fail(
            "webhook certificate",
            "the webhook serves a generated development certificate (no --tls-cert): the API server cannot verify it",
            "mount the TLS Secret and pass --tls-cert/--tls-key, as manifests/base/deployment.yaml does",
        )),
        Some((secret, key)) => match get_ns::<Secret>(client, &ns, &secret, "webhook certificate").await {
            Ok(Some(s)) => {
                let hint = renew_hint(&s, &ns, &name);
                match s.data.as_ref().and_then(|d| d.get(&key)) {
                    Some(pem) => {
                        let bundle = w.client.ca_bundle.as_ref().map(|b| b.0.clone()).unwrap_or_default();
                        let dns = format!("{name}.{ns}.svc");
                        for c in cert::judge(&bundle, &pem.0, &dns, now, &hint) {
                            r.push(c);
                        }
                    }
                    None => r.push(Check::fail(
                        "webhook certificate",
                        format!(
                            "Secret {ns}/{secret} has no key {key} (keys: {})",
                            s.data.iter().flatten().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        hint,
                    )),
                }
            }
            Ok(None) => r.push(Check::fail(
                "webhook certificate",
                format!("Secret {ns}/{secret} does not exist: the webhook pods cannot start"),
                renew_hint(&Secret::default(), &ns, &name),
            )),
            Err(c) => r.push(c),
        },
    }
    Some(WebhookSite {
        namespace: ns,
        deployment,
        learned,
    })
}

/// How to renew: cert-manager's Certificate when it made the Secret, else the script.
fn renew_hint(s: &Secret, ns: &str, service: &str) -> String {
    if let Some(cert) = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cert-manager.io/certificate-name"))
    {
        return format!("cert-manager renews it: kubectl -n {ns} describe certificate {cert}");
    }
    let mut cmd = "certs/gen-certs.sh --apply".to_owned();
    if ns != "harbor-iam-webhook" {
        cmd.push_str(&format!(" --namespace {ns}"));
    }
    if service != "harbor-iam-webhook" {
        cmd.push_str(&format!(" --service {service}"));
    }
    cmd
}

/// Harbor's Deployments, StatefulSets and Jobs (by the webhook's own Harbor labels).
async fn harbor_workloads(
    client: &Client,
    ns: &str,
    config: &MutateConfig,
    r: &mut Report,
) -> Vec<Workload> {
    let mut out = Vec::new();
    match list_ns::<Deployment>(client, ns, "dry run", &ListParams::default()).await {
        Ok(items) => out.extend(items.into_iter().filter_map(|d| {
            Some(Workload {
                kind: "deployment",
                name: d.metadata.name?,
                template: d.spec.template,
            })
        })),
        Err(c) => r.push(c),
    }
    match list_ns::<StatefulSet>(client, ns, "dry run", &ListParams::default()).await {
        Ok(items) => out.extend(items.into_iter().filter_map(|d| {
            Some(Workload {
                kind: "statefulset",
                name: d.metadata.name?,
                template: d.spec.template,
            })
        })),
        Err(c) => r.push(c),
    }
    match list_ns::<Job>(client, ns, "dry run", &ListParams::default()).await {
        Ok(items) => out.extend(items.into_iter().filter_map(|d| {
            let mut template = d.spec?.template;
            // Labels the Job controller adds for its own selector; a new pod gets new ones.
            if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                for k in [
                    "controller-uid",
                    "batch.kubernetes.io/controller-uid",
                    "job-name",
                    "batch.kubernetes.io/job-name",
                ] {
                    labels.remove(k);
                }
            }
            Some(Workload {
                kind: "job",
                name: d.metadata.name?,
                template,
            })
        })),
        Err(c) => r.push(c),
    }
    out.retain(|w| w.target(config) != Target::NotHarbor);
    out
}

#[cfg(test)]
mod tests {
    use super::warning_text;

    #[test]
    fn warning_headers_are_unquoted() {
        assert_eq!(
            warning_text(r#"299 - "image \"x\" is not known""#),
            r#"image "x" is not known"#
        );
        assert_eq!(warning_text("299 - plain"), "plain");
    }
}
