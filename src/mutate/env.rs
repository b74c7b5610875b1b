//! Edits of a container's `env`, named by effect. None of them ever inserts into the middle of
//! a list: existing entries are edited in place, new ones are appended.

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource};

/// An entry with neither `value` nor `valueFrom`, or with `value: ""`, sets the variable empty.
/// The API server drops `value: ""` (the field is `omitempty`), so both shapes must count.
pub fn is_blank(e: &EnvVar) -> bool {
    e.value_from.is_none() && e.value.as_deref().unwrap_or("").is_empty()
}

/// Where an env entry's value came from, for warnings. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Literal,
    Reference(String),
}

impl Origin {
    pub fn of(e: &EnvVar) -> Self {
        match &e.value_from {
            None => Origin::Literal,
            Some(src) => Origin::Reference(describe_source(src)),
        }
    }

    /// As a warning names it.
    pub fn as_str(&self) -> &str {
        match self {
            Origin::Literal => "a literal value",
            Origin::Reference(r) => r,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names a ConfigMap, as the messages do.
pub fn config_map(name: &str) -> String {
    ["ConfigMap ", name].concat()
}

/// Names a key of a ConfigMap, as the messages do.
pub fn config_map_key(name: &str, key: &str) -> String {
    ["ConfigMap ", name, " key ", key].concat()
}

/// Names what a `valueFrom` points at (object and key names, never data).
pub fn describe_source(src: &EnvVarSource) -> String {
    if let Some(s) = &src.secret_key_ref {
        ["Secret ", &s.name, " key ", &s.key].concat()
    } else if let Some(c) = &src.config_map_key_ref {
        config_map_key(&c.name, &c.key)
    } else if let Some(f) = &src.field_ref {
        ["field ", &f.field_path].concat()
    } else if let Some(r) = &src.resource_field_ref {
        ["resource ", &r.resource].concat()
    } else {
        "a valueFrom reference".to_owned()
    }
}

/// What [`set_env`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEnv {
    /// An entry with the same meaning was already there.
    Kept,
    Added,
    /// Conflicting entries were overwritten; `was` describes the last of them.
    Replaced {
        was: Previous,
    },
}

/// A replaced entry. `set_env` is never used on a password, but a value may still be anything
/// a user typed: callers decide what of it a warning may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    Value(String),
    Reference(String),
}

/// Make `name` equal `value` in `c`: entries whose literal value satisfies `same` are kept,
/// other entries of that name (duplicates included) are overwritten in place, and a missing
/// one is appended.
pub fn set_env(c: &mut Container, name: &str, value: &str, same: impl Fn(&str) -> bool) -> SetEnv {
    let mut found = false;
    let mut replaced = None;
    for e in c.env.iter_mut().flatten().filter(|e| e.name == name) {
        found = true;
        if e.value_from.is_none() && e.value.as_deref().is_some_and(&same) {
            continue;
        }
        replaced = Some(match &e.value_from {
            Some(src) => Previous::Reference(describe_source(src)),
            None => Previous::Value(e.value.clone().unwrap_or_default()),
        });
        e.value = Some(value.to_owned());
        e.value_from = None;
    }
    if !found {
        c.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        });
        return SetEnv::Added;
    }
    match replaced {
        Some(was) => SetEnv::Replaced { was },
        None => SetEnv::Kept,
    }
}

/// What [`blank_env`] did to one variable of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blanked {
    /// An entry that set a value was emptied; `Origin` says what it carried.
    Dropped(Origin),
    /// No entry existed and an `envFrom` source may carry the name: an explicit blank was added.
    Added,
}

/// Make sure `name` reaches the container empty. Every non-blank entry of that name is emptied
/// in place; when there is none and `env_from_may_carry` says an `envFrom` source could set it,
/// an explicit blank entry is appended (explicit `env` wins over `envFrom`).
pub fn blank_env(c: &mut Container, name: &str, env_from_may_carry: bool) -> Vec<Blanked> {
    let mut done = Vec::new();
    let mut found = false;
    for e in c.env.iter_mut().flatten().filter(|e| e.name == name) {
        found = true;
        if !is_blank(e) {
            done.push(Blanked::Dropped(Origin::of(e)));
            e.value = Some(String::new());
            e.value_from = None;
        }
    }
    if !found && env_from_may_carry {
        c.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: name.to_owned(),
            value: Some(String::new()),
            value_from: None,
        });
        done.push(Blanked::Added);
    }
    done
}

/// The last entry named `name` (the one the kubelet uses when a name repeats).
pub fn last_entry<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().rev().find(|e| e.name == name)
}

pub fn has_env_from_secret(c: &Container) -> bool {
    c.env_from.iter().flatten().any(|s| s.secret_ref.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvFromSource, SecretEnvSource, SecretKeySelector};

    pub(crate) fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn secret_ref(name: &str, secret: &str, key: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        }
    }

    fn container(env: Vec<EnvVar>) -> Container {
        Container {
            name: "c".into(),
            env: Some(env),
            ..Default::default()
        }
    }

    #[test]
    fn blank_shapes() {
        assert!(is_blank(&EnvVar {
            name: "X".into(),
            value: None,
            value_from: None
        }));
        assert!(is_blank(&literal("X", "")));
        assert!(!is_blank(&literal("X", "pw")));
        assert!(!is_blank(&secret_ref("X", "s", "k")));
    }

    #[test]
    fn set_env_appends_keeps_and_replaces() {
        let mut c = container(vec![literal("A", "1")]);
        assert_eq!(set_env(&mut c, "B", "x", |v| v == "x"), SetEnv::Added);
        assert_eq!(c.env.as_ref().unwrap().last().unwrap().name, "B");
        assert_eq!(set_env(&mut c, "B", "x", |v| v == "x"), SetEnv::Kept);
        assert_eq!(
            set_env(&mut c, "A", "2", |v| v == "2"),
            SetEnv::Replaced {
                was: Previous::Value("1".into())
            }
        );
        let env = c.env.unwrap();
        assert_eq!(env.len(), 2);
        assert_eq!(env[0], literal("A", "2"), "edited in place, not moved");
    }

    #[test]
    fn set_env_replaces_value_from_and_all_duplicates() {
        let mut c = container(vec![
            secret_ref("A", "s", "k"),
            literal("Z", "z"),
            literal("A", "y"),
        ]);
        let out = set_env(&mut c, "A", "v", |v| v == "v");
        assert_eq!(
            out,
            SetEnv::Replaced {
                was: Previous::Value("y".into())
            }
        );
        let env = c.env.unwrap();
        assert_eq!(env[0], literal("A", "v"));
        assert_eq!(env[2], literal("A", "v"));
    }

    #[test]
    fn blank_env_cases() {
        let mut c = container(vec![secret_ref("P", "db", "password"), literal("P", "")]);
        let out = blank_env(&mut c, "P", true);
        assert_eq!(
            out,
            vec![Blanked::Dropped(Origin::Reference(
                "Secret db key password".into()
            ))]
        );
        assert!(c.env.as_ref().unwrap().iter().all(is_blank));
        assert_eq!(c.env.as_ref().unwrap().len(), 2, "no duplicate pushed");
        // Second time: nothing to do.
        assert!(blank_env(&mut c, "P", true).is_empty());

        let mut c = Container {
            name: "c".into(),
            ..Default::default()
        };
        assert!(blank_env(&mut c, "P", false).is_empty());
        assert_eq!(c.env, None, "no empty env list created");
        c.env_from = Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "s".into(),
                optional: None,
            }),
            ..Default::default()
        }]);
        assert!(has_env_from_secret(&c));
        assert_eq!(blank_env(&mut c, "P", true), vec![Blanked::Added]);
        assert_eq!(c.env.unwrap(), vec![literal("P", "")]);
    }
}
