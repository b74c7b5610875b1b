//! The environment a container really gets, built as the kubelet builds it
//! (`makeEnvironmentVariables` in k8s.io/kubernetes `pkg/kubelet/kubelet_pods.go`):
//!
//! 1. `envFrom` sources in order, a later source overwriting an earlier one's names, `prefix`
//!    prepended to every key. A missing `optional` source contributes nothing.
//! 2. `env` entries in order, each written over the environment built so far (a later entry
//!    of the same name wins). A non-empty `value` is expanded against the environment so far,
//!    then the service-link variables: `$(NAME)` is replaced, `$$` is an escaped `$`, a
//!    reference to an undefined name stays as written. An empty `value` without `valueFrom`
//!    sets the variable to "". A `valueFrom` marked `optional` whose ConfigMap or key is
//!    missing is skipped: the earlier value stays.
//! 3. Service-link variables for every name not set above.
//!
//! The engine takes every decision from [`Env`], never from a single entry. What it cannot read
//! is [`Value::Unknown`]: a Secret's data, a ConfigMap the facts do not show, `fieldRef`,
//! `resourceFieldRef`, `fileKeyRef`, and service-link variables. One assumption keeps the charts
//! decidable: an `envFrom` Secret may set any name except the sslmode variables (`PGSSLMODE`
//! too), `PGSERVICE` and `POSTGRESQL_URL` (the charts keep those in ConfigMaps, or set none).

use std::collections::BTreeMap;
use std::ops::Range;

use k8s_openapi::api::core::v1::{Container, EnvVar};

use super::env::{config_map, config_map_key, describe_source};
use crate::consts::{
    HARBOR_DATABASE_SSLMODE, PGSERVICE, PGSSLMODE, POSTGRESQL_SSLMODE, POSTGRESQL_URL,
};
use crate::facts::Facts;

/// Names an `envFrom` Secret is taken not to set.
const NOT_IN_SECRETS: &[&str] = &[
    POSTGRESQL_SSLMODE,
    HARBOR_DATABASE_SSLMODE,
    POSTGRESQL_URL,
    PGSSLMODE,
    PGSERVICE,
];

/// Where a value written in the pod comes from, as messages name it: a literal, or a `value`
/// that refers to other variables.
pub const FROM_LITERAL: &str = "a literal value";
pub const FROM_ENV: &str = "the container's env";

/// Expanded values of one container may hold this many bytes in all; past it, a value is
/// [`Value::Unknown`]. Expansion can double a value per entry (`B=$(A)$(A)`), so a pod of a
/// few kilobytes could otherwise ask for more memory than the machine has.
const EXPANSION_BUDGET: usize = 1 << 20;

/// What the engine knows of one variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The value, and where it comes from (for messages; never the value itself).
    Known { value: String, from: String },
    /// Set from somewhere the engine cannot read.
    Unknown { from: String },
}

impl Value {
    pub fn known(&self) -> Option<&str> {
        match self {
            Value::Known { value, .. } => Some(value),
            Value::Unknown { .. } => None,
        }
    }

    pub fn from(&self) -> &str {
        match self {
            Value::Known { from, .. } | Value::Unknown { from } => from,
        }
    }
}

/// The service-link variables (`enableServiceLinks`, and the API server's own service).
#[derive(Debug, Clone, Copy)]
pub enum Services<'a> {
    /// Not known to the engine: a name that could be a service link is [`Value::Unknown`].
    Unknown,
    /// Exactly these (tests compare with the kubelet's own code this way).
    Known(&'a BTreeMap<String, String>),
}

/// Service-link names are `{SERVICE}_SERVICE_HOST`, `_SERVICE_PORT`, `_SERVICE_PORT_{NAME}`,
/// `_PORT` and `_PORT_{N}_{PROTO}[_PROTO|_PORT|_ADDR]` (`pkg/kubelet/envvars`).
fn could_be_service_link(name: &str) -> bool {
    name.contains("_SERVICE_") || name.contains("_PORT")
}

/// One piece of a `value`, as the kubelet's expansion reads it
/// (`third_party/forked/golang/expansion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'s> {
    Text(&'s str),
    /// `$(NAME)`: replaced by the variable's value, or kept as written when it is undefined.
    Ref(&'s str),
}

/// Split `input` as `expansion.Expand` does: `$$` is `$`, `$(NAME)` a reference (any bytes up to
/// the first `)`, the empty name included), an unclosed `$(` and any other `$x` literal text, a
/// trailing `$` too.
pub fn pieces(input: &str) -> Vec<Piece<'_>> {
    // Without a `$` the input is one piece of text (most values are); the empty input, none.
    if !input.contains('$') {
        return match input {
            "" => Vec::new(),
            text => vec![Piece::Text(text)],
        };
    }
    spans(input).into_iter().map(|(p, _)| p).collect()
}

/// [`pieces`], each with the bytes of `input` it was read from (`$$` is two bytes giving `$`).
pub fn spans(input: &str) -> Vec<(Piece<'_>, Range<usize>)> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push((Piece::Text(&input[checkpoint..cursor]), checkpoint..cursor));
            let after = cursor + 1;
            let advance = match bytes[after] {
                b'$' => {
                    out.push((Piece::Text("$"), cursor..after + 1));
                    1
                }
                b'(' => match input[after + 1..].find(')') {
                    Some(len) => {
                        out.push((
                            Piece::Ref(&input[after + 1..after + 1 + len]),
                            cursor..after + len + 2,
                        ));
                        len + 2
                    }
                    None => {
                        out.push((Piece::Text("$("), cursor..after + 1));
                        1
                    }
                },
                _ => {
                    // `$` and the character after it, both kept.
                    let width = input[after..].chars().next().map_or(1, char::len_utf8);
                    out.push((
                        Piece::Text(&input[cursor..after + width]),
                        cursor..after + width,
                    ));
                    width
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    let tail = checkpoint.min(input.len());
    out.push((Piece::Text(&input[tail..]), tail..input.len()));
    out.retain(|(p, _)| *p != Piece::Text(""));
    out
}

/// Whether a `value` refers to `name` (a `$(name)` the kubelet would replace).
pub fn references(value: &str, name: &str) -> bool {
    pieces(value).contains(&Piece::Ref(name))
}

/// One `envFrom` source, as far as the engine can read it.
struct Layer<'a> {
    prefix: &'a str,
    source: Source<'a>,
    /// As messages name it.
    from: String,
}

enum Source<'a> {
    /// A ConfigMap the facts show: exactly its data.
    Data(&'a BTreeMap<String, String>),
    /// A ConfigMap the facts do not show: any name with the prefix.
    Unseen,
    /// A Secret (never read): any name with the prefix but [`NOT_IN_SECRETS`].
    Secret,
}

/// A variable's value where the environment is being built, borrowed.
#[derive(Clone, Copy)]
enum Seen<'e> {
    Known(&'e str, &'e str),
    Unknown(&'e str),
}

impl Seen<'_> {
    fn to_value(self) -> Value {
        match self {
            Seen::Known(value, from) => Value::Known {
                value: value.to_owned(),
                from: from.to_owned(),
            },
            Seen::Unknown(from) => Value::Unknown {
                from: from.to_owned(),
            },
        }
    }
}

/// A container's environment as the kubelet builds it, from the pod and the facts.
pub struct Env<'a> {
    layers: Vec<Layer<'a>>,
    names: Vec<&'a str>,
    /// What each `env` entry sets; `None` where the kubelet skips it.
    entries: Vec<Option<Value>>,
    services: Services<'a>,
}

impl<'a> Env<'a> {
    /// The environment of `c` in a pod of `namespace`, service links unknown.
    pub fn of(c: &'a Container, namespace: Option<&'a str>, facts: &'a Facts) -> Self {
        Self::with_services(c, namespace, facts, Services::Unknown)
    }

    pub fn with_services(
        c: &'a Container,
        namespace: Option<&'a str>,
        facts: &'a Facts,
        services: Services<'a>,
    ) -> Self {
        let layers = c
            .env_from
            .iter()
            .flatten()
            .filter_map(|src| {
                let prefix = src.prefix.as_deref().unwrap_or("");
                if let Some(cm) = &src.config_map_ref {
                    let source = facts
                        .config_map(namespace, &cm.name)
                        .map_or(Source::Unseen, Source::Data);
                    Some(Layer {
                        prefix,
                        source,
                        from: config_map(&cm.name),
                    })
                } else {
                    src.secret_ref.as_ref().map(|s| Layer {
                        prefix,
                        source: Source::Secret,
                        from: ["Secret ", &s.name].concat(),
                    })
                }
            })
            .collect();
        let entries = c.env.as_ref().map_or(0, Vec::len);
        let mut env = Env {
            layers,
            names: Vec::with_capacity(entries),
            entries: Vec::with_capacity(entries),
            services,
        };
        let mut budget = EXPANSION_BUDGET;
        for e in c.env.iter().flatten() {
            let value = env.resolve(e, namespace, facts, &mut budget);
            env.names.push(&e.name);
            env.entries.push(value);
        }
        env
    }

    /// The value `name` ends with; `None` when nothing sets it.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.lookup(self.entries.len(), name).map(Seen::to_value)
    }

    /// The value `name` has where `env` entry `index` is expanded: `envFrom`, the entries
    /// before it, then the service links.
    pub fn before(&self, index: usize, name: &str) -> Option<Value> {
        self.lookup(index.min(self.entries.len()), name)
            .map(Seen::to_value)
    }

    /// What `env` entry `index` sets; `None` where the kubelet skips it (or there is none).
    pub fn entry(&self, index: usize) -> Option<&Value> {
        self.entries.get(index)?.as_ref()
    }

    /// What the first `pos` entries, `envFrom` and the service links give `name`.
    fn lookup(&self, pos: usize, name: &str) -> Option<Seen<'_>> {
        self.defined(pos, name).or_else(|| self.service(name))
    }

    /// The environment built so far (`tmpEnv`): `envFrom`, then the first `pos` entries.
    fn defined(&self, pos: usize, name: &str) -> Option<Seen<'_>> {
        let set = (0..pos)
            .rev()
            .filter(|&i| self.names[i] == name)
            .find_map(|i| self.entries[i].as_ref());
        if let Some(v) = set {
            return Some(match v {
                Value::Known { value, from } => Seen::Known(value, from),
                Value::Unknown { from } => Seen::Unknown(from),
            });
        }
        self.layers.iter().rev().find_map(|l| {
            let key = name.strip_prefix(l.prefix)?;
            match l.source {
                Source::Data(data) => data.get(key).map(|v| Seen::Known(v, &l.from)),
                Source::Unseen => Some(Seen::Unknown(&l.from)),
                Source::Secret if NOT_IN_SECRETS.contains(&name) => None,
                Source::Secret => Some(Seen::Unknown(&l.from)),
            }
        })
    }

    fn service(&self, name: &str) -> Option<Seen<'_>> {
        match self.services {
            Services::Known(env) => env.get(name).map(|v| Seen::Known(v, "a service link")),
            Services::Unknown if could_be_service_link(name) => {
                Some(Seen::Unknown("a service link variable"))
            }
            Services::Unknown => None,
        }
    }

    /// What one entry sets, against the entries resolved so far.
    fn resolve(
        &self,
        e: &EnvVar,
        namespace: Option<&str>,
        facts: &Facts,
        budget: &mut usize,
    ) -> Option<Value> {
        let value = e.value.as_deref().unwrap_or("");
        if !value.is_empty() {
            return Some(self.expand(value, budget));
        }
        let Some(src) = &e.value_from else {
            return Some(Value::Known {
                value: String::new(),
                from: FROM_LITERAL.into(),
            });
        };
        let Some(sel) = &src.config_map_key_ref else {
            return Some(Value::Unknown {
                from: describe_source(src),
            });
        };
        let from = config_map_key(&sel.name, &sel.key);
        match facts.config_map(namespace, &sel.name) {
            // A missing key: skipped when optional; otherwise the container does not start,
            // and a container that never runs gets nothing either.
            Some(data) => data.get(&sel.key).map(|v| Value::Known {
                value: v.clone(),
                from,
            }),
            None => Some(Value::Unknown { from }),
        }
    }

    /// `expansion.Expand` of `input` against the entries resolved so far.
    fn expand(&self, input: &str, budget: &mut usize) -> Value {
        let pos = self.entries.len();
        let pieces = pieces(input);
        // (text, whether it is an undefined name, kept as `$(name)`)
        let literal = !pieces.iter().any(|p| matches!(p, Piece::Ref(_)));
        let mut parts = Vec::with_capacity(pieces.len());
        let mut len = 0;
        for p in pieces {
            let part = match p {
                Piece::Text(t) => (t, false),
                Piece::Ref(name) => match self.lookup(pos, name) {
                    Some(Seen::Known(v, _)) => (v, false),
                    Some(Seen::Unknown(from)) => {
                        return Value::Unknown {
                            from: from.to_owned(),
                        };
                    }
                    None => (name, true),
                },
            };
            len += part.0.len() + if part.1 { 3 } else { 0 };
            parts.push(part);
        }
        if len > *budget {
            return Value::Unknown {
                from: "a value too long to follow".into(),
            };
        }
        *budget -= len;
        let mut value = String::with_capacity(len);
        for (text, undefined) in parts {
            if undefined {
                value.extend(["$(", text, ")"]);
            } else {
                value.push_str(text);
            }
        }
        Value::Known {
            value,
            from: if literal { FROM_LITERAL } else { FROM_ENV }.into(),
        }
    }
}

#[cfg(test)]
mod tests;
