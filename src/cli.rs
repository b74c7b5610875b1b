//! `harbor-iam-webhook mutate`: the server's decision, previewed from files.

use std::io::Read;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use serde::Deserialize;
use serde_json::Value;

use base64::Engine as _;

use crate::admission::{self, Decision, Endpoint};
use crate::config::{MutateArgs, Output};
use crate::facts::Facts;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML or JSON: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("cannot write the output: {0}")]
    Write(String),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// How a run ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Printed the result (mutated or unchanged).
    Printed,
    /// The server would refuse this pod; the message says why.
    Denied(String),
}

fn read_input(path: &Path) -> Result<String, CliError> {
    let shown = path.display().to_string();
    let mut text = String::new();
    let res = if shown == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    res.map_err(|source| CliError::Read {
        path: shown,
        source,
    })?;
    Ok(text)
}

/// The non-empty YAML documents of `text` (JSON is YAML too). Aliases and `<<` merge keys
/// are resolved as kubectl's reader resolves them, so the engine sees every entry the API
/// server would get (a password a merge carries included).
fn documents(text: &str, path: &str) -> Result<Vec<Value>, CliError> {
    let parse = |message: String| CliError::Parse {
        path: path.into(),
        message,
    };
    let mut docs = Vec::new();
    // JSON is read as JSON, as kubectl does: a YAML reader refuses some characters JSON allows
    // unescaped (DEL, C1 controls).
    if text.trim_start().starts_with('{') {
        for doc in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            docs.push(doc.map_err(|e| parse(e.to_string()))?);
        }
        return Ok(docs);
    }
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut yaml = serde_yaml_ng::Value::deserialize(doc).map_err(|e| parse(e.to_string()))?;
        yaml.apply_merge().map_err(|e| parse(e.to_string()))?;
        let value: Value = serde_yaml_ng::from_value(yaml).map_err(|e| parse(e.to_string()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `value` as block YAML that every reader takes back unchanged, kubectl's included
/// (`sigs.k8s.io/yaml`, which follows YAML 1.1: `on`, `y`, `1_000`, `0o17` are not strings
/// there). A string is written plain only when it can be nothing but a string; any other is
/// double-quoted.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    yaml_block(&mut out, value, 0);
    out
}

/// A collection in block style, each entry on a line of its own at `indent`.
fn yaml_block(out: &mut String, value: &Value, indent: usize) {
    let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                pad(out, indent);
                out.push_str(&yaml_string(k));
                out.push(':');
                yaml_after(out, v, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for v in items {
                pad(out, indent);
                out.push('-');
                match v {
                    // The item's first key on the dash's line, the others under it.
                    Value::Object(map) if !map.is_empty() => {
                        for (i, (k, x)) in map.iter().enumerate() {
                            pad(out, if i == 0 { 1 } else { indent + 2 });
                            out.push_str(&yaml_string(k));
                            out.push(':');
                            yaml_after(out, x, indent + 2);
                        }
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        yaml_block(out, v, indent + 2);
                    }
                    _ => yaml_after(out, v, indent),
                }
            }
        }
        _ => {
            pad(out, indent);
            out.push_str(&yaml_flow(value));
            out.push('\n');
        }
    }
}

/// What follows `key:` or `-`: a scalar on the same line, or a collection on the next ones.
fn yaml_after(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml_block(out, value, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml_block(out, value, indent);
        }
        _ => {
            out.push(' ');
            out.push_str(&yaml_flow(value));
            out.push('\n');
        }
    }
}

fn yaml_flow(value: &Value) -> String {
    match value {
        Value::String(s) => yaml_string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // null, booleans and numbers are written as JSON writes them, which YAML reads alike.
        other => other.to_string(),
    }
}

/// A string plain when it starts with a letter, holds only letters, digits and `_-./`, and is
/// no YAML 1.1 boolean or null; otherwise double-quoted, with every character a reader could
/// take for a line break or refuse as a control character escaped.
fn yaml_string(s: &str) -> String {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// ConfigMaps and ServiceAccounts from `--facts` files; `List` documents are unwrapped, other
/// kinds are reported on stderr and skipped. When any ServiceAccount is given, the files are
/// taken as the whole truth about ServiceAccounts: one they don't name does not exist.
pub fn load_facts(paths: &[impl AsRef<Path>]) -> Result<Facts, CliError> {
    let mut facts = Facts::default();
    for path in paths {
        let shown = path.as_ref().display().to_string();
        let text = read_input(path.as_ref())?;
        let mut queue = documents(&text, &shown)?;
        while let Some(doc) = queue.pop() {
            match doc.get("kind").and_then(Value::as_str) {
                Some("ConfigMap") => {
                    let cm: ConfigMap =
                        serde_json::from_value(doc).map_err(|e| CliError::Input {
                            path: shown.clone(),
                            message: format!("invalid ConfigMap: {e}"),
                        })?;
                    facts.add_config_map(cm);
                }
                Some("ServiceAccount") => {
                    let sa: ServiceAccount =
                        serde_json::from_value(doc).map_err(|e| CliError::Input {
                            path: shown.clone(),
                            message: format!("invalid ServiceAccount: {e}"),
                        })?;
                    facts.add_service_account(sa);
                    facts.set_service_accounts_complete(true);
                }
                Some(kind) if kind.ends_with("List") => {
                    if let Some(Value::Array(items)) = doc.get("items") {
                        queue.extend(items.iter().cloned());
                    }
                }
                other => eprintln!(
                    "{shown}: skipping a {} document: only ConfigMaps and ServiceAccounts are used as facts",
                    other.unwrap_or("kind-less")
                ),
            }
        }
    }
    Ok(facts)
}

/// The AdmissionReview to answer for a document: itself, or for a Pod the review of its
/// CREATE that the API server would send.
fn review_of(doc: Value, path: &str) -> Result<Value, CliError> {
    let input = |message: String| CliError::Input {
        path: path.into(),
        message,
    };
    match doc.get("kind").and_then(Value::as_str) {
        Some("AdmissionReview") => Ok(doc),
        Some("Pod") => Ok(serde_json::json!({
            "apiVersion": admission::API_VERSION,
            "kind": admission::KIND,
            "request": {
                "uid": "harbor-iam-webhook-mutate",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": doc.pointer("/metadata/namespace"),
                "operation": "CREATE",
                "object": doc,
            },
        })),
        Some(kind) => Err(input(format!(
            "expected a Pod or an AdmissionReview, got kind {kind}"
        ))),
        None => Err(input(
            "expected a Pod or an AdmissionReview, got a document without kind".into(),
        )),
    }
}

/// Run `mutate`: answer the review exactly as the server's `/mutate` does, then print the
/// result to `out`, warnings to stderr.
pub fn run(args: &MutateArgs, out: &mut impl std::io::Write) -> Result<Finished, CliError> {
    let config = args.engine.to_config()?;
    let facts = load_facts(&args.facts)?;
    let path = args.file.display().to_string();
    let mut docs = documents(&read_input(&args.file)?, &path)?;
    if docs.len() != 1 {
        return Err(CliError::Input {
            path,
            message: format!(
                "expected one Pod or AdmissionReview, found {} documents",
                docs.len()
            ),
        });
    }
    let review = review_of(docs.remove(0), &path)?;
    let input = |message: String| CliError::Input {
        path: path.clone(),
        message,
    };
    let body = serde_json::to_vec(&review).expect("a JSON value always serialises");
    let (answer, summary) = admission::review(&body, Endpoint::Mutate, &config, &facts)
        .map_err(|e| input(e.to_string()))?;
    let response = answer.response;
    for w in &response.warnings {
        eprintln!("warning: {w}");
    }
    if !response.allowed {
        let message = response.status.map(|s| s.message).unwrap_or_default();
        if summary.decision == Some(Decision::Invalid) {
            return Err(input(message));
        }
        return Ok(Finished::Denied(message));
    }
    if summary.decision == Some(Decision::Skipped) {
        eprintln!("left unchanged: {}", summary.reason.as_str());
    }
    let patch: json_patch::Patch = match &response.patch {
        None => json_patch::Patch(vec![]),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                CliError::Write("the response's patch does not decode (a bug)".into())
            })?,
    };
    let write_err = |e: String| CliError::Write(e);
    match args.output {
        Output::Patch => {
            serde_json::to_writer_pretty(&mut *out, &patch)
                .map_err(|e| write_err(e.to_string()))?;
            writeln!(out).map_err(|e| write_err(e.to_string()))?;
        }
        Output::Json | Output::Yaml => {
            let mut object = review
                .pointer("/request/object")
                .cloned()
                .unwrap_or(Value::Null);
            json_patch::patch(&mut object, &patch).map_err(|e| {
                write_err(format!(
                    "the patch does not apply to the input (a bug): {e}"
                ))
            })?;
            if args.output == Output::Json {
                serde_json::to_writer_pretty(&mut *out, &object)
                    .map_err(|e| write_err(e.to_string()))?;
                writeln!(out).map_err(|e| write_err(e.to_string()))?;
            } else {
                out.write_all(to_yaml(&object).as_bytes())
                    .map_err(|e| write_err(e.to_string()))?;
            }
        }
    }
    Ok(Finished::Printed)
}

/// Run `audit` against the current kubeconfig: findings to `out`; `Ok(true)` when clean.
pub async fn audit(
    args: &crate::config::AuditArgs,
    out: &mut impl std::io::Write,
) -> Result<bool, CliError> {
    let config = args.engine.to_check_config()?;
    let client = crate::cluster::client()
        .await
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let (namespaces, findings) = crate::audit::run(&client, &args.namespaces, &config)
        .await
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let w = |e: std::io::Error| CliError::Write(e.to_string());
    match args.output {
        crate::config::AuditOutput::Json => {
            let doc = serde_json::json!({"namespaces": namespaces, "findings": findings});
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).expect("JSON values serialise")
            )
            .map_err(w)?;
        }
        crate::config::AuditOutput::Text => {
            if namespaces.is_empty() {
                writeln!(
                    out,
                    "no namespace is labelled harbor-iam-webhook/inject=enabled"
                )
                .map_err(w)?;
            }
            for f in &findings {
                writeln!(out, "{}/{} ({}):", f.namespace, f.pod, f.component).map_err(w)?;
                for p in &f.problems {
                    writeln!(out, "  - {p}").map_err(w)?;
                }
                writeln!(out, "  fix: {}", f.fix).map_err(w)?;
            }
            writeln!(
                out,
                "{} namespace(s) audited, {} pod(s) need attention",
                namespaces.len(),
                findings.len()
            )
            .map_err(w)?;
        }
    }
    Ok(findings.is_empty())
}

/// Run `check`: the report to `out`; `Ok(true)` when no check failed. `Err` when it could not
/// run at all (no client, API server unreachable).
pub async fn check(
    args: &crate::config::CheckArgs,
    out: &mut impl std::io::Write,
) -> Result<bool, CliError> {
    let client = crate::check::gather::client(args.kubeconfig.as_deref(), args.context.as_deref())
        .await
        .map_err(CliError::Cluster)?;
    client
        .apiserver_version()
        .await
        .map_err(|e| CliError::Cluster(format!("the API server does not answer: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let report = crate::check::gather::run(&client, &args.namespace, now).await;
    let text = match args.output {
        crate::config::AuditOutput::Json => format!("{}\n", report.json()),
        crate::config::AuditOutput::Text => report.text(),
    };
    out.write_all(text.as_bytes())
        .map_err(|e| CliError::Write(e.to_string()))?;
    Ok(!report.failed())
}
