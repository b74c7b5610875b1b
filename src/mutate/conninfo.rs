//! A PostgreSQL connection string read as pgx reads it (`pgconn.ParseConfig` of
//! github.com/jackc/pgx/v5, which follows libpq): a URI (`postgres://` or `postgresql://`:
//! userinfo, hosts, path, `?key=value&…` percent-decoded, the last of a repeated key winning,
//! `ssl=true` as `sslmode=require`) or keyword/value pairs (blanks around `=`, single-quoted
//! values, `\` escaping the next byte, the last of a repeated key winning). Keys the string
//! leaves unset come from a service file when one is named (`service`, `PGSERVICE`), then from
//! the environment (`PGPASSWORD`, `PGSSLMODE`, …).
//!
//! Every setting keeps the byte range of its value as written, so that a rewrite can change
//! that value and keep every other byte. `tests/pgx_conninfo.rs` holds this module to pgx
//! itself over generated strings.

use std::ops::Range;

/// Which of the two forms a string is in (pgx: a URI exactly when it starts with one of the
/// two schemes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Uri,
    KeyValue,
}

/// One `key=value` the string sets, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Canonical key (`dbname` is `database`, as pgx names it).
    pub key: String,
    /// Decoded value.
    pub value: String,
    /// Where the value is written in the string (inside the quotes of a quoted value).
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub form: Form,
    pub settings: Vec<Setting>,
}

/// Why pgx would refuse the string. Never contains the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(&'static str);

const URI_SCHEMES: [&str; 2] = ["postgresql://", "postgres://"];

/// libpq's (and pgx's) blanks: `asciiSpace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    i
}

fn canonical(key: String) -> String {
    if key == "dbname" {
        "database".into()
    } else {
        key
    }
}

pub fn parse(s: &str) -> Result<ConnInfo, ParseError> {
    if s.contains('\0') {
        return Err(ParseError("a NUL byte"));
    }
    match URI_SCHEMES.iter().find(|p| s.starts_with(*p)) {
        Some(scheme) => parse_uri(s, scheme.len()),
        None => parse_key_value(s),
    }
}

impl ConnInfo {
    /// The setting `key` ends with: the last one written. For a URI, `sslmode` is also set by
    /// a final `ssl=true` written after the last `sslmode` (returned with value `require` and
    /// the span of `true`).
    pub fn get(&self, key: &str) -> Option<Setting> {
        if self.form == Form::Uri && key == "sslmode" {
            let ssl_true = self
                .settings
                .iter()
                .rfind(|s| s.key == "ssl")
                .is_some_and(|s| s.value == "true");
            let last = self
                .settings
                .iter()
                .rfind(|s| s.key == "ssl" || s.key == "sslmode")?;
            if ssl_true && last.key == "ssl" {
                return Some(Setting {
                    key: key.into(),
                    value: "require".into(),
                    span: last.span.clone(),
                });
            }
            return self.settings.iter().rfind(|s| s.key == "sslmode").cloned();
        }
        self.settings.iter().rfind(|s| s.key == key).cloned()
    }
}

/// Drop each `\` and keep the byte after it; a trailing `\` is dropped.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(next) => out.push(next),
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_key_value(s: &str) -> Result<ConnInfo, ParseError> {
    let b = s.as_bytes();
    let mut settings = Vec::new();
    let mut i = skip_space(b, 0);
    while i < b.len() {
        let eq = s[i..]
            .find('=')
            .map(|p| i + p)
            .ok_or(ParseError("a keyword without '='"))?;
        let key = s[i..eq].trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
        if key.bytes().any(is_space) {
            return Err(ParseError("a blank inside a keyword"));
        }
        let j = skip_space(b, eq + 1);
        let (value, span, next) = if j == b.len() {
            (String::new(), j..j, j)
        } else if b[j] != b'\'' {
            let mut end = j;
            while end < b.len() {
                if is_space(b[end]) {
                    break;
                }
                if b[end] == b'\\' {
                    end += 1;
                    if end == b.len() {
                        break;
                    }
                }
                end += 1;
            }
            let end = end.min(b.len());
            (unescape(&s[j..end]), j..end, skip_space(b, end))
        } else {
            let start = j + 1;
            let mut end = start;
            loop {
                if end >= b.len() {
                    return Err(ParseError("an unterminated quoted value"));
                }
                if b[end] == b'\'' {
                    break;
                }
                if b[end] == b'\\' {
                    end += 1;
                    if end == b.len() {
                        return Err(ParseError("an unterminated quoted value"));
                    }
                }
                end += 1;
            }
            (unescape(&s[start..end]), start..end, skip_space(b, end + 1))
        };
        i = next;
        let key = canonical(key.to_owned());
        if key.is_empty() {
            return Err(ParseError("an empty keyword"));
        }
        if key == "user" && value.is_empty() {
            continue;
        }
        settings.push(Setting { key, value, span });
    }
    Ok(ConnInfo {
        form: Form::KeyValue,
        settings,
    })
}

/// libpq's `conninfo_uri_decode`: `%XX` (not `%00`), blanks around the value skipped, none
/// inside it. Bytes that are not UTF-8 are replaced, as Go's JSON encoder replaces them.
fn uri_decode(raw: &str) -> Result<String, ParseError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    while i < b.len() && b[i] != b' ' {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |k: usize| b.get(k).and_then(|c| (*c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(ParseError("an invalid percent-encoding"));
        };
        let byte = (hi << 4 | lo) as u8;
        if byte == 0 {
            return Err(ParseError("%00 in a URI"));
        }
        out.push(byte);
        i += 3;
    }
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    if i < b.len() {
        return Err(ParseError("a blank inside a URI component"));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn parse_uri(s: &str, start: usize) -> Result<ConnInfo, ParseError> {
    let mut settings = Vec::new();
    let mut p = start;
    let b = s.as_bytes();
    // Only a '/' ends the search for the userinfo's '@'.
    if let Some(at) = s[p..]
        .find(['@', '/'])
        .map(|i| p + i)
        .filter(|&i| b[i] == b'@')
    {
        let userinfo = &s[p..at];
        let (user, password) = match userinfo.find(':') {
            Some(c) => (&userinfo[..c], Some((p + c + 1, &userinfo[c + 1..]))),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            settings.push(Setting {
                key: "user".into(),
                value: uri_decode(user)?,
                span: p..p + user.len(),
            });
        }
        if let Some((offset, pw)) = password.filter(|(_, pw)| !pw.is_empty()) {
            settings.push(Setting {
                key: "password".into(),
                value: uri_decode(pw)?,
                span: offset..offset + pw.len(),
            });
        }
        p = at + 1;
    }
    let (mut hosts, mut ports) = (String::new(), String::new());
    let peek = |p: usize| b.get(p).copied();
    loop {
        if peek(p) == Some(b'[') {
            let end = s[p..]
                .find(']')
                .map(|i| p + i)
                .ok_or(ParseError("an unclosed '[' in a URI host"))?;
            if end == p + 1 {
                return Err(ParseError("an empty IPv6 host in a URI"));
            }
            hosts.push_str(&s[p + 1..end]);
            p = end + 1;
            if !matches!(peek(p), None | Some(b':' | b'/' | b'?' | b',')) {
                return Err(ParseError("an unexpected character after an IPv6 host"));
            }
        } else {
            let end = s[p..].find([':', '/', '?', ',']).map_or(s.len(), |i| p + i);
            hosts.push_str(&s[p..end]);
            p = end;
        }
        if peek(p) == Some(b':') {
            p += 1;
            let end = s[p..].find(['/', '?', ',']).map_or(s.len(), |i| p + i);
            ports.push_str(&s[p..end]);
            p = end;
        }
        if peek(p) != Some(b',') {
            break;
        }
        p += 1;
        hosts.push(',');
        ports.push(',');
    }
    if !hosts.is_empty() {
        uri_decode(&hosts)?;
    }
    if !ports.is_empty() {
        uri_decode(&ports)?;
    }
    if peek(p) == Some(b'/') {
        p += 1;
        let end = s[p..].find('?').map_or(s.len(), |i| p + i);
        if end > p {
            uri_decode(&s[p..end])?;
        }
        p = end;
    }
    if peek(p) == Some(b'?') {
        p += 1;
        // As libpq: pairs split at '&' until nothing is left (so one trailing '&' ends it).
        let mut pairs = Vec::new();
        let mut at = p;
        while at < s.len() {
            let end = s[at..].find('&').map_or(s.len(), |i| at + i);
            pairs.push(at..end);
            at = end + 1;
        }
        for pair in pairs {
            let text = &s[pair.clone()];
            let eq = text
                .find('=')
                .ok_or(ParseError("a URI query parameter without '='"))?;
            if text[eq + 1..].contains('=') {
                return Err(ParseError("a URI query parameter with a second '='"));
            }
            let key = canonical(uri_decode(&text[..eq])?);
            let value = uri_decode(&text[eq + 1..])?;
            settings.push(Setting {
                key,
                value,
                span: pair.start + eq + 1..pair.end,
            });
        }
    }
    Ok(ConnInfo {
        form: Form::Uri,
        settings,
    })
}

/// Where a connection setting's final value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Written in the string (the last of its key).
    String(Setting),
    /// A service file may set it: the string does not, and a service is named.
    Service,
    /// The environment variable (`PGPASSWORD`, `PGSSLMODE`), when the string and any service
    /// leave it unset.
    Env,
    /// Nothing sets it.
    Unset,
}

/// Which of a connection's settings come from where: `key` as pgx resolves it, given whether a
/// service is named (by the string, or by `PGSERVICE` when `service_env` says so).
pub fn origin(info: &ConnInfo, key: &str, env_sets: bool, service_env: bool) -> Origin {
    if let Some(s) = info.get(key) {
        return Origin::String(s);
    }
    if service_env || info.get("service").is_some() {
        return Origin::Service;
    }
    if env_sets { Origin::Env } else { Origin::Unset }
}

/// `raw` with its sslmode made `require`, in the same form: the value of the `sslmode` setting
/// that wins replaced, or `sslmode=require` appended when the string sets none. `None` when
/// the string's final sslmode comes from `ssl=true` (already `require`).
pub fn with_sslmode_require(raw: &str, info: &ConnInfo) -> Option<String> {
    match info.get("sslmode") {
        Some(s)
            if info
                .settings
                .iter()
                .any(|x| x.span == s.span && x.key == "sslmode") =>
        {
            let mut out = String::with_capacity(raw.len() + 8);
            out.push_str(&raw[..s.span.start]);
            out.push_str("require");
            out.push_str(&raw[s.span.end..]);
            Some(out)
        }
        Some(_) => None,
        None => Some(append_sslmode(raw, info.form)),
    }
}

/// `raw` with `sslmode=require` added at its end.
pub fn append_sslmode(raw: &str, form: Form) -> String {
    let sep = match form {
        Form::KeyValue if raw.is_empty() || raw.ends_with(|c: char| c.is_ascii_whitespace()) => "",
        Form::KeyValue => " ",
        Form::Uri => match raw.find('?') {
            None => "?",
            Some(_) if raw.ends_with(['?', '&']) => "",
            Some(_) => "&",
        },
    };
    [raw, sep, "sslmode=require"].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &str, key: &str) -> Option<String> {
        parse(s).unwrap().get(key).map(|s| s.value)
    }

    #[test]
    fn key_value_forms() {
        let s = r"host=db  password = 'it''s' sslmode=disable";
        assert!(
            parse(s).is_err(),
            "'' closes the quote, then s' is a keyword without '='"
        );
        let s = r"host=db password = 'it\'s \\ x' sslmode =disable sslmode= 'verify-full'";
        assert_eq!(get(s, "password").as_deref(), Some(r"it's \ x"));
        assert_eq!(
            get(s, "sslmode").as_deref(),
            Some("verify-full"),
            "last wins"
        );
        assert_eq!(get(s, "host").as_deref(), Some("db"));
        assert_eq!(get("dbname=x", "database").as_deref(), Some("x"));
        assert_eq!(get(r"password=a\ b", "password").as_deref(), Some("a b"));
        assert_eq!(get(r"host=a\", "host").as_deref(), Some("a"));
        assert_eq!(
            get("password= host=db", "password").as_deref(),
            Some("host=db")
        );
        assert_eq!(get("password=", "password").as_deref(), Some(""));
        assert!(parse("host").is_err());
        assert!(parse("ho st=x").is_err());
        assert!(parse("password='x").is_err());
        assert!(parse("=x").is_err());
        assert_eq!(parse("  ").unwrap().settings, vec![]);
    }

    #[test]
    fn uri_forms() {
        let s = "postgres://harbor:s%40cret@db:5432/registry?sslmode=disable&password=&ssl=true";
        assert_eq!(get(s, "password").as_deref(), Some(""), "the query wins");
        assert_eq!(get(s, "user").as_deref(), Some("harbor"));
        assert_eq!(
            get(s, "sslmode").as_deref(),
            Some("require"),
            "ssl=true last"
        );
        let s = "postgresql://db/x?ssl=true&sslmode=prefer";
        assert_eq!(get(s, "sslmode").as_deref(), Some("prefer"));
        let s = "postgresql://u:p%20w@db";
        assert_eq!(get(s, "password").as_deref(), Some("p w"));
        assert_eq!(get("postgres://u:@db", "password"), None);
        // Only '/' stops the search for '@'.
        assert_eq!(
            get("postgres://db?application_name=a:b@c", "user").as_deref(),
            Some("db?application_name=a")
        );
        assert!(parse("postgres://db/x?a").is_err());
        assert!(parse("postgres://db/x?a=b&&c=d").is_err());
        assert_eq!(
            get("postgres://db/x?sslmode=a&", "sslmode").as_deref(),
            Some("a")
        );
        assert!(parse("postgres://db/x?a=b=c").is_err());
        assert!(parse("postgres://db/x?a=%zz").is_err());
        assert!(parse("postgres://db/x?a=%00").is_err());
        assert!(parse("postgres://db/x?a=b c").is_err());
        assert!(parse("postgres://[]/x").is_err());
        assert_eq!(get("postgres://db/x?", "sslmode"), None);
        assert_eq!(parse("postgres://x").unwrap().form, Form::Uri);
        assert_eq!(parse("postgres:/x=y").unwrap().form, Form::KeyValue);
    }

    #[test]
    fn sslmode_rewritten_in_place_or_appended() {
        let rewrite = |s: &str| with_sslmode_require(s, &parse(s).unwrap()).unwrap();
        assert_eq!(
            rewrite("host=db sslmode='disable' user=u"),
            "host=db sslmode='require' user=u"
        );
        assert_eq!(
            rewrite("host=db sslmode=a sslmode=prefer"),
            "host=db sslmode=a sslmode=require"
        );
        assert_eq!(rewrite("host=db"), "host=db sslmode=require");
        assert_eq!(rewrite("host=db "), "host=db sslmode=require");
        assert_eq!(rewrite(""), "sslmode=require");
        assert_eq!(
            rewrite("postgres://db/x"),
            "postgres://db/x?sslmode=require"
        );
        assert_eq!(
            rewrite("postgres://db/x?"),
            "postgres://db/x?sslmode=require"
        );
        assert_eq!(
            rewrite("postgres://db/x?a=b"),
            "postgres://db/x?a=b&sslmode=require"
        );
        assert_eq!(
            rewrite("postgres://db/x?sslmode=%64isable&a=b"),
            "postgres://db/x?sslmode=require&a=b"
        );
        let s = "postgres://db/x?sslmode=disable&ssl=true";
        assert_eq!(with_sslmode_require(s, &parse(s).unwrap()), None);
    }

    #[test]
    fn origins() {
        let info = parse("host=db").unwrap();
        assert_eq!(origin(&info, "password", true, false), Origin::Env);
        assert_eq!(origin(&info, "password", false, false), Origin::Unset);
        assert_eq!(origin(&info, "password", true, true), Origin::Service);
        let info = parse("service=x password=''").unwrap();
        assert!(matches!(
            origin(&info, "password", true, false),
            Origin::String(_)
        ));
        assert_eq!(origin(&info, "sslmode", true, false), Origin::Service);
    }
}
