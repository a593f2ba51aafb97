//! The web UI's static files (`web/` at the repository's root), served by
//! the local gateway beside the API: `/` (a demo shop page embedding the
//! customer widget), `/widget.js` (what a website embeds), `/agent` (the
//! agent console), `/ops` (the operations dashboard) and `/assets/…`.
//! Nothing else under `web/` is reachable (its tests and their
//! `node_modules` are not): each page is a fixed file, and an asset path
//! is made of plain segments (letters, digits, `-`, `_`, `.`, never a
//! leading dot, so never `..`), then checked again once symlinks are
//! resolved, so no request leaves `web/assets`.
//!
//! Files are read from disk on every request (`WEB_DIR`, else the `web/`
//! directory of the source tree this binary was built from): an edited page
//! shows on the next reload, with no build step. In AWS the same files go
//! to a bucket (README's "Web UI").
//!
//! The demo page is the one file that is filled in: it carries the public
//! `WIDGET_KEY` in its `<script>` tag, as a shop's own page would. The agent
//! and admin tokens are never in a page: the console and the dashboard ask
//! for them and keep them in the browser's session storage.

use std::path::{Path, PathBuf};

use axum::{
    Router,
    extract::Path as UrlPath,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The pages' policy: scripts and styles from the gateway only (no inline
/// code anywhere), connections to any API base the operator points them at.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; \
    connect-src 'self' ws: wss: http: https:; base-uri 'none'; form-action 'none'; object-src 'none'";

/// Where `web/` is.
fn web_root() -> PathBuf {
    std::env::var_os("WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("web"))
}

/// Adds the web UI's routes to `router` (the API's fallback stays the
/// fallback: these paths are not API paths).
pub fn mount(router: Router) -> Router {
    router.merge(routes(web_root()))
}

fn routes(root: PathBuf) -> Router {
    let page = |file: &'static str, root: &PathBuf| {
        let root = root.clone();
        get(move || async move { serve(&root.join(file), Kind::Page).await })
    };
    let widget = root.clone();
    let assets = root.clone();
    Router::new()
        .route("/", page("index.html", &root))
        .route("/agent", page("agent.html", &root))
        .route("/ops", page("ops.html", &root))
        .route("/widget.js", get(move || async move { serve(&widget.join("widget.js"), Kind::Public).await }))
        .route("/assets/{*path}", get(move |UrlPath(path): UrlPath<String>| async move { asset(&assets, &path).await }))
}

/// How a file is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An HTML page of the gateway: the strict policy.
    Page,
    /// What other websites load (the widget and its assets): readable
    /// from any origin, since the widget imports its modules from here.
    Public,
}

/// `/assets/{path}`: a plain path below `web/assets`, or `404`.
async fn asset(root: &Path, path: &str) -> Response {
    let base = root.join("assets");
    let Some(file) = asset_path(&base, path) else { return not_found() };
    // Symlinks resolved: still below `web/assets`, or nothing.
    let inside = match (std::fs::canonicalize(&file), std::fs::canonicalize(&base)) {
        (Ok(file), Ok(base)) => file.starts_with(base),
        _ => false,
    };
    if !inside {
        return not_found();
    }
    serve(&file, Kind::Public).await
}

/// The file an asset path names, if every segment is plain.
fn asset_path(base: &Path, path: &str) -> Option<PathBuf> {
    let mut file = base.to_path_buf();
    for segment in path.split('/') {
        let plain = !segment.is_empty()
            && !segment.starts_with('.')
            && segment.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return None;
        }
        file.push(segment);
    }
    // Pages are served by their own routes, with the page policy: an
    // `.html` under assets would be a page without it.
    if file.extension().is_some_and(|e| e == "html") {
        return None;
    }
    content_type(&file).map(|_| file)
}

/// The content type of the file types the UI uses; any other is not served.
fn content_type(file: &Path) -> Option<&'static str> {
    Some(match file.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n").into_response()
}

async fn serve(file: &Path, kind: Kind) -> Response {
    let Some(content_type) = content_type(file) else { return not_found() };
    let path = file.to_path_buf();
    // The runtime has no `fs` feature: a blocking read on a blocking thread.
    let body = match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(body)) => body,
        _ => return not_found(),
    };
    let body = if file.file_name().is_some_and(|n| n == "index.html") {
        with_widget_key(&body, &std::env::var("WIDGET_KEY").unwrap_or_default())
    } else {
        body
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Edited files show on the next load; nothing here is worth caching.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    match kind {
        Kind::Page => {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        Kind::Public => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
        }
    }
    response
}

/// The demo page with the configured public `WIDGET_KEY` in its script tag
/// (HTML-escaped; empty when none is set, and the widget says so).
fn with_widget_key(page: &[u8], key: &str) -> Vec<u8> {
    let escaped: String = key
        .chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect();
    String::from_utf8_lossy(page).replace("__WIDGET_KEY__", &escaped).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("web")
    }

    #[test]
    fn asset_paths_are_plain_segments_of_known_types() {
        let base = Path::new("/srv/web/assets");
        assert_eq!(asset_path(base, "app.css"), Some(base.join("app.css")));
        assert_eq!(asset_path(base, "icons/logo.svg"), Some(base.join("icons/logo.svg")));
        for bad in [
            "../agent.html",
            "..",
            "a/../../etc/passwd",
            ".hidden.js",
            "a//b.js",
            "",
            "x\\..\\y.js",
            "%2e%2e/x.js",
            "a b.js",
            "tests/node_modules",
            "run.sh",
            "noextension",
        ] {
            assert_eq!(asset_path(base, bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn pages_and_assets_are_served_with_their_types() {
        let page = serve(&root().join("agent.html"), Kind::Page).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let script = asset(&root(), "chat-core.js").await;
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(script.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let style = asset(&root(), "app.css").await;
        assert_eq!(style.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
    }

    #[tokio::test]
    async fn nothing_outside_the_assets_is_reachable() {
        for path in ["../agent.html", "../tests/browser.test.mjs", "../../Cargo.toml", "missing.js"] {
            assert_eq!(asset(&root(), path).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
        // A symlink out of the assets is refused once resolved.
        let dir = std::env::temp_dir().join(format!("switchboard-web-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("secret.js"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.js"), dir.join("assets/link.js")).unwrap();
        let status = asset(&dir, "link.js").await.status();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_widget_key_is_escaped_into_the_demo_page() {
        let page = b"<script data-widget-key=\"__WIDGET_KEY__\"></script>";
        let out = String::from_utf8(with_widget_key(page, "pk\"><script>x</script>")).unwrap();
        assert_eq!(out, "<script data-widget-key=\"pk&quot;&gt;&lt;script&gt;x&lt;/script&gt;\"></script>");
        assert_eq!(String::from_utf8(with_widget_key(page, "")).unwrap(), "<script data-widget-key=\"\"></script>");
    }
}
