//! Which Harbor component a pod is, decided from its labels and annotations alone.

use std::collections::BTreeMap;

use crate::consts::{self, INJECT_ANNOTATION, INJECT_DISABLED};

/// A Harbor component the webhook may change: the four that talk to the database, and the
/// registry (only with the opt-in for S3 keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Core,
    Jobservice,
    Exporter,
    Migrator,
    Registry,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Core,
        Component::Jobservice,
        Component::Exporter,
        Component::Migrator,
        Component::Registry,
    ];

    pub fn uses_database(self) -> bool {
        self != Component::Registry
    }

    pub fn from_label(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Core => "core",
            Component::Jobservice => "jobservice",
            Component::Exporter => "exporter",
            Component::Migrator => "migrator",
            Component::Registry => "registry",
        }
    }

    /// `(use-IAM switch, region)` env names this component reads, if it uses the database.
    pub fn iam_env_names(self) -> Option<(&'static str, &'static str)> {
        match self {
            Component::Exporter => Some((
                consts::HARBOR_DATABASE_USE_IAM_AUTH,
                consts::HARBOR_DATABASE_AWS_REGION,
            )),
            Component::Registry => None,
            _ => Some((
                consts::POSTGRESQL_USE_IAM_AUTH,
                consts::POSTGRESQL_AWS_REGION,
            )),
        }
    }

    /// The sslmode variable, if the component reads one from its env (jobservice gets its
    /// DB settings from core).
    pub fn sslmode_env(self) -> Option<&'static str> {
        match self {
            Component::Core | Component::Migrator => Some(consts::POSTGRESQL_SSLMODE),
            Component::Exporter => Some(consts::HARBOR_DATABASE_SSLMODE),
            Component::Jobservice | Component::Registry => None,
        }
    }

    /// Env names that can carry a static secret the webhook replaces: both database password
    /// names in every DB component (whichever it reads: an image or a future chart may read the
    /// other) and `PGPASSWORD` (pgx fills a connection string's missing password from it), or
    /// the registry's S3 keys.
    pub fn password_envs(self) -> &'static [&'static str] {
        match self {
            Component::Registry => &[
                consts::REGISTRY_S3_ACCESS_KEY,
                consts::REGISTRY_S3_SECRET_KEY,
            ],
            _ => &[
                consts::POSTGRESQL_PASSWORD,
                consts::HARBOR_DATABASE_PASSWORD,
                consts::PGPASSWORD,
            ],
        }
    }

    /// The names of the containers the charts (harbor-helm and harbor-next) create for the
    /// component: what `--strict-images` judges.
    pub fn chart_containers(self) -> &'static [&'static str] {
        match self {
            Component::Core => &["core"],
            Component::Jobservice => &["jobservice"],
            Component::Exporter => &["exporter"],
            Component::Migrator => &["core-job"],
            Component::Registry => &["registry", "registryctl"],
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_label(s).ok_or_else(|| {
            format!(
                "unknown component {s:?} (expected one of: core, jobservice, exporter, migrator)"
            )
        })
    }
}

/// How to recognise Harbor pods; part of the engine's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `(key, value)` labels of which any one marks a pod as Harbor.
    pub harbor_labels: Vec<(String, String)>,
    /// Label keys that name the component, in precedence order.
    pub component_labels: Vec<String>,
}

impl Default for Selector {
    fn default() -> Self {
        Self {
            harbor_labels: consts::DEFAULT_HARBOR_LABELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            component_labels: consts::DEFAULT_COMPONENT_LABELS
                .iter()
                .map(|k| k.to_string())
                .collect(),
        }
    }
}

/// What the labels and annotations say about a pod, before any typed parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Not a Harbor pod.
    NotHarbor,
    /// A Harbor pod whose component does not use the database (or has no component label).
    OtherComponent(Option<String>),
    /// A Harbor DB component whose pod opted out by annotation.
    OptedOut(Component),
    /// A Harbor DB component to mutate.
    Mutate(Component),
}

impl Selector {
    /// Classify a pod from its raw label and annotation maps. `get` abstracts over the map type
    /// so that the server can call this on raw JSON and the engine on the typed pod.
    pub fn classify<'a>(
        &self,
        label: impl Fn(&str) -> Option<&'a str>,
        annotation: impl Fn(&str) -> Option<&'a str>,
    ) -> Target {
        let is_harbor = self
            .harbor_labels
            .iter()
            .any(|(k, v)| label(k) == Some(v.as_str()));
        if !is_harbor {
            return Target::NotHarbor;
        }
        // An empty label value is no label (a chart that renders `component: ""` has not said).
        let value = self
            .component_labels
            .iter()
            .find_map(|k| label(k).filter(|v| !v.is_empty()));
        match value.and_then(Component::from_label) {
            None => Target::OtherComponent(value.map(str::to_owned)),
            Some(c) if annotation(INJECT_ANNOTATION) == Some(INJECT_DISABLED) => {
                Target::OptedOut(c)
            }
            Some(c) => Target::Mutate(c),
        }
    }

    pub fn classify_maps(
        &self,
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Target {
        self.classify(
            |k| labels.and_then(|m| m.get(k)).map(String::as_str),
            |k| annotations.and_then(|m| m.get(k)).map(String::as_str),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn classify(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Target {
        Selector::default().classify_maps(Some(&map(labels)), Some(&map(annotations)))
    }

    #[test]
    fn harbor_helm_old_labels_are_enough() {
        assert_eq!(
            classify(&[("app", "harbor"), ("component", "core")], &[]),
            Target::Mutate(Component::Core)
        );
    }

    #[test]
    fn harbor_next_and_part_of() {
        assert_eq!(
            classify(
                &[
                    ("app.kubernetes.io/name", "harbor-next"),
                    ("app.kubernetes.io/component", "jobservice")
                ],
                &[]
            ),
            Target::Mutate(Component::Jobservice)
        );
        assert_eq!(
            classify(
                &[
                    ("app.kubernetes.io/part-of", "harbor"),
                    ("component", "exporter")
                ],
                &[]
            ),
            Target::Mutate(Component::Exporter)
        );
    }

    #[test]
    fn recommended_component_label_wins() {
        assert_eq!(
            classify(
                &[
                    ("app", "harbor"),
                    ("component", "portal"),
                    ("app.kubernetes.io/component", "core")
                ],
                &[]
            ),
            Target::Mutate(Component::Core)
        );
        assert_eq!(
            classify(
                &[
                    ("app", "harbor"),
                    ("component", "core"),
                    ("app.kubernetes.io/component", "portal")
                ],
                &[]
            ),
            Target::OtherComponent(Some("portal".into()))
        );
    }

    #[test]
    fn non_harbor_and_non_db() {
        assert_eq!(
            classify(&[("app", "nginx"), ("component", "core")], &[]),
            Target::NotHarbor
        );
        assert_eq!(classify(&[], &[]), Target::NotHarbor);
        assert_eq!(
            classify(&[("app", "harbor")], &[]),
            Target::OtherComponent(None)
        );
        assert_eq!(
            classify(&[("app", "harbor"), ("component", "trivy")], &[]),
            Target::OtherComponent(Some("trivy".into()))
        );
        // The registry is a target for the labels; whether it is changed is the config's call.
        assert_eq!(
            classify(&[("app", "harbor"), ("component", "registry")], &[]),
            Target::Mutate(Component::Registry)
        );
    }

    #[test]
    fn opt_out_annotation() {
        assert_eq!(
            classify(
                &[("app", "harbor"), ("component", "core")],
                &[(INJECT_ANNOTATION, "disabled")]
            ),
            Target::OptedOut(Component::Core)
        );
        // Any other value is not an opt-out.
        assert_eq!(
            classify(
                &[("app", "harbor"), ("component", "core")],
                &[(INJECT_ANNOTATION, "false")]
            ),
            Target::Mutate(Component::Core)
        );
    }

    #[test]
    fn custom_selector() {
        let sel = Selector {
            harbor_labels: vec![("team".into(), "registry".into())],
            component_labels: vec!["role".into()],
        };
        let t = sel.classify_maps(
            Some(&map(&[("team", "registry"), ("role", "migrator")])),
            None,
        );
        assert_eq!(t, Target::Mutate(Component::Migrator));
        let t = sel.classify_maps(
            Some(&map(&[("app", "harbor"), ("component", "core")])),
            None,
        );
        assert_eq!(t, Target::NotHarbor);
    }
}
