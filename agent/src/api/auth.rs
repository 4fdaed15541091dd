//! The direct-run API's bearer token, as both of its protocols check it: the HTTP routes (`Authorization`
//! header) and the gRPC service (`authorization` metadata). Compared in constant time, so timing does not leak
//! the token.

/// Whether an `Authorization` value (`Bearer TOKEN`, if any was sent) carries `token`.
pub(crate) fn bearer_matches(token: &str, authorization: Option<&str>) -> bool {
    let given = authorization.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first differing byte, so timing does not leak the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn only_the_bearer_scheme_with_the_token_passes() {
        assert!(bearer_matches("s3cret", Some("Bearer s3cret")));
        assert!(!bearer_matches("s3cret", Some("Bearer s3cre")));
        assert!(!bearer_matches("s3cret", Some("Basic s3cret")));
        assert!(!bearer_matches("s3cret", Some("s3cret")));
        assert!(!bearer_matches("s3cret", None));
    }
}
