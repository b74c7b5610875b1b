//! Edits of a container's `env`, named by effect. Existing entries are edited in place and new
//! ones appended, but for one case: a blank that must come before the first `$(NAME)` that
//! refers to it ([`blank_env`]).

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource};

use super::effective::references;

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

/// A change to one container's `env`, as the admission patch writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvEdit {
    /// Entry `index` now has `value` and no `valueFrom` (`dropped_value_from`: it had one).
    Value {
        index: usize,
        value: String,
        dropped_value_from: bool,
    },
    /// `entry` added at `index` (the list's length: appended; `new_list`: the list was created).
    Insert {
        index: usize,
        entry: Box<EnvVar>,
        new_list: bool,
    },
}

/// Set entry `index` of `env` to the literal `value`, in place.
pub fn set_value(env: &mut [EnvVar], index: usize, value: &str) -> EnvEdit {
    let e = &mut env[index];
    let dropped_value_from = e.value_from.take().is_some();
    e.value = Some(value.to_owned());
    EnvEdit::Value {
        index,
        value: value.to_owned(),
        dropped_value_from,
    }
}

/// Add `entry` to `c`'s env at `index`.
pub fn insert_env(c: &mut Container, index: usize, entry: EnvVar) -> EnvEdit {
    let new_list = c.env.is_none();
    c.env
        .get_or_insert_with(Vec::new)
        .insert(index, entry.clone());
    EnvEdit::Insert {
        index,
        entry: Box::new(entry),
        new_list,
    }
}

/// Make `name` end as `value` in `c`: every entry of that name is overwritten in place, but
/// those `keep` accepts (by index), so that a `$(name)` after any of them sees `value` too; a
/// missing one is appended.
pub fn set_env(
    c: &mut Container,
    name: &str,
    value: &str,
    keep: impl Fn(usize) -> bool,
) -> Vec<EnvEdit> {
    let env = c.env.as_deref_mut().unwrap_or_default();
    let at: Vec<usize> = (0..env.len()).filter(|&i| env[i].name == name).collect();
    if at.is_empty() {
        let end = env.len();
        return vec![insert_env(c, end, literal(name, value))];
    }
    at.into_iter()
        .filter(|&i| !keep(i))
        .map(|i| set_value(env, i, value))
        .collect()
}

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// What [`blank_env`] did to one variable of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blanked {
    /// An entry that set a value was emptied; `Origin` says what it carried.
    Dropped(Origin),
    /// An explicit blank was added, so that `envFrom` can't set the name.
    Added,
}

/// Make sure `name` reaches the container empty, and is empty wherever a `$(name)` is expanded.
/// Every non-blank entry of that name is emptied in place. When `envFrom` may set the name
/// (`env_from_may_carry`), an explicit blank must come before the first entry that refers to it
/// (expansion sees only what is set before it): it is inserted there when no entry of that name
/// comes earlier, appended when nothing refers to it and no entry exists.
pub fn blank_env(
    c: &mut Container,
    name: &str,
    env_from_may_carry: bool,
    edits: &mut Vec<EnvEdit>,
) -> Vec<Blanked> {
    let mut done = Vec::new();
    let env = c.env.as_deref_mut().unwrap_or_default();
    for i in 0..env.len() {
        if env[i].name == name && !is_blank(&env[i]) {
            done.push(Blanked::Dropped(Origin::of(&env[i])));
            edits.push(set_value(env, i, ""));
        }
    }
    let first_entry = env.iter().position(|e| e.name == name);
    let first_reference = env
        .iter()
        .position(|e| e.value.as_deref().is_some_and(|v| references(v, name)));
    let at = match (first_entry, first_reference) {
        (_, Some(r)) if first_entry.is_none_or(|d| r < d) => Some(r),
        (None, None) => Some(env.len()),
        _ => None,
    };
    if let Some(at) = at.filter(|_| env_from_may_carry) {
        edits.push(insert_env(c, at, literal(name, "")));
        done.push(Blanked::Added);
    }
    done
}

pub fn has_env_from(c: &Container) -> bool {
    c.env_from.as_ref().is_some_and(|s| !s.is_empty())
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
    fn set_env_appends_keeps_and_overwrites() {
        let mut c = container(vec![literal("A", "1")]);
        assert_eq!(
            set_env(&mut c, "B", "x", |_| false),
            vec![EnvEdit::Insert {
                index: 1,
                entry: Box::new(literal("B", "x")),
                new_list: false
            }],
            "appended"
        );
        assert_eq!(c.env.as_ref().unwrap().last().unwrap(), &literal("B", "x"));
        assert_eq!(
            set_env(&mut c, "A", "2", |_| false),
            vec![EnvEdit::Value {
                index: 0,
                value: "2".into(),
                dropped_value_from: false
            }]
        );
        let env = c.env.unwrap();
        assert_eq!(env.len(), 2);
        assert_eq!(env[0], literal("A", "2"), "edited in place, not moved");
    }

    #[test]
    fn set_env_overwrites_every_duplicate_but_those_kept() {
        let mut c = container(vec![
            secret_ref("A", "s", "k"),
            literal("Z", "z"),
            literal("A", "y"),
            literal("A", "keep"),
        ]);
        let edits = set_env(&mut c, "A", "v", |i| i == 3);
        let at: Vec<usize> = edits
            .iter()
            .map(|e| match e {
                EnvEdit::Value { index, .. } => *index,
                EnvEdit::Insert { index, .. } => panic!("inserted at {index}"),
            })
            .collect();
        assert_eq!(at, vec![0, 2]);
        let env = c.env.unwrap();
        assert_eq!(env[0], literal("A", "v"));
        assert_eq!(env[1], literal("Z", "z"));
        assert_eq!(env[2], literal("A", "v"));
        assert_eq!(env[3], literal("A", "keep"));
    }

    #[test]
    fn blank_goes_before_the_first_reference() {
        // The password arrives through envFrom; an earlier entry copies it.
        let mut c = container(vec![
            literal("A", "a"),
            literal("URL", "postgres://u:$(P)@db/x"),
            literal("B", "$(P)"),
        ]);
        assert_eq!(
            blank_env(&mut c, "P", true, &mut vec![]),
            vec![Blanked::Added]
        );
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[1], literal("P", ""), "inserted before URL");
        assert_eq!(env.len(), 4);
        assert!(
            blank_env(&mut c, "P", true, &mut vec![]).is_empty(),
            "idempotent"
        );

        // An entry of that name after the reference is blanked, and a blank still goes first.
        let mut c = container(vec![
            literal("URL", "$(P)"),
            secret_ref("P", "db", "password"),
        ]);
        assert_eq!(
            blank_env(&mut c, "P", true, &mut vec![]),
            vec![
                Blanked::Dropped(Origin::Reference("Secret db key password".into())),
                Blanked::Added
            ]
        );
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0], literal("P", ""));
        assert_eq!(env[2], literal("P", ""));

        // `$$(P)` is no reference: the blank is appended.
        let mut c = container(vec![literal("A", "$$(P)")]);
        assert_eq!(
            blank_env(&mut c, "P", true, &mut vec![]),
            vec![Blanked::Added]
        );
        assert_eq!(c.env.as_ref().unwrap()[1], literal("P", ""));

        // Without envFrom nothing can set P before its first entry: no blank is added.
        let mut c = container(vec![literal("A", "$(P)")]);
        assert!(blank_env(&mut c, "P", false, &mut vec![]).is_empty());
        assert_eq!(c.env.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn blank_env_cases() {
        let mut c = container(vec![secret_ref("P", "db", "password"), literal("P", "")]);
        let out = blank_env(&mut c, "P", true, &mut vec![]);
        assert_eq!(
            out,
            vec![Blanked::Dropped(Origin::Reference(
                "Secret db key password".into()
            ))]
        );
        assert!(c.env.as_ref().unwrap().iter().all(is_blank));
        assert_eq!(c.env.as_ref().unwrap().len(), 2, "no duplicate pushed");
        // Second time: nothing to do.
        assert!(blank_env(&mut c, "P", true, &mut vec![]).is_empty());

        let mut c = Container {
            name: "c".into(),
            ..Default::default()
        };
        assert!(blank_env(&mut c, "P", false, &mut vec![]).is_empty());
        assert_eq!(c.env, None, "no empty env list created");
        c.env_from = Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "s".into(),
                optional: None,
            }),
            ..Default::default()
        }]);
        assert!(has_env_from(&c));
        assert_eq!(
            blank_env(&mut c, "P", true, &mut vec![]),
            vec![Blanked::Added]
        );
        assert_eq!(c.env.unwrap(), vec![literal("P", "")]);
    }
}
