//! Query strings of the operating routes, checked strictly: an unknown parameter, a bad value or a page over
//! the limit is a `400` that names the parameter (`"param"`), so a typo never silently widens a filter.

use std::collections::HashMap;

use pm_task::pipeline::validate_queue_name;

use super::error::ApiError;

/// Largest page of a listing.
pub(super) const MAX_PAGE: usize = 1_000;
/// Page size when none is asked for.
pub(super) const DEFAULT_PAGE: usize = 100;

/// The parameters of `raw`, each at most once and each one of `allowed`.
pub(super) fn params(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(|e| ApiError::bad(format!("query string: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::param(&k, format!("unknown parameter (this takes: {})", allowed.join(", "))));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::param(&k, "given twice"));
        }
    }
    Ok(out)
}

/// `queue` (empty: any), a valid queue name.
pub(super) fn queue_of(p: &HashMap<String, String>) -> Result<String, ApiError> {
    let q = p.get("queue").cloned().unwrap_or_default();
    if !q.is_empty() {
        validate_queue_name(&q).map_err(|e| ApiError::param("queue", e))?;
    }
    Ok(q)
}

/// `limit`: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
pub(super) fn limit_of(p: &HashMap<String, String>) -> Result<usize, ApiError> {
    match p.get("limit").map(|v| v.parse::<usize>()) {
        None => Ok(DEFAULT_PAGE),
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::param("limit", format!("a page holds 1 to {MAX_PAGE} items"))),
    }
}

/// `cursor`: the `nextCursor` of the previous page (a task id; 0 when absent).
pub(super) fn cursor_of(p: &HashMap<String, String>) -> Result<u64, ApiError> {
    match p.get("cursor").filter(|v| !v.is_empty()).map(|v| v.parse::<u64>()) {
        None => Ok(0),
        Some(Ok(n)) => Ok(n),
        Some(Err(_)) => Err(ApiError::param("cursor", "not a cursor: pass the nextCursor of the previous page")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_repeated_and_bad_parameters_are_named() {
        fn err<T>(r: Result<T, ApiError>) -> Option<String> {
            r.err().map(|e| e.param_name().unwrap_or_default().to_string())
        }
        assert_eq!(err(params(Some("queue=a&qeue=b"), &["queue"])), Some("qeue".into()));
        assert_eq!(err(params(Some("queue=a&queue=b"), &["queue"])), Some("queue".into()));
        let p = params(Some("limit=1001&cursor=x&queue=a%20b"), &["queue", "limit", "cursor"]).unwrap();
        assert_eq!(err(limit_of(&p)), Some("limit".into()));
        assert_eq!(err(cursor_of(&p)), Some("cursor".into()));
        assert_eq!(err(queue_of(&p)), Some("queue".into()));
        let p = params(Some("limit=1000&cursor=42&queue=ocr%2Fmain"), &["queue", "limit", "cursor"]).unwrap();
        assert_eq!(
            (limit_of(&p).ok(), cursor_of(&p).ok(), queue_of(&p).ok()),
            (Some(1000), Some(42), Some("ocr/main".into()))
        );
        assert_eq!(limit_of(&HashMap::new()).ok(), Some(DEFAULT_PAGE));
    }
}
