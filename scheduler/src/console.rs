//! The operator console at `/ui/`: static pages (HTML, CSS, JavaScript modules) compiled into the binary, so a
//! scheduler serves its own console with no separate server and nothing to install.
//!
//! The pages hold no data. They ask the HTTP API (`/api/...`, [`crate::gateway`]) from the browser with the
//! token the operator pasted, sent as `Authorization: Bearer` (never a cookie), so the console can do exactly
//! what that token may do through the API, and nothing more. This module is only the file server:
//!
//! - `/ui` redirects to `/ui/`, which is `index.html`; `/ui/<file>` is one of [`ASSETS`], anything else `404`.
//! - Every answer carries its content type, `X-Content-Type-Options: nosniff` and a Content-Security-Policy
//!   that allows scripts, styles and connections to this origin only: no inline script or style, no frames,
//!   so an injected string in a task's output can only ever be text.
//! - Caching: `Cache-Control: no-cache` with an `ETag` computed at compile time from the file's bytes. A
//!   browser revalidates each file (a `304` without a body) and never runs a page of an older binary after an
//!   upgrade.
//!
//! The console is served whether or not the API is on: without the API its pages show the API's refusal.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The Content-Security-Policy of every console answer (see the module doc).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// One file of the console.
pub struct Asset {
    /// Its path under `/ui/`.
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// Its bytes, compiled in.
    pub body: &'static [u8],
    /// Its `ETag` (quoted), from [`fnv1a`] of the bytes.
    pub etag: &'static str,
}

/// FNV-1a, 64 bits: a const fn, so each file's `ETag` is computed by the compiler.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"` + 16 hex digits + `"`, at compile time.
const fn quoted_hex(mut n: u64) -> [u8; 18] {
    let mut out = [b'"'; 18];
    let mut i = 16;
    while i > 0 {
        let d = (n & 0xf) as u8;
        out[i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n >>= 4;
        i -= 1;
    }
    out
}

/// Declares one [`Asset`] of `scheduler/console/` with its compile-time `ETag`.
macro_rules! asset {
    ($path:literal, $type:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../console/", $path));
        const TAG: [u8; 18] = quoted_hex(fnv1a(BODY));
        Asset {
            path: $path,
            content_type: $type,
            body: BODY,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console. `index.html` is the page; the rest are what it loads.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/nav.js", JS),
    asset!("js/live.js", JS),
    asset!("js/actions.js", JS),
    asset!("js/notice.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/confirm.js", JS),
    asset!("js/sparkline.js", JS),
    asset!("js/pages/overview.js", JS),
    asset!("js/pages/tasks.js", JS),
    asset!("js/pages/task.js", JS),
    asset!("js/pages/dead.js", JS),
    asset!("js/pages/apps.js", JS),
];

/// The console's routes: `/ui`, `/ui/` and `/ui/{file}`.
pub fn routes() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/ui/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }))
}

/// The asset at `path`, if the console has one.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = find(path) else {
        let mut r = (StatusCode::NOT_FOUND, "no such file in the console\n").into_response();
        secure(r.headers_mut());
        return r;
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
    let mut r = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(h);
    r
}

/// The headers every console answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_by_its_path_and_has_its_own_etag() {
        let mut tags = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(std::ptr::eq(find(a.path).expect("found"), a), "{}", a.path);
            assert!(a.etag.len() == 18 && a.etag.starts_with('"') && a.etag.ends_with('"'), "{}", a.etag);
            assert!(tags.insert(a.etag), "two assets share the ETag {}", a.etag);
            assert!(!a.body.is_empty(), "{} is empty", a.path);
        }
        assert!(find("../Cargo.toml").is_none() && find("").is_none());
    }

    #[test]
    fn the_etag_is_fnv1a_in_hex() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(&quoted_hex(0x0123_4567_89ab_cdef), b"\"0123456789abcdef\"");
    }

    #[test]
    fn the_page_loads_only_files_of_the_console_and_nothing_inline() {
        let page = std::str::from_utf8(find("index.html").expect("index").body).expect("utf-8");
        assert!(!page.contains("<script>") && !page.contains("style="), "inline script or style in index.html");
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let js = std::str::from_utf8(a.body).expect("utf-8");
            // Every module a module imports is an asset (a missing one would fail only in a browser).
            for line in js.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else { continue };
                let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
                let resolved = resolve(dir, spec);
                assert!(find(&resolved).is_some(), "{} imports {spec} ({resolved}), which is not an asset", a.path);
            }
        }
    }

    /// `spec` (`./x.js`, `../x.js`) relative to the directory `dir`.
    fn resolve(dir: &str, spec: &str) -> String {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for p in spec.split('/') {
            match p {
                "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }
}
