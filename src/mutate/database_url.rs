//! `POSTGRESQL_URL` bypasses every other DB setting in Harbor: a password inside it would
//! survive the blanking of `POSTGRESQL_PASSWORD`.

/// True when a PostgreSQL connection string carries a password, in either form libpq accepts:
/// a URI (`postgres://user:secret@host/db`, or `?password=` in its query) or a keyword/value
/// string (`host=h password=secret`).
pub fn has_password(conn: &str) -> bool {
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
    let query = query.split('#').next().unwrap_or("");
    in_userinfo
        || query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .any(|(k, v)| k == "password" && !v.is_empty())
}

/// `key = value` pairs separated by whitespace; values may be single-quoted, and libpq skips
/// blanks after `=`.
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
    use super::has_password;

    #[test]
    fn uri_forms() {
        assert!(has_password("postgres://harbor:s3cret@db:5432/registry"));
        assert!(has_password(
            "postgresql://harbor:s3cret@db/registry?sslmode=require"
        ));
        assert!(has_password(
            "postgres://db/registry?sslmode=require&password=x"
        ));
        assert!(!has_password(
            "postgres://harbor@db:5432/registry?sslmode=require"
        ));
        assert!(!has_password("postgres://harbor:@db/registry"));
        assert!(!has_password("postgres://db/registry"));
        // '@' in a path or query is not userinfo.
        assert!(!has_password(
            "postgres://db/registry?application_name=a:b@c"
        ));
    }

    #[test]
    fn keyword_forms() {
        assert!(has_password(
            "host=db user=harbor password=s3cret dbname=registry"
        ));
        assert!(has_password("host=db password = 'x y'"));
        assert!(!has_password("host=db user=harbor dbname=registry"));
        // libpq skips blanks after '=': this password is "user=harbor".
        assert!(has_password("host=db password= user=harbor"));
        assert!(!has_password("host=db password='' user=harbor"));
        assert!(!has_password("host=db passwordfile=/x"));
        assert!(!has_password(""));
    }
}
