//! Facts from the cluster: the ServiceAccounts and ConfigMaps a Harbor pod refers to, looked up
//! by name in the pod's namespace on a miss and kept for a short TTL. Nothing is listed or
//! watched, so the webhook reads only objects that Harbor pods in opted-in namespaces name, with
//! `get` permission and nothing more. A cached answer is served at once (a stale one is
//! refreshed in the background); only a miss waits for the API server, under a timeout. An
//! answer that would deny a pod (no such ServiceAccount, no role) is never served from the
//! cache, so a fix takes effect on the next try.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::facts::Facts;
use crate::facts::Needs;
use crate::metrics::{LookupCounters, LookupLabels};

/// `None`: the object does not exist.
type Value = Option<BTreeMap<String, String>>;
type Key = (String, String);

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    fetched: Instant,
    refreshing: bool,
}

#[derive(Debug, Default)]
struct Cache(Mutex<HashMap<Key, Entry>>);

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the lock can't leave the map inconsistent (single inserts).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ServiceAccount,
    ConfigMap,
}

pub struct FactsCache {
    client: Client,
    ttl: Duration,
    timeout: Duration,
    service_accounts: Cache,
    config_maps: Cache,
    reachable: AtomicBool,
    lookups: LookupCounters,
}

impl FactsCache {
    /// `lookups` counts every lookup at admission by kind and source (cache, api, failed).
    pub fn new(
        client: Client,
        ttl: Duration,
        timeout: Duration,
        lookups: LookupCounters,
    ) -> Arc<Self> {
        Arc::new(FactsCache {
            client,
            ttl,
            timeout,
            service_accounts: Cache::default(),
            config_maps: Cache::default(),
            reachable: AtomicBool::new(false),
            lookups,
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// True once the API server has answered (readiness waits for it).
    pub fn is_synced(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// Retry until the API server answers; then readiness may turn true.
    pub async fn wait_until_reachable(self: Arc<Self>) {
        let mut delay = Duration::from_millis(200);
        loop {
            match tokio::time::timeout(self.timeout, self.client.apiserver_version()).await {
                Ok(Ok(v)) => {
                    info!(version = %v.git_version, "cluster facts: API server reachable");
                    self.reachable.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(Err(err)) => warn!(error = %err, "cluster facts: API server not reachable yet"),
                Err(_) => warn!("cluster facts: API server did not answer in time"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn cache(&self, kind: Kind) -> &Cache {
        match kind {
            Kind::ServiceAccount => &self.service_accounts,
            Kind::ConfigMap => &self.config_maps,
        }
    }

    fn fetch(
        &self,
        kind: Kind,
        ns: String,
        name: String,
    ) -> impl Future<Output = Result<Value, kube::Error>> + Send + 'static {
        let client = self.client.clone();
        async move {
            match kind {
                Kind::ServiceAccount => {
                    let api: Api<ServiceAccount> = Api::namespaced(client, &ns);
                    Ok(api
                        .get_metadata_opt(&name)
                        .await?
                        .map(|m| m.metadata.annotations.unwrap_or_default()))
                }
                Kind::ConfigMap => {
                    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
                    Ok(api
                        .get_opt(&name)
                        .await?
                        .map(|cm| cm.data.unwrap_or_default()))
                }
            }
        }
    }

    /// The cached answer, fetching on a miss. `None`: unknown (the lookup failed). `decisive`:
    /// whether this object's absence (or a missing role) denies the pod.
    async fn lookup(
        self: &Arc<Self>,
        kind: Kind,
        ns: &str,
        name: &str,
        decisive: bool,
    ) -> Option<Value> {
        let key = (ns.to_owned(), name.to_owned());
        // An answer that leads to a denial (no such object, no role) is always checked again:
        // the user may just have fixed it, following the denial's message. Any other answer
        // (the pod's own account without a role, a ConfigMap that is not there) is cached.
        let cached = self
            .cache(kind)
            .lock()
            .get(&key)
            .cloned()
            .filter(|e| !(decisive && leads_to_denial(kind, &e.value)));
        if let Some(e) = &cached {
            let fresh = e.fetched.elapsed() < self.ttl;
            // A stale "exists" is served now and refreshed behind; a stale "missing" is fetched
            // again (the user may just have created the object).
            if fresh || e.value.is_some() {
                if !fresh && !e.refreshing {
                    self.refresh_in_background(kind, key);
                }
                self.count(kind, "cache");
                return Some(e.value.clone());
            }
        }
        match tokio::time::timeout(self.timeout, self.fetch(kind, key.0.clone(), key.1.clone()))
            .await
        {
            Ok(Ok(value)) => {
                self.count(kind, "api");
                debug!(
                    ?kind,
                    namespace = ns,
                    name,
                    "cluster facts: fetched from the API server"
                );
                self.store(kind, key, value.clone());
                Some(value)
            }
            Ok(Err(err)) => {
                self.count(kind, "failed");
                warn!(?kind, namespace = ns, name, error = %err, "cluster facts: lookup failed");
                cached.map(|e| e.value)
            }
            Err(_) => {
                self.count(kind, "failed");
                warn!(
                    ?kind,
                    namespace = ns,
                    name,
                    "cluster facts: lookup timed out"
                );
                cached.map(|e| e.value)
            }
        }
    }

    fn count(&self, kind: Kind, source: &'static str) {
        let kind = match kind {
            Kind::ServiceAccount => "service_account",
            Kind::ConfigMap => "config_map",
        };
        self.lookups
            .get_or_create(&LookupLabels { kind, source })
            .inc();
    }

    fn store(&self, kind: Kind, key: Key, value: Value) {
        self.cache(kind).lock().insert(
            key,
            Entry {
                value,
                fetched: Instant::now(),
                refreshing: false,
            },
        );
    }

    fn refresh_in_background(self: &Arc<Self>, kind: Kind, key: Key) {
        if let Some(e) = self.cache(kind).lock().get_mut(&key) {
            e.refreshing = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let fetched =
                tokio::time::timeout(this.timeout, this.fetch(kind, key.0.clone(), key.1.clone()))
                    .await;
            match fetched {
                Ok(Ok(value)) => this.store(kind, key, value),
                _ => {
                    debug!(?kind, namespace = %key.0, name = %key.1, "cluster facts: background refresh failed");
                    if let Some(e) = this.cache(kind).lock().get_mut(&key) {
                        e.refreshing = false;
                    }
                }
            }
        });
    }

    /// The facts a pod's decision needs, from the cache or the API server.
    pub async fn facts_for(self: &Arc<Self>, needs: &Needs) -> Facts {
        let ns = needs.namespace.as_deref().unwrap_or("default");
        let mut facts = Facts::default();
        for name in &needs.service_accounts {
            let decisive = *name == needs.target_service_account;
            match self.lookup(Kind::ServiceAccount, ns, name, decisive).await {
                Some(Some(annotations)) => facts.add_service_account(ServiceAccount {
                    metadata: meta(ns, name, Some(annotations)),
                    ..Default::default()
                }),
                Some(None) => facts.add_missing_service_account(Some(ns), name),
                None => {}
            }
        }
        for name in &needs.config_maps {
            // A missing ConfigMap sets nothing (and the pod won't start unless it is optional).
            if let Some(data) = self.lookup(Kind::ConfigMap, ns, name, false).await {
                facts.add_config_map(ConfigMap {
                    metadata: meta(ns, name, None),
                    data: Some(data.unwrap_or_default()),
                    ..Default::default()
                });
            }
        }
        facts
    }
}

fn leads_to_denial(kind: Kind, value: &Value) -> bool {
    match (kind, value) {
        (_, None) => true,
        (Kind::ServiceAccount, Some(annotations)) => annotations
            .get(crate::consts::EKS_ROLE_ARN_ANNOTATION)
            .is_none_or(|r| r.is_empty()),
        (Kind::ConfigMap, Some(_)) => false,
    }
}

fn meta(ns: &str, name: &str, annotations: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        annotations,
        ..Default::default()
    }
}

/// Whether `auto` finds a cluster: in a pod, or with a kubeconfig.
pub fn cluster_available() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("HOME")
            .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists())
}

/// A client from the environment (in-cluster config, else the kubeconfig).
pub async fn client() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Client::try_from(config)
}
