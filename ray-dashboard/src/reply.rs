//! The JSON envelope every route answers in, Ray's dashboard's:
//! `{"result": true, "msg": "", "data": {...}}`, or `{"result": false, "msg": why}` with the
//! HTTP status that says who is at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A success carrying `data`.
pub fn success<T: Serialize>(data: T) -> Response {
    Json(serde_json::json!({ "result": true, "msg": "", "data": data })).into_response()
}

/// A failure with `status` and a message for a person.
pub fn failure(status: StatusCode, msg: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "result": false, "msg": msg })),
    )
        .into_response()
}
