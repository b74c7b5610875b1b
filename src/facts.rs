//! What the engine may know about the cluster, handed in by the caller (the CLI reads it from
//! files; the server will get it from a cluster cache). The engine never fetches anything.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ConfigMap;

#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// ConfigMaps by name; a fact without a namespace applies to every namespace.
    config_maps: HashMap<String, Vec<ConfigMapFact>>,
}

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
}
