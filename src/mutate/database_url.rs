//! `POSTGRESQL_URL` bypasses every other DB setting in Harbor: a password inside it would
//! survive the blanking of `POSTGRESQL_PASSWORD`.

/// True when a PostgreSQL connection string carries a password, in either form libpq accepts:
/// a URI (`postgres://user:secret@host/db`, or `?password=` in its query) or a keyword/value
/// string (`host=h password=secret`).
pub fn has_password(conn: &str) -> bool {
    let conn = conn.trim();
    if let Some((scheme, rest)) = conn.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if userinfo
                    .split_once(':')
                    .is_some_and(|(_, pw)| !pw.is_empty())
                {
                    return true;
                }
            }
            let query = rest[end..].split_once('?').map(|(_, q)| q).unwrap_or("");
            let query = query.split('#').next().unwrap_or("");
            return query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .any(|(k, v)| k == "password" && !v.is_empty());
        }
    }
    keyword_password(conn)
}

fn keyword_password(conn: &str) -> bool {
    // `key = value` pairs separated by whitespace; values may be single-quoted.
    let mut rest = conn;
    while let Some(pos) = rest.find("password") {
        let before_ok = pos == 0 || rest[..pos].ends_with(|c: char| c.is_whitespace());
        let after = rest[pos + "password".len()..].trim_start();
        if before_ok {
            if let Some(value) = after.strip_prefix('=') {
                let value = value.trim_start();
                let empty = value.is_empty() || value.starts_with("''");
                if !empty {
                    return true;
                }
            }
        }
        rest = &rest[pos + "password".len()..];
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
