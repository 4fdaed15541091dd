//! Protection against cross-site requests: a page on another site must not make a browser act on the API.
//!
//! Requests that change something (every method but GET, HEAD and OPTIONS) are refused with `403
//! CROSS_ORIGIN` when the browser says they come from another site: `Sec-Fetch-Site` other than
//! `same-origin` or `none`, or, from browsers that do not send it, an `Origin` whose host is not the `Host`
//! asked for. Clients that are not browsers (curl, pmctl, scripts) send neither header and pass, as do the
//! console's own pages (same origin). Tokens travel in the `Authorization` header, never in a cookie, so a
//! cross-site request could not carry one anyway: this is the second lock on the door, and the only one
//! when the API runs without tokens on a loopback address.

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The middleware (see the module doc).
pub(super) async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) || !cross_site(&req) {
        return next.run(req).await;
    }
    ApiError::new(StatusCode::FORBIDDEN, "CROSS_ORIGIN", "a request from another site may not act on this API")
        .into_response()
}

fn cross_site(req: &Request) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // `Origin: null` (sandboxed frames, file pages) never matches.
    origin.split_once("://").map(|(_, rest)| rest) != Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::builder().method("POST").uri("/api/queues/q/pause");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn browsers_on_other_sites_are_refused_and_other_clients_pass() {
        assert!(!cross_site(&req(&[])), "curl sends neither header");
        assert!(!cross_site(&req(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&req(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&req(&[("sec-fetch-site", "same-site")])));
        let host = ("host", "127.0.0.1:7072");
        assert!(!cross_site(&req(&[host, ("origin", "http://127.0.0.1:7072")])));
        assert!(cross_site(&req(&[host, ("origin", "http://evil.example")])));
        assert!(cross_site(&req(&[host, ("origin", "null")])));
    }
}
