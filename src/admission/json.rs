//! The response as JSON, written for the server.

use std::io::Write as _;

use super::ReviewOut;

impl ReviewOut {
    /// What `serde_json::to_vec(self)` writes, byte for byte (tested), into a buffer sized for
    /// it, but with the patch copied in rather than escaped: `serde_json` looks at each
    /// character of a string for one to escape, and the base64 patch, with no such character,
    /// is most of a patched response.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let r = &self.response;
        let size = 256
            + r.patch.as_ref().map_or(0, String::len)
            + r.warnings.iter().map(|w| w.len() + 4).sum::<usize>()
            + r.audit_annotations
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        let w = &mut out;
        w.extend_from_slice(br#"{"apiVersion":"#);
        serde_json::to_writer(&mut *w, self.api_version)?;
        w.extend_from_slice(br#","kind":"#);
        serde_json::to_writer(&mut *w, self.kind)?;
        w.extend_from_slice(br#","response":{"uid":"#);
        serde_json::to_writer(&mut *w, &r.uid)?;
        write!(w, r#","allowed":{}"#, r.allowed).map_err(serde_json::Error::io)?;
        if let Some(status) = &r.status {
            w.extend_from_slice(br#","status":"#);
            serde_json::to_writer(&mut *w, status)?;
        }
        if let Some(patch) = &r.patch {
            w.extend_from_slice(br#","patch":"#);
            if escapes_nothing(patch) {
                w.push(b'"');
                w.extend_from_slice(patch.as_bytes());
                w.push(b'"');
            } else {
                serde_json::to_writer(&mut *w, patch)?;
            }
        }
        if let Some(patch_type) = &r.patch_type {
            w.extend_from_slice(br#","patchType":"#);
            serde_json::to_writer(&mut *w, patch_type)?;
        }
        if !r.warnings.is_empty() {
            w.extend_from_slice(br#","warnings":"#);
            serde_json::to_writer(&mut *w, &r.warnings)?;
        }
        if !r.audit_annotations.is_empty() {
            w.extend_from_slice(br#","auditAnnotations":"#);
            serde_json::to_writer(&mut *w, &r.audit_annotations)?;
        }
        w.extend_from_slice(b"}}");
        Ok(out)
    }
}

/// Whether `serde_json` would write `s` as it is: no quote, backslash or control character.
/// No early exit: a base64 patch is read to its end either way, and a loop without one is
/// the simpler for the compiler.
fn escapes_nothing(s: &str) -> bool {
    s.bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
}

#[cfg(test)]
mod tests {
    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;

    use super::super::{Response, ReviewOut, Status, allowed, invalid, wrap};

    fn as_serde_writes(out: &ReviewOut) -> Result<(), TestCaseError> {
        let ours = String::from_utf8(out.to_json().unwrap()).unwrap();
        prop_assert_eq!(ours, serde_json::to_string(out).unwrap());
        Ok(())
    }

    fn text() -> impl Strategy<Value = String> {
        // Any characters, newlines, quotes and other control characters among them.
        prop_oneof!["(?s).{0,12}", "[\"\\\\\\x00-\\x1f\\x7f\u{2028}é]{0,6}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn writes_what_serde_json_writes(
            uid in text(),
            allowed in any::<bool>(),
            status in option::of((any::<u16>(), text())),
            patch in option::of(prop_oneof!["[A-Za-z0-9+/]{0,64}={0,2}", text()]),
            patch_type in option::of(text()),
            warnings in vec(text(), 0..3),
            audit in btree_map(text(), text(), 0..3),
        ) {
            as_serde_writes(&wrap(Response {
                uid,
                allowed,
                status: status.map(|(code, message)| Status { code, message }),
                patch,
                patch_type,
                warnings,
                audit_annotations: audit,
            }))?;
        }
    }

    #[test]
    fn the_plain_answers_too() {
        as_serde_writes(&wrap(allowed(String::new()))).unwrap();
        as_serde_writes(&wrap(invalid("a\"b".into(), "no object\n".into()))).unwrap();
    }
}
