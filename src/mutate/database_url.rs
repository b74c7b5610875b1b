//! `POSTGRESQL_URL` bypasses every other DB setting in Harbor (its pool hands the string to
//! pgx as is): a password inside it would survive the blanking of `POSTGRESQL_PASSWORD`, and its
//! sslmode is the one that counts. The string is judged as pgx reads it ([`conninfo`]) after the
//! kubelet's `$(VAR)` expansion ([`Env`]), with the container's `PGPASSWORD`, `PGSSLMODE` and
//! `PGSERVICE` filling what it leaves unset.

use std::ops::Range;

use k8s_openapi::api::core::v1::Container;

use super::conninfo::{self, Origin};
use super::effective::{Env, FROM_LITERAL, Piece, Value, spans};
use super::sslmode::is_strong;
use crate::consts::{PGPASSWORD, PGSERVICE, PGSSLMODE, POSTGRESQL_URL, SSLMODE_REQUIRE};
use crate::facts::Facts;

/// Where the connection's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// None, or an empty one.
    None,
    /// A value the webhook can read: a static password.
    Known { from: String },
    /// Somewhere the webhook can't read.
    Unknown { from: String },
}

/// The connection's effective sslmode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `require`, `verify-ca` or `verify-full`.
    Strong(String),
    /// Weaker than `require` (absent: pgx's default `prefer`). `fix` is the `env` entry's new
    /// `value` that makes it `require`, when the entry's literal text can be edited safely.
    Weak {
        was: Option<String>,
        fix: Option<(usize, String)>,
    },
    /// Somewhere the webhook can't read.
    Unknown { from: String },
    /// pgx would refuse the string: Harbor can't connect with it.
    Unparsable,
}

/// What a container's `POSTGRESQL_URL` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub password: Password,
    pub mode: Mode,
}

/// The expanded string, piece by piece: literal text (with the bytes of the entry's `value` it
/// was read from) or a reference's value (with where that comes from).
struct Expansion {
    text: String,
    segments: Vec<(Range<usize>, Segment)>,
}

enum Segment {
    Literal(Range<usize>),
    Reference(String),
}

/// Expand `env` entry `index` (a `value`) with what the kubelet sets before it. `None` when a
/// reference is unknown.
fn expand(raw: &str, env: &Env, index: usize) -> Option<Expansion> {
    let mut text = String::new();
    let mut segments = Vec::new();
    for (piece, span) in spans(raw) {
        let start = text.len();
        let segment = match piece {
            Piece::Text(t) => {
                text.push_str(t);
                Segment::Literal(span)
            }
            Piece::Ref(name) => match env.before(index, name) {
                Some(Value::Known { value, from }) => {
                    text.push_str(&value);
                    Segment::Reference(from)
                }
                Some(Value::Unknown { .. }) => return None,
                None => {
                    text.push_str(&raw[span.clone()]);
                    Segment::Literal(span)
                }
            },
        };
        segments.push((start..text.len(), segment));
    }
    Some(Expansion { text, segments })
}

impl Expansion {
    /// The bytes of the raw value that give `range` of the expansion, when all of it is
    /// literal text (read byte for byte, or `$$` pairs taken whole).
    fn raw_range(&self, range: &Range<usize>) -> Option<Range<usize>> {
        let raw_at = |p: usize| {
            self.segments.iter().find_map(|(out, s)| match s {
                Segment::Literal(r) if p == out.start => Some(r.start),
                Segment::Literal(r) if p == out.end => Some(r.end),
                Segment::Literal(r) if out.contains(&p) && r.len() == out.len() => {
                    Some(r.start + (p - out.start))
                }
                _ => None,
            })
        };
        if range.is_empty() {
            let p = if self.segments.is_empty() {
                Some(0)
            } else {
                raw_at(range.start)
            };
            return p.map(|p| p..p);
        }
        let overlapping = self
            .segments
            .iter()
            .filter(|(out, _)| out.start < range.end && out.end > range.start);
        let mut raw: Option<Range<usize>> = None;
        for (out, segment) in overlapping {
            if !matches!(segment, Segment::Literal(_)) {
                return None;
            }
            let start = raw_at(range.start.max(out.start))?;
            let end = raw_at(range.end.min(out.end))?;
            raw = match raw {
                None => Some(start..end),
                Some(prev) if prev.end == start => Some(prev.start..end),
                Some(_) => return None,
            };
        }
        raw
    }

    /// Where the text in `range` comes from: the first reference it touches, else literal.
    fn source(&self, range: &Range<usize>, literal: &str) -> String {
        self.segments
            .iter()
            .filter(|(out, _)| out.start < range.end && out.end > range.start)
            .find_map(|(_, s)| match s {
                Segment::Reference(from) => Some(from.clone()),
                Segment::Literal(_) => None,
            })
            .unwrap_or_else(|| literal.to_owned())
    }
}

/// The env entry that gives the container its final `POSTGRESQL_URL`, if one does.
fn winning_entry(c: &Container, env: &Env) -> Option<usize> {
    c.env
        .iter()
        .flatten()
        .enumerate()
        .filter(|(i, e)| e.name == POSTGRESQL_URL && env.entry(*i).is_some())
        .map(|(i, _)| i)
        .last()
}

/// A name pgx reads from the environment, set to something non-empty (or unknown).
fn set(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| v.known() != Some(""))
}

/// Judge the container's `POSTGRESQL_URL`; `None` when it has none (or an empty one).
pub fn judge(c: &Container, ns: Option<&str>, facts: &Facts) -> Option<Judgement> {
    let env = Env::of(c, ns, facts);
    let (value, from) = match env.get(POSTGRESQL_URL)? {
        Value::Unknown { from } => {
            return Some(Judgement {
                password: Password::Unknown { from: from.clone() },
                mode: Mode::Unknown { from },
            });
        }
        Value::Known { value, .. } if value.is_empty() => return None,
        Value::Known { value, from } => (value, from),
    };
    let Ok(info) = conninfo::parse(&value) else {
        return Some(Judgement {
            password: if has_password(&value) {
                Password::Known { from }
            } else {
                Password::None
            },
            mode: Mode::Unparsable,
        });
    };
    // The entry's literal text, when the final value is that entry's expanded `value`.
    let entry = winning_entry(c, &env).and_then(|i| {
        let raw = c.env.as_ref()?[i]
            .value
            .as_deref()
            .filter(|v| !v.is_empty())?;
        let x = expand(raw, &env, i)?;
        (x.text == value).then_some((i, raw, x))
    });
    let (pgpassword, pgsslmode, pgservice) =
        (env.get(PGPASSWORD), env.get(PGSSLMODE), env.get(PGSERVICE));
    let service = set(&pgservice);
    let service_from = || match &pgservice {
        Some(v) => ["the service file (service from ", v.from(), ")"].concat(),
        None => "the service file (service in POSTGRESQL_URL)".to_owned(),
    };
    let in_string = |span: &Range<usize>| match &entry {
        Some((_, _, x)) => x.source(span, FROM_LITERAL),
        None => from.clone(),
    };
    let password = match conninfo::origin(&info, "password", set(&pgpassword), service) {
        Origin::String(s) if s.value.is_empty() => Password::None,
        Origin::String(s) => Password::Known {
            from: in_string(&s.span),
        },
        Origin::Service => Password::Unknown {
            from: service_from(),
        },
        Origin::Env => match pgpassword {
            Some(Value::Known { from, .. }) => Password::Known {
                from: [PGPASSWORD, ", from ", &from].concat(),
            },
            Some(Value::Unknown { from }) => Password::Unknown {
                from: [PGPASSWORD, ", from ", &from].concat(),
            },
            None => Password::None,
        },
        Origin::Unset => Password::None,
    };
    let weak = |was: Option<String>| {
        let fix = entry.as_ref().and_then(|(i, raw, x)| {
            let edited = match info.get("sslmode") {
                Some(s) => {
                    let r = x.raw_range(&s.span)?;
                    [&raw[..r.start], SSLMODE_REQUIRE, &raw[r.end..]].concat()
                }
                None => conninfo::append_sslmode(raw, info.form),
            };
            // Held to what the kubelet and pgx would then make of it.
            let after = expand(&edited, &env, *i)?;
            let again = conninfo::parse(&after.text).ok()?;
            let same_password =
                again.get("password").map(|s| s.value) == info.get("password").map(|s| s.value);
            (again.get("sslmode").map(|s| s.value).as_deref() == Some(SSLMODE_REQUIRE)
                && same_password)
                .then_some((*i, edited))
        });
        Mode::Weak { was, fix }
    };
    let mode = match conninfo::origin(&info, "sslmode", set(&pgsslmode), service) {
        Origin::String(s) if is_strong(&s.value) => Mode::Strong(s.value),
        Origin::String(s) => weak(Some(s.value)),
        Origin::Service => Mode::Unknown {
            from: service_from(),
        },
        Origin::Env => match pgsslmode {
            Some(Value::Known { value, .. }) if is_strong(&value) => Mode::Strong(value),
            Some(Value::Known { value, .. }) => weak(Some(value)),
            Some(Value::Unknown { from }) => Mode::Unknown {
                from: [PGSSLMODE, ", from ", &from].concat(),
            },
            None => weak(None),
        },
        Origin::Unset => weak(None),
    };
    Some(Judgement { password, mode })
}

/// The connection string's password as pgx reads the string alone: `Some("")` for an explicit
/// empty one, `None` when the string sets none (or pgx would refuse the string).
pub fn password_in(conn: &str) -> Option<String> {
    conninfo::parse(conn).ok()?.get("password").map(|s| s.value)
}

/// True when a PostgreSQL connection string carries a non-empty password. A string pgx would
/// refuse is read leniently (a URI's userinfo or `password=` in its query, or a `password`
/// keyword), since it still holds the text.
pub fn has_password(conn: &str) -> bool {
    if let Ok(info) = conninfo::parse(conn) {
        return info.get("password").is_some_and(|s| !s.value.is_empty());
    }
    let conn = conn.trim();
    match conn.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => uri_password(rest),
        _ => keyword_password(conn),
    }
}

fn is_scheme(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn uri_password(rest: &str) -> bool {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let in_userinfo = rest[..end]
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, pw)| !pw.is_empty());
    let query = rest[end..].split_once('?').map(|(_, q)| q).unwrap_or("");
    in_userinfo
        || query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .any(|(k, v)| k == "password" && !v.is_empty())
}

fn keyword_password(conn: &str) -> bool {
    const KEY: &str = "password";
    let mut rest = conn;
    while let Some(pos) = rest.find(KEY) {
        let starts_word = pos == 0 || rest[..pos].ends_with(char::is_whitespace);
        let value = rest[pos + KEY.len()..]
            .trim_start()
            .strip_prefix('=')
            .map(str::trim_start);
        if starts_word && value.is_some_and(|v| !v.is_empty() && !v.starts_with("''")) {
            return true;
        }
        rest = &rest[pos + KEY.len()..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapKeySelector, EnvVar, EnvVarSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lit(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, cm: Option<&str>, key: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(match cm {
                Some(cm) => EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: cm.into(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                None => EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "db".into(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            }),
        }
    }

    fn c(env: Vec<EnvVar>) -> Container {
        Container {
            name: "core".into(),
            env: Some(env),
            ..Default::default()
        }
    }

    fn facts() -> Facts {
        Facts::with_config_maps([ConfigMap {
            metadata: ObjectMeta {
                name: Some("db".into()),
                ..Default::default()
            },
            data: Some(
                [
                    ("pw".to_string(), "s3cret".to_string()),
                    ("mode".to_string(), "disable".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        }])
    }

    fn judged(env: Vec<EnvVar>) -> Judgement {
        judge(&c(env), None, &facts()).expect("a URL")
    }

    fn fixed(j: &Judgement) -> Option<&str> {
        match &j.mode {
            Mode::Weak { fix, .. } => fix.as_ref().map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    #[test]
    fn harbor_next_tls_dsn_blanked_is_fine_and_keeps_verify_full() {
        let j = judged(vec![
            lit("POSTGRESQL_PASSWORD", ""),
            lit(
                "POSTGRESQL_URL",
                "host=db port=5432 user=harbor password='$(POSTGRESQL_PASSWORD)' dbname=registry \
                 sslmode=verify-full sslrootcert=/etc/harbor/db-tls/ca.crt",
            ),
        ]);
        assert_eq!(j.password, Password::None);
        assert_eq!(j.mode, Mode::Strong("verify-full".into()));
    }

    #[test]
    fn passwords_known_unknown_and_where_from() {
        let j = judged(vec![lit("POSTGRESQL_URL", "postgres://u:pw@db/x")]);
        assert_eq!(
            j.password,
            Password::Known {
                from: "a literal value".into()
            }
        );
        let j = judged(vec![
            from("DB_PW", Some("db"), "pw"),
            lit("POSTGRESQL_URL", "host=db password=$(DB_PW)"),
        ]);
        assert_eq!(
            j.password,
            Password::Known {
                from: "ConfigMap db key pw".into()
            }
        );
        let j = judged(vec![
            from("PGPASSWORD", Some("db"), "pw"),
            lit("POSTGRESQL_URL", "host=db"),
        ]);
        assert_eq!(
            j.password,
            Password::Known {
                from: "PGPASSWORD, from ConfigMap db key pw".into()
            }
        );
        // An explicit empty password in the string wins over PGPASSWORD.
        let j = judged(vec![
            lit("PGPASSWORD", "x"),
            lit("POSTGRESQL_URL", "host=db password=''"),
        ]);
        assert_eq!(j.password, Password::None);
        let j = judged(vec![
            from("DB_PW", None, "pw"),
            lit("POSTGRESQL_URL", "host=db password=$(DB_PW)"),
        ]);
        assert!(matches!(j.password, Password::Unknown { ref from } if from == "Secret db key pw"));
        let j = judged(vec![lit("POSTGRESQL_URL", "service=harbor")]);
        assert!(matches!(j.password, Password::Unknown { .. }));
        assert!(matches!(j.mode, Mode::Unknown { .. }));
    }

    #[test]
    fn sslmode_rewrites_only_literal_text() {
        let j = judged(vec![lit("POSTGRESQL_URL", "host=db sslmode=disable")]);
        assert_eq!(fixed(&j), Some("host=db sslmode=require"));
        // A weak PGSSLMODE: appended. A strong one: kept, nothing appended.
        let j = judged(vec![
            lit("PGSSLMODE", "allow"),
            lit("POSTGRESQL_URL", "postgres://db/x?a=b"),
        ]);
        assert_eq!(fixed(&j), Some("postgres://db/x?a=b&sslmode=require"));
        let j = judged(vec![
            lit("PGSSLMODE", "verify-full"),
            lit("POSTGRESQL_URL", "postgres://db/x"),
        ]);
        assert_eq!(j.mode, Mode::Strong("verify-full".into()));
        // References stay references; a literal sslmode after them is rewritten.
        let j = judged(vec![
            lit("HOST", "db"),
            lit("POSTGRESQL_URL", "host=$(HOST) sslmode=pre$$fer"),
        ]);
        assert_eq!(fixed(&j), Some("host=$(HOST) sslmode=require"));
        // The sslmode itself from a reference: no safe rewrite.
        let j = judged(vec![
            from("MODE", Some("db"), "mode"),
            lit("POSTGRESQL_URL", "host=db sslmode=$(MODE)"),
        ]);
        assert_eq!(
            j.mode,
            Mode::Weak {
                was: Some("disable".into()),
                fix: None
            }
        );
        // A trailing backslash would swallow an appended setting: no fix.
        let j = judged(vec![lit("POSTGRESQL_URL", "host=db\\")]);
        assert_eq!(fixed(&j), None);
        // From a ConfigMap key: nothing to edit in the pod.
        let mut f = facts();
        f.add_config_map(ConfigMap {
            metadata: ObjectMeta {
                name: Some("url".into()),
                ..Default::default()
            },
            data: Some([("u".to_string(), "host=db".to_string())].into()),
            ..Default::default()
        });
        let j = judge(&c(vec![from("POSTGRESQL_URL", Some("url"), "u")]), None, &f).unwrap();
        assert_eq!(
            j.mode,
            Mode::Weak {
                was: None,
                fix: None
            }
        );
        // Unparsable.
        let j = judged(vec![lit("POSTGRESQL_URL", "host=db password='x")]);
        assert_eq!(j.mode, Mode::Unparsable);
        assert!(matches!(j.password, Password::Known { .. }));
    }

    #[test]
    fn has_password_forms() {
        assert!(has_password("postgres://harbor:s3cret@db:5432/registry"));
        assert!(has_password(
            "postgres://db/registry?sslmode=require&password=x"
        ));
        assert!(!has_password(
            "postgres://harbor@db:5432/registry?sslmode=require"
        ));
        assert!(!has_password("postgres://harbor:@db/registry"));
        assert!(has_password(
            "host=db user=harbor password=s3cret dbname=registry"
        ));
        assert!(has_password("host=db password = 'x y'"));
        assert!(has_password("host=db password= user=harbor"));
        assert!(!has_password("host=db password='' user=harbor"));
        assert!(!has_password("host=db passwordfile=/x"));
        assert!(!has_password(""));
        assert_eq!(password_in("host=db password=''").as_deref(), Some(""));
    }
}
