//! Differential test: the engine's reading of a connection string (`mutate::conninfo`, and
//! `mutate::database_url` on a container) against pgx's own `pgconn.ParseConfig`, over
//! generated strings in both forms (quoting, escapes, blanks around `=`, percent-encoding,
//! repeated keys, `ssl=true`, `service`, `$(VAR)` references the kubelet expands) with generated
//! `PGPASSWORD`/`PGSSLMODE`/`PGSERVICE`. Compared: whether pgx accepts the string, the password
//! and the sslmode pgx ends with, before and after the engine's rewrite to `require`, and that
//! the rewrite changes nothing else pgx reads. The Go side is `tests/e2e/tools/pgx`; it needs
//! `go` and the Go module proxy (or a warm module cache), as the end-to-end suite does.

mod common;

use std::collections::BTreeMap;

use harbor_iam_webhook::facts::Facts;
use harbor_iam_webhook::mutate::conninfo::{self, Origin};
use harbor_iam_webhook::mutate::database_url::{Mode, judge};
use harbor_iam_webhook::mutate::effective::{Env, Value as EnvValue};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

const CASES: usize = 3000;
const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
    "",
    "bogus",
    "Require",
];
/// What the Go program's service file says for service "svc".
const SERVICE_PASSWORD: &str = "from-service";
const SERVICE_SSLMODE: &str = "allow";

/// A key/value value written unquoted (blanks, quotes and backslashes escaped) or quoted.
fn kv_value(v: &str, quoted: bool) -> String {
    let mut out = String::new();
    if quoted {
        out.push('\'');
    }
    for c in v.chars() {
        if c == '\\' || c == '\'' || (!quoted && c == ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    if quoted {
        out.push('\'');
    }
    out
}

fn key_value() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        3 => prop::sample::select(SSLMODES).prop_map(|v| ("sslmode", v.to_owned())),
        3 => prop::sample::select(&["", "pw", "p w", "it's", "a\\b", "x=y", "é"][..])
            .prop_map(|v| ("password", v.to_owned())),
        2 => prop::sample::select(&["db", "$(HOST)", "$$x"][..]).prop_map(|v| ("host", v.to_owned())),
        1 => prop::sample::select(&["harbor", ""][..]).prop_map(|v| ("user", v.to_owned())),
        1 => Just(("dbname", "registry".to_owned())),
        1 => Just(("application_name", "core x".to_owned())),
        1 => Just(("service", "svc".to_owned())),
    ];
    let sep = prop::sample::select(&["=", " = ", "= ", " =\t"][..]);
    let gap = prop::sample::select(&[" ", "  ", "\t", "\n "][..]);
    let junk = prop::sample::select(
        &[
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "'",
            "\\",
            "=",
            " x",
            "$(PGPASSWORD)",
        ][..],
    );
    (
        prop::collection::vec((pair, sep, any::<bool>(), gap), 0..6),
        prop::sample::select(&["", " ", "  "][..]),
        junk,
    )
        .prop_map(|(pairs, lead, junk)| {
            let mut s = lead.to_owned();
            for ((key, value), sep, quoted, gap) in pairs {
                // `$(…)` and `$$` stay unescaped: the kubelet reads them before pgx does.
                let written = if value.contains('$') {
                    value.clone()
                } else {
                    kv_value(&value, quoted || value.is_empty())
                };
                s.extend([key, sep, &written, gap]);
            }
            s.push_str(junk);
            s
        })
}

fn uri() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        3 => prop::sample::select(&["disable", "prefer", "verify-full", "require", "dis%61ble", "", "x"][..])
            .prop_map(|v| ["sslmode=", v].concat()),
        2 => prop::sample::select(&["true", "false"][..]).prop_map(|v| ["ssl=", v].concat()),
        2 => prop::sample::select(&["", "q", "p%20w", "%40"][..]).prop_map(|v| ["password=", v].concat()),
        1 => Just("application_name=core".to_owned()),
        1 => Just("service=svc".to_owned()),
    ];
    (
        prop::sample::select(&["postgres://", "postgresql://"][..]),
        prop::sample::select(
            &[
                "",
                "harbor@",
                "harbor:@",
                "harbor:s3cret@",
                "harbor:p%3Aw@",
                ":x@",
            ][..],
        ),
        prop::sample::select(&["db", "db:5432", "$(HOST)", "[::1]:5432"][..]),
        prop::sample::select(&["", "/", "/registry"][..]),
        prop::option::of(prop::collection::vec(param, 0..4)),
        prop::sample::select(&["", "", "", "", "", "", "", "&", "=", " x", "%zz"][..]),
    )
        .prop_map(|(scheme, userinfo, host, path, query, junk)| {
            let mut s = [scheme, userinfo, host, path].concat();
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q.join("&"));
            }
            s.push_str(junk);
            s
        })
}

fn case() -> impl Strategy<Value = (String, BTreeMap<String, String>)> {
    let env = (
        prop::option::of(prop::sample::select(&["", "envpw"][..])),
        prop::option::of(prop::sample::select(SSLMODES)),
        prop::option::of(Just("svc")),
    )
        .prop_map(|(pw, mode, svc)| {
            let mut env = BTreeMap::new();
            if let Some(pw) = pw {
                env.insert("PGPASSWORD".to_owned(), pw.to_owned());
            }
            if let Some(mode) = mode {
                env.insert("PGSSLMODE".to_owned(), mode.to_owned());
            }
            // A service named by the environment is rarer than one in the string.
            if let Some(svc) = svc.filter(|_| env.len() == 2) {
                env.insert("PGSERVICE".to_owned(), svc.to_owned());
            }
            env
        });
    (prop_oneof![key_value(), uri()], env)
}

/// The container the string sits in: the PG* variables, `HOST=db`, then `POSTGRESQL_URL`.
fn container(raw: &str, env: &BTreeMap<String, String>) -> Container {
    let mut entries: Vec<EnvVar> = env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            value_from: None,
        })
        .collect();
    entries.push(EnvVar {
        name: "HOST".into(),
        value: Some("db".into()),
        value_from: None,
    });
    entries.push(EnvVar {
        name: "POSTGRESQL_URL".into(),
        value: Some(raw.into()),
        value_from: None,
    });
    Container {
        name: "core".into(),
        env: Some(entries),
        ..Default::default()
    }
}

/// What the kubelet hands the container as `POSTGRESQL_URL`.
fn expanded(c: &Container) -> String {
    match Env::of(c, None, &Facts::default()).get("POSTGRESQL_URL") {
        Some(EnvValue::Known { value, .. }) => value,
        other => panic!("everything is known here: {other:?}"),
    }
}

fn pgx(cases: &[Value]) -> Vec<Value> {
    common::go_run("pgx", ".", &cases)
}

/// The TLS behaviour an sslmode gives in pgx: empty is `prefer`; anything else unknown is
/// refused.
fn tls_of(mode: &str) -> &str {
    match mode {
        "" => "prefer",
        m if SSLMODES[..6].contains(&m) => m,
        _ => "invalid",
    }
}

/// The engine's view of (password, sslmode) for a string pgx reads with `env`.
fn ours(conn: &str, env: &BTreeMap<String, String>) -> Option<(String, String)> {
    let info = conninfo::parse(conn).ok()?;
    let set = |k: &str| env.get(k).is_some_and(|v| !v.is_empty());
    let service = set("PGSERVICE");
    let password = match conninfo::origin(&info, "password", set("PGPASSWORD"), service) {
        Origin::String(s) => s.value,
        Origin::Service => SERVICE_PASSWORD.into(),
        Origin::Env => env["PGPASSWORD"].clone(),
        Origin::Unset => String::new(),
    };
    let mode = match conninfo::origin(&info, "sslmode", set("PGSSLMODE"), service) {
        Origin::String(s) => s.value,
        Origin::Service => SERVICE_SSLMODE.into(),
        Origin::Env => env["PGSSLMODE"].clone(),
        Origin::Unset => String::new(),
    };
    Some((password, tls_of(&mode).to_owned()))
}

/// `after` is `before` with one value replaced by `require`, or `sslmode=require` appended.
fn only_sslmode_changed(before: &str, after: &str) -> bool {
    let appended = [
        "sslmode=require",
        " sslmode=require",
        "?sslmode=require",
        "&sslmode=require",
    ];
    if after
        .strip_prefix(before)
        .is_some_and(|added| appended.contains(&added))
    {
        return true;
    }
    // Some `require` in `after` stands where `before` had the sslmode's value.
    after.match_indices("require").any(|(k, _)| {
        let (head, tail) = (&after[..k], &after[k + "require".len()..]);
        before.len() >= head.len() + tail.len()
            && before.starts_with(head)
            && before.ends_with(tail)
            && head
                .trim_end_matches([' ', '\t', '\n', '=', '\''])
                .ends_with("sslmode")
    })
}

#[test]
fn the_engine_reads_connection_strings_as_pgx_does() {
    let mut runner = TestRunner::new(Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7067_7820),
        ..Config::default()
    });
    let strategy = case();
    let generated: Vec<(String, BTreeMap<String, String>)> = (0..CASES)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    // Each case: the string as the kubelet expands it, and after the engine's rewrite.
    let mut plans = Vec::new();
    let mut queries = Vec::new();
    for (raw, env) in &generated {
        let c = container(raw, env);
        let before = expanded(&c);
        let judged = judge(&c, None, &Facts::default());
        let after = match judged.as_ref().map(|j| &j.mode) {
            Some(Mode::Weak {
                fix: Some((i, value)),
                ..
            }) => {
                assert!(only_sslmode_changed(raw, value), "{raw:?} -> {value:?}");
                let mut c2 = c.clone();
                c2.env.as_mut().unwrap()[*i].value = Some(value.clone());
                Some(expanded(&c2))
            }
            _ => None,
        };
        queries.push(json!({"conn": before, "env": env}));
        if let Some(after) = &after {
            queries.push(json!({"conn": after, "env": env}));
        }
        plans.push((raw, env, before, judged, after));
    }
    let answers = pgx(&queries);
    assert_eq!(answers.len(), queries.len());
    let mut answers = answers.iter();
    let (mut accepted, mut rewritten, mut unfixable, mut refused, mut other) = (0, 0, 0, 0, 0);
    for (raw, env, before, judged, after) in &plans {
        let theirs = answers.next().unwrap();
        let again = after.as_ref().map(|_| answers.next().unwrap());
        let context = format!("raw {raw:?}, expanded {before:?}, env {env:?}: pgx {theirs}");
        let mode = judged.as_ref().map(|j| &j.mode);
        match theirs["error"].as_str() {
            Some("parse") => {
                assert!(conninfo::parse(before).is_err(), "ours accepts: {context}");
                assert!(
                    before.is_empty() || mode == Some(&Mode::Unparsable),
                    "{context}"
                );
                refused += 1;
                continue;
            }
            Some("sslmode") => {
                let (_, tls) =
                    ours(before, env).unwrap_or_else(|| panic!("ours refuses: {context}"));
                assert_eq!(tls, "invalid", "{context}");
            }
            // A setting the engine does not read (a port, say): nothing to compare.
            Some("other") => {
                other += 1;
                continue;
            }
            Some(e) => panic!("unexpected answer {e}: {context}"),
            None => {
                let (password, tls) =
                    ours(before, env).unwrap_or_else(|| panic!("ours refuses: {context}"));
                assert_eq!(theirs["password"], json!(password), "password: {context}");
                assert_eq!(theirs["tls"], json!(tls), "sslmode: {context}");
                accepted += 1;
            }
        }
        let strong = ["require", "verify-ca", "verify-full"];
        match (mode, after) {
            (Some(Mode::Strong(m)), None) => {
                assert!(strong.contains(&m.as_str()), "{context}");
                assert_eq!(theirs["tls"], json!(m), "{context}");
            }
            (Some(Mode::Unknown { .. }), None) => {
                let service = env.contains_key("PGSERVICE")
                    || conninfo::parse(before).is_ok_and(|i| i.get("service").is_some());
                assert!(service, "unknown only through a service file: {context}");
            }
            (Some(Mode::Weak { fix: None, .. }), None) => unfixable += 1,
            (Some(Mode::Weak { .. }), Some(after)) => {
                let again = again.unwrap();
                let context = format!("{context}; after the rewrite {after:?}: pgx {again}");
                assert!(again.get("error").is_none(), "{context}");
                assert_eq!(again["tls"], json!("require"), "{context}");
                for key in ["password", "user", "database", "host", "port", "params"] {
                    if theirs.get("error").is_none() {
                        assert_eq!(again[key], theirs[key], "{key} changed: {context}");
                    }
                }
                rewritten += 1;
            }
            (None, None) => assert!(before.is_empty(), "{context}"),
            _ => panic!("unexpected judgement {judged:?}: {context}"),
        }
    }
    assert!(answers.next().is_none());
    // The cases are not trivially one-sided.
    assert!(accepted > CASES / 3, "{accepted} accepted by pgx");
    assert!(refused > CASES / 20, "{refused} refused by pgx");
    assert!(rewritten > CASES / 5, "{rewritten} rewritten");
    assert!(
        other < CASES / 20,
        "{other} refused for settings the engine does not read"
    );
    eprintln!(
        "accepted {accepted}, refused {refused} (+{other} elsewhere), rewritten {rewritten}, \
         not rewritable {unfixable}"
    );
}
