//! sslmode, never weaker: take the value the container will really see ([`Env`]), raise it to
//! `require` when it is weak or absent, keep it when it is `require` or `verify-*`, and leave it
//! alone when it comes from somewhere the engine was not shown.

use k8s_openapi::api::core::v1::Container;

use super::effective::{Env, Value};
use super::env::{EnvEdit, set_env};
use crate::consts::{SSLMODE_REQUIRE, STRONG_SSLMODES};
use crate::facts::Facts;

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
    edits: &mut Vec<EnvEdit>,
) -> Sslmode {
    let env = Env::of(c, namespace, facts);
    let raised = match env.get(name) {
        Some(Value::Known { value, .. }) if is_strong(&value) => return Sslmode::Kept(value),
        Some(Value::Unknown { from }) => return Sslmode::Unknown { from },
        Some(Value::Known { value, from }) => Sslmode::Raised {
            was: Some(value),
            from: Some(from),
        },
        None => Sslmode::Raised {
            was: None,
            from: None,
        },
    };
    // Entries that set a strong mode stay; the others (weak, skipped, unknown) become
    // `require`, so that the last one, and every `$(name)` after one, is at least `require`.
    let strong: Vec<bool> = (0..c.env.as_ref().map_or(0, Vec::len))
        .map(|i| env.entry(i).and_then(Value::known).is_some_and(is_strong))
        .collect();
    edits.extend(set_env(c, name, SSLMODE_REQUIRE, |i| strong[i]));
    raised
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::effective::Env;
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
        Env::of(c, None, &Facts::default())
            .get(S)
            .and_then(|v| v.known().map(str::to_owned))
    }

    fn effective(c: &Container, facts: &Facts) -> Option<Value> {
        Env::of(c, None, facts).get(S)
    }

    fn known(v: &str) -> Option<Value> {
        Some(Value::Known {
            value: v.into(),
            from: match v {
                "disable" => "ConfigMap b",
                _ => "ConfigMap p",
            }
            .into(),
        })
    }

    #[test]
    fn own_literal_wins_over_env_from() {
        let facts = Facts::with_config_maps([cm("core", &[(S, "disable")])]);
        let mut c = container(vec![lit("verify-full")], vec![from_cm("core", None)]);
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Kept("verify-full".into())
        );
        let mut c = container(vec![lit("prefer")], vec![]);
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Raised { was: Some(_), .. }
        ));
        assert_eq!(c.env.as_ref().unwrap().len(), 1, "replaced in place");
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn weak_modes_and_empty_are_raised() {
        for weak in ["disable", "allow", "prefer", "", "Require", "bogus"] {
            let mut c = container(vec![lit(weak)], vec![]);
            ensure_sslmode(&mut c, S, None, &Facts::default(), &mut vec![]);
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
        ensure_sslmode(&mut c, S, None, &Facts::default(), &mut vec![]);
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn strong_modes_are_kept() {
        for strong in ["require", "verify-ca", "verify-full"] {
            let mut c = container(vec![lit(strong)], vec![]);
            let before = c.clone();
            assert_eq!(
                ensure_sslmode(&mut c, S, None, &Facts::default(), &mut vec![]),
                Sslmode::Kept(strong.into())
            );
            assert_eq!(c, before);
        }
    }

    #[test]
    fn no_source_sets_require() {
        let mut c = container(vec![], vec![from_secret("harbor-core")]);
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &Facts::default(), &mut vec![]),
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
            ensure_sslmode(&mut c.clone(), S, None, &Facts::default(), &mut vec![]),
            Sslmode::Unknown {
                from: "ConfigMap core".into()
            }
        );
        assert_eq!(
            ensure_sslmode(&mut c.clone(), S, None, &strong, &mut vec![]),
            Sslmode::Kept("verify-full".into())
        );
        assert!(matches!(
            ensure_sslmode(&mut c.clone(), S, None, &without_key, &mut vec![]),
            Sslmode::Raised { was: None, .. }
        ));
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &weak, &mut vec![]),
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
        assert_eq!(effective(&c, &facts), known("disable"));
        // An unknown later source may override a known earlier one.
        let c = container(vec![], vec![from_cm("a", None), from_cm("unseen", None)]);
        assert!(matches!(effective(&c, &facts), Some(Value::Unknown { .. })));
        // A known later source without the key does not.
        let c = container(vec![], vec![from_cm("unseen", None), from_cm("b", None)]);
        assert_eq!(effective(&c, &facts), known("disable"));
        // Prefix: POSTGRESQL_ + SSLMODE.
        let c = container(vec![], vec![from_cm("p", Some("POSTGRESQL_"))]);
        assert_eq!(effective(&c, &facts), known("verify-ca"));
        // A prefix that can't produce the name is not a source.
        let c = container(vec![], vec![from_cm("unseen", Some("OTHER_"))]);
        assert_eq!(effective(&c, &facts), None);
    }

    #[test]
    fn expanded_references_decide() {
        let facts = Facts::with_config_maps([cm("db", &[("DB_SSLMODE", "verify-full")])]);
        // `POSTGRESQL_SSLMODE=$(DB_SSLMODE)`, DB_SSLMODE from a ConfigMap: kept.
        let mut c = container(
            vec![EnvVar {
                name: S.into(),
                value: Some("$(DB_SSLMODE)".into()),
                value_from: None,
            }],
            vec![from_cm("db", None)],
        );
        let before = c.clone();
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Kept("verify-full".into())
        );
        assert_eq!(c, before);
        // The ConfigMap unseen: unknown, left alone.
        let mut c = before.clone();
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &Facts::default(), &mut vec![]),
            Sslmode::Unknown { .. }
        ));
        assert_eq!(c, before);
        // `$$(DB_SSLMODE)` is the literal `$(DB_SSLMODE)`: weak, raised.
        let mut c = container(vec![lit("$$(DB_SSLMODE)")], vec![from_cm("db", None)]);
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Raised { .. }
        ));
        assert_eq!(sslmode_of(&c).as_deref(), Some("require"));
    }

    #[test]
    fn optional_reference_to_nothing_hides_nothing() {
        // envFrom says verify-full; an optional reference to a missing key is skipped.
        let facts = Facts::with_config_maps([
            cm("core", &[(S, "verify-full")]),
            cm("other", &[("x", "y")]),
        ]);
        let optional = EnvVar {
            name: S.into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "other".into(),
                    key: "missing".into(),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
        };
        let mut c = container(vec![optional.clone()], vec![from_cm("core", None)]);
        let before = c.clone();
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Kept("verify-full".into())
        );
        assert_eq!(c, before);
        // ...nor an earlier entry's.
        let mut c = container(vec![lit("verify-ca"), optional], vec![]);
        assert_eq!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Kept("verify-ca".into())
        );
    }

    #[test]
    fn a_strong_entry_stays_when_a_later_one_is_raised() {
        let mut c = container(
            vec![
                lit("verify-full"),
                EnvVar {
                    name: "PGSSLMODE".into(),
                    value: Some("$(POSTGRESQL_SSLMODE)".into()),
                    value_from: None,
                },
                lit("disable"),
            ],
            vec![],
        );
        ensure_sslmode(&mut c, S, None, &Facts::default(), &mut vec![]);
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0], lit("verify-full"));
        assert_eq!(env[2], lit("require"));
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
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Raised { .. }
        ));
        assert_eq!(c.env.as_ref().unwrap(), &vec![lit("require")]);
        let mut c = container(vec![reference("elsewhere")], vec![]);
        assert!(matches!(
            ensure_sslmode(&mut c, S, None, &facts, &mut vec![]),
            Sslmode::Unknown { .. }
        ));
    }
}
