//! The page shell: one HTML page, its script and its style, built into the binary (no build
//! step at install time) and open to anyone: they carry no data. The script asks for the
//! token once (or takes it from the URL's `#token=` fragment, which never reaches a server),
//! keeps it in the tab's session storage, and polls the JSON routes with it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// The shell's routes.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| page(INDEX, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| page(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route("/style.css", get(|| page(STYLE, "text/css; charset=utf-8")))
}

async fn page(body: &'static str, kind: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            // The page runs only its own script and talks only to its own origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
