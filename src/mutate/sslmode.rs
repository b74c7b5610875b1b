//! sslmode, never weaker: find the value a container will really see, then raise it to
//! `require` when it is weak or absent, keep it when it is `require` or `verify-*`, and leave
//! it alone when it comes from somewhere the engine was not shown.

use k8s_openapi::api::core::v1::Container;

use super::env::{config_map, config_map_key, describe_source, last_entry, set_env};
use crate::consts::{SSLMODE_REQUIRE, STRONG_SSLMODES};
use crate::facts::Facts;

/// The value a container's process will see for an sslmode variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effective {
    /// Known value (possibly empty), and where it comes from.
    Known { value: String, from: String },
    /// Nothing sets it: libpq's default (`prefer`) applies.
    NoSource,
    /// A source the engine can't see may set it.
    Unknown { from: String },
}

/// Resolve `name` for `c` the way the kubelet does: the container's own `env` (last entry
/// wins) beats `envFrom`, and among `envFrom` sources the last one defining the key wins.
/// Only ConfigMaps are consulted; Secrets are assumed not to carry sslmode.
pub fn effective(c: &Container, name: &str, namespace: Option<&str>, facts: &Facts) -> Effective {
    if let Some(e) = last_entry(c, name) {
        let Some(src) = &e.value_from else {
            return Effective::Known {
                value: e.value.clone().unwrap_or_default(),
                from: "the container's env".into(),
            };
        };
        return match &src.config_map_key_ref {
            Some(sel) => match facts.config_map(namespace, &sel.name) {
                Some(data) => match data.get(&sel.key) {
                    Some(v) => Effective::Known {
                        value: v.clone(),
                        from: config_map_key(&sel.name, &sel.key),
                    },
                    None => Effective::NoSource,
                },
                None => Effective::Unknown {
                    from: config_map(&sel.name),
                },
            },
            None => Effective::Unknown {
                from: describe_source(src),
            },
        };
    }
    let mut state = Effective::NoSource;
    for src in c.env_from.iter().flatten() {
        let Some(cm) = &src.config_map_ref else {
            continue;
        };
        let Some(key) = name.strip_prefix(src.prefix.as_deref().unwrap_or("")) else {
            continue;
        };
        match facts.config_map(namespace, &cm.name) {
            Some(data) => {
                if let Some(v) = data.get(key) {
                    state = Effective::Known {
                        value: v.clone(),
                        from: config_map(&cm.name),
                    };
                }
            }
            None => {
                state = Effective::Unknown {
                    from: config_map(&cm.name),
                }
            }
        }
    }
    state
}

pub fn is_strong(mode: &str) -> bool {
    STRONG_SSLMODES.contains(&mode)
}

/// What [`ensure_sslmode`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sslmode {
    /// Already `require` or `verify-*`.
    Kept(String),
    /// Raised to `require`; `was` is the weak value, or `None` when nothing set it.
    Raised {
        was: Option<String>,
        from: Option<String>,
    },
    /// Comes from a source the engine was not shown: left as is.
    Unknown { from: String },
}

pub fn ensure_sslmode(
    c: &mut Container,
    name: &str,
    namespace: Option<&str>,
    facts: &Facts,
) -> Sslmode {
    match effective(c, name, namespace, facts) {
        Effective::Known { value, .. } if is_strong(&value) => Sslmode::Kept(value),
        Effective::Unknown { from } => Sslmode::Unknown { from },
        known_weak_or_none => {
            // Overwrites entries of that name in place (a weak literal or a ConfigMap
            // reference), or appends one that beats envFrom.
            set_env(c, name, SSLMODE_REQUIRE, is_strong);
            match known_weak_or_none {
                Effective::Known { value, from } => Sslmode::Raised {
                    was: Some(value),
                    from: Some(from),
                },
                _ => Sslmode::Raised {
                    was: None,
                    from: None,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        SecretEnvSource,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const S: &str = "POSTGRESQL_SSLMODE";

    fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn from_cm(name: &str, prefix: Option<&str>) -> EnvFromSource {
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: name.into(),
                optional: None,
            }),
            prefix: prefix.map(Into::into),
            secret_ref: None,
        }
    }

    fn from_secret(name: &str) -> EnvFromSource {
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.into(),
                optional: None,
            }),
            ..Default::default()
        }
    }

    fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
        Container {
            name: "core".into(),
            env: Some(env),
            env_from: Some(env_from),
            ..Default::default()
        }
    }

    fn lit(v: &str) -> EnvVar {
        EnvVar {
            name: S.into(),
            value: Some(v.into()),
            value_from: None,
        }
    }

    fn sslmode_of(c: &Container) -> Option<String> {
        last_entry(c, S).and_then(|e| e.value.clone())
    }

    #[test]
    fn own_literal_wins_over_env_from() {
        let facts = Facts::with_config_maps([cm("core", &[(S, "disable")])]);
        let mut c = container(vec![lit("verify-full")], vec![from_cm("core", None)]);
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &facts),
            Sslmode::Kept("verify-full".into())
        );
        let mut c = container(vec![lit("prefer")], vec![]);
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &facts),
            Sslmode::Raised { was: Some(_), .. }
        ));
        assert_eq!(c.env.as_ref().unwrap().len(), 1, "replaced in place");
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn weak_modes_and_empty_are_raised() {
        for weak in ["disable", "allow", "prefer", "", "Require", "bogus"] {
            let mut c = container(vec![lit(weak)], vec![]);
            ensure_sslmode(&mut c, S, None, &Facts::default());
            assert_eq!(sslmode_of(&c).as_deref(), Some("require"), "{weak:?}");
        }
        let mut c = container(
            vec![EnvVar {
                name: S.into(),
                value: None,
                value_from: None,
            }],
            vec![],
        );
        ensure_sslmode(&mut c, S, None, &Facts::default());
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn strong_modes_are_kept() {
        for strong in ["require", "verify-ca", "verify-full"] {
            let mut c = container(vec![lit(strong)], vec![]);
            let before = c.clone();
            assert_eq!(
                ensure_sslmode(&mut c, S, None, &Facts::default()),
                Sslmode::Kept(strong.into())
            );
            assert_eq!(c, before);
        }
    }

    #[test]
    fn no_source_sets_require() {
        let mut c = container(vec![], vec![from_secret("harbor-core")]);
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &Facts::default()),
            Sslmode::Raised {
                was: None,
                from: None
            }
        );
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn env_from_config_map_known_and_unknown() {
        let weak = Facts::with_config_maps([cm("core", &[(S, "disable")])]);
        let strong = Facts::with_config_maps([cm("core", &[(S, "verify-full")])]);
        let without_key = Facts::with_config_maps([cm("core", &[("OTHER", "x")])]);

        let mut c = container(vec![], vec![from_cm("core", None), from_secret("core")]);
        assert_eq!(
            ensure_sslmode(&mut c.clone(), S, None, &Facts::default()),
            Sslmode::Unknown {
                from: "ConfigMap core".into()
            }
        );
        assert_eq!(
            ensure_sslmode(&mut c.clone(), S, None, &strong),
            Sslmode::Kept("verify-full".into())
        );
        assert!(matches!(
            ensure_sslmode(&mut c.clone(), S, None, &without_key),
            Sslmode::Raised { was: None, .. }
        ));
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &weak),
            Sslmode::Raised { was: Some(_), .. }
        ));
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn env_from_order_and_prefix() {
        let facts = Facts::with_config_maps([
            cm("a", &[(S, "verify-full")]),
            cm("b", &[(S, "disable")]),
            cm("p", &[("SSLMODE", "verify-ca")]),
        ]);
        // Later source wins.
        let c = container(vec![], vec![from_cm("a", None), from_cm("b", None)]);
        assert!(
            matches!(effective(&c, S, None, &facts), Effective::Known { value, .. } if value == "disable")
        );
        // An unknown later source may override a known earlier one.
        let c = container(vec![], vec![from_cm("a", None), from_cm("unseen", None)]);
        assert!(matches!(
            effective(&c, S, None, &facts),
            Effective::Unknown { .. }
        ));
        // A known later source without the key does not.
        let c = container(vec![], vec![from_cm("unseen", None), from_cm("b", None)]);
        assert!(
            matches!(effective(&c, S, None, &facts), Effective::Known { value, .. } if value == "disable")
        );
        // Prefix: POSTGRESQL_ + SSLMODE.
        let c = container(vec![], vec![from_cm("p", Some("POSTGRESQL_"))]);
        assert!(
            matches!(effective(&c, S, None, &facts), Effective::Known { value, .. } if value == "verify-ca")
        );
        // A prefix that can't produce the name is not a source.
        let c = container(vec![], vec![from_cm("unseen", Some("OTHER_"))]);
        assert_eq!(effective(&c, S, None, &facts), Effective::NoSource);
    }

    #[test]
    fn value_from_config_map_key() {
        let facts = Facts::with_config_maps([cm("db", &[("mode", "allow")])]);
        let reference = |cm_name: &str| EnvVar {
            name: S.into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm_name.into(),
                    key: "mode".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        };
        let mut c = container(vec![reference("db")], vec![]);
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &facts),
            Sslmode::Raised { .. }
        ));
        assert_eq!(c.env.as_ref().unwrap(), &vec![lit("require")]);
        let mut c = container(vec![reference("elsewhere")], vec![]);
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &facts),
            Sslmode::Unknown { .. }
        ));
    }
}
