//! What the engine may know about the cluster, handed in by the caller (the CLI reads it from
//! files; the server will get it from a cluster cache). The engine never fetches anything.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};

use crate::mutate::{Component, MutateConfig};

/// What a pod refers to that cluster facts can answer: its namespace, the ServiceAccounts the
/// decision depends on and the ConfigMaps its containers read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub namespace: Option<String>,
    pub service_accounts: Vec<String>,
    pub config_maps: Vec<String>,
    /// Of `service_accounts`, the one the pod would be switched to: the only fact whose
    /// absence (or missing role) denies the pod. The pod's own account and the ConfigMaps
    /// only change what is injected.
    pub target_service_account: String,
}

impl Needs {
    pub fn of(pod: &Pod, component: Component, config: &MutateConfig) -> Self {
        let target_service_account = config.service_account_for(component).to_owned();
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty());
        let mut service_accounts = vec![
            target_service_account.clone(),
            own.unwrap_or_else(|| "default".into()),
        ];
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
        let mut config_maps = Vec::new();
        for c in containers {
            let env_from = c.env_from.iter().flatten();
            config_maps
                .extend(env_from.filter_map(|s| Some(s.config_map_ref.as_ref()?.name.clone())));
            config_maps.extend(c.env.iter().flatten().filter_map(|e| {
                Some(
                    e.value_from
                        .as_ref()?
                        .config_map_key_ref
                        .as_ref()?
                        .name
                        .clone(),
                )
            }));
        }
        service_accounts.sort();
        service_accounts.dedup();
        config_maps.sort();
        config_maps.dedup();
        Needs {
            namespace: pod.metadata.namespace.clone(),
            service_accounts,
            config_maps,
            target_service_account,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// ConfigMaps by name; a fact without a namespace applies to every namespace.
    config_maps: HashMap<String, Vec<ConfigMapFact>>,
    /// ServiceAccounts by name: `Some(annotations)` exists, `None` known not to exist.
    service_accounts: HashMap<String, Vec<SaEntry>>,
    /// When set, a ServiceAccount absent from the facts does not exist (the facts are the
    /// whole truth, e.g. every ServiceAccount of the namespace was handed in).
    service_accounts_complete: bool,
}

/// (namespace, annotations) of one ServiceAccount fact; `None` annotations: it does not exist.
type SaEntry = (Option<String>, Option<BTreeMap<String, String>>);

/// What the facts say about one ServiceAccount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaFact<'a> {
    Exists(&'a BTreeMap<String, String>),
    Missing,
    /// Nobody told the engine.
    Unknown,
}

static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();

#[derive(Debug, Clone)]
struct ConfigMapFact {
    namespace: Option<String>,
    data: BTreeMap<String, String>,
}

impl Facts {
    pub fn add_config_map(&mut self, cm: ConfigMap) {
        let Some(name) = cm.metadata.name else { return };
        self.config_maps
            .entry(name)
            .or_default()
            .push(ConfigMapFact {
                namespace: cm.metadata.namespace,
                data: cm.data.unwrap_or_default(),
            });
    }

    pub fn with_config_maps(cms: impl IntoIterator<Item = ConfigMap>) -> Self {
        let mut f = Facts::default();
        cms.into_iter().for_each(|cm| f.add_config_map(cm));
        f
    }

    /// The data of ConfigMap `name` as seen from `namespace`: a fact in that namespace first,
    /// then one without a namespace. `None` means "not known", not "empty".
    pub fn config_map(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<&BTreeMap<String, String>> {
        let facts = self.config_maps.get(name)?;
        facts
            .iter()
            .find(|f| f.namespace.is_some() && f.namespace.as_deref() == namespace)
            .or_else(|| facts.iter().find(|f| f.namespace.is_none()))
            .map(|f| &f.data)
    }

    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty()
            && self.service_accounts.is_empty()
            && !self.service_accounts_complete
    }

    pub fn add_service_account(&mut self, sa: ServiceAccount) {
        let Some(name) = sa.metadata.name else { return };
        let annotations = sa.metadata.annotations.unwrap_or_default();
        self.service_accounts
            .entry(name)
            .or_default()
            .push((sa.metadata.namespace, Some(annotations)));
    }

    /// Record that a ServiceAccount does not exist.
    pub fn add_missing_service_account(&mut self, namespace: Option<&str>, name: &str) {
        self.service_accounts
            .entry(name.to_owned())
            .or_default()
            .push((namespace.map(str::to_owned), None));
    }

    /// From now on a ServiceAccount absent from the facts counts as missing.
    pub fn set_service_accounts_complete(&mut self, complete: bool) {
        self.service_accounts_complete = complete;
    }

    /// ServiceAccount `name` as seen from `namespace` (a fact in that namespace first, then one
    /// without a namespace).
    pub fn service_account(&self, namespace: Option<&str>, name: &str) -> SaFact<'_> {
        let found = self.service_accounts.get(name).and_then(|facts| {
            facts
                .iter()
                .find(|(ns, _)| ns.is_some() && ns.as_deref() == namespace)
                .or_else(|| facts.iter().find(|(ns, _)| ns.is_none()))
        });
        match found {
            Some((_, Some(annotations))) => SaFact::Exists(annotations),
            Some((_, None)) => SaFact::Missing,
            None if self.service_accounts_complete => SaFact::Missing,
            None => SaFact::Unknown,
        }
    }

    /// The role ARN of a ServiceAccount, when the facts know it has one.
    pub fn role_arn(&self, namespace: Option<&str>, name: &str) -> Option<&str> {
        match self.service_account(namespace, name) {
            SaFact::Exists(a) => a
                .get(crate::consts::EKS_ROLE_ARN_ANNOTATION)
                .map(String::as_str)
                .filter(|r| !r.is_empty()),
            _ => None,
        }
    }
}

impl SaFact<'_> {
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            SaFact::Exists(a) => a,
            _ => &NO_ANNOTATIONS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(ns: Option<&str>, name: &str, k: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: ns.map(Into::into),
                ..Default::default()
            },
            data: Some([(k.to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn matches_by_name_and_namespace() {
        let f = Facts::with_config_maps([
            cm(Some("harbor"), "harbor-core", "X", "in-ns"),
            cm(None, "harbor-core", "X", "any-ns"),
            cm(Some("other"), "only-other", "X", "o"),
        ]);
        assert_eq!(
            f.config_map(Some("harbor"), "harbor-core").unwrap()["X"],
            "in-ns"
        );
        assert_eq!(
            f.config_map(Some("team"), "harbor-core").unwrap()["X"],
            "any-ns"
        );
        assert!(f.config_map(Some("harbor"), "only-other").is_none());
        assert!(f.config_map(Some("harbor"), "missing").is_none());
    }

    #[test]
    fn service_accounts_exist_are_missing_or_unknown() {
        let sa = |ns: Option<&str>, name: &str, role: Option<&str>| ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: ns.map(Into::into),
                annotations: role.map(|r| {
                    [(
                        crate::consts::EKS_ROLE_ARN_ANNOTATION.to_string(),
                        r.to_string(),
                    )]
                    .into()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut f = Facts::default();
        f.add_service_account(sa(
            Some("harbor"),
            "harbor-sa",
            Some("arn:aws:iam::1:role/r"),
        ));
        f.add_service_account(sa(Some("harbor"), "plain", None));
        f.add_missing_service_account(Some("harbor"), "gone");
        assert_eq!(
            f.role_arn(Some("harbor"), "harbor-sa"),
            Some("arn:aws:iam::1:role/r")
        );
        assert_eq!(f.role_arn(Some("harbor"), "plain"), None);
        assert!(matches!(
            f.service_account(Some("harbor"), "plain"),
            SaFact::Exists(_)
        ));
        assert_eq!(f.service_account(Some("harbor"), "gone"), SaFact::Missing);
        assert_eq!(
            f.service_account(Some("harbor"), "never-heard"),
            SaFact::Unknown
        );
        assert_eq!(
            f.service_account(Some("other"), "harbor-sa"),
            SaFact::Unknown
        );
        f.set_service_accounts_complete(true);
        assert_eq!(
            f.service_account(Some("harbor"), "never-heard"),
            SaFact::Missing
        );
    }
}
