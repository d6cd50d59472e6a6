//! The token check in front of every data route: `Authorization: Bearer <token>` (as Ray
//! 2.61's dashboard asks for it), 401 when it is missing, 403 when it is wrong.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ray_proto::auth::CheckToken;

/// The token a request must carry.
#[derive(Clone)]
pub struct Token(CheckToken);

impl Token {
    /// Requests must carry `token`.
    pub fn new(token: &str) -> Self {
        Token(CheckToken::new(token))
    }
}

/// Passes a request with the token on, answers any other with 401 or 403 (the peer logged
/// at debug: a scraper without the token would flood a warning log).
pub async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    match request.headers().get(header::AUTHORIZATION) {
        Some(presented) if token.0.accepts(presented.as_bytes()) => next.run(request).await,
        Some(_) => {
            tracing::debug!(path = %request.uri().path(), "dashboard request with a wrong token");
            refuse(StatusCode::FORBIDDEN, "wrong token")
        }
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "this needs the cluster's token: `Authorization: Bearer <token>` (`rayrs \
             get-auth-token` prints it)",
        ),
    }
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    let mut response = crate::reply::failure(status, msg).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}
