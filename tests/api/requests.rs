//! Requests with chosen headers, answered as status, headers and JSON body: for the tests that
//! look at more than `TestServer::get` and `buy` show (identity, limits, tokens, request ids).

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::helpers::TestServer;

/// Status, headers and JSON body (`Null` when the body is not JSON) of `request` sent with
/// `headers`.
pub async fn send(request: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let request = headers.iter().fold(request, |r, (name, value)| r.header(*name, *value));
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

pub async fn post(app: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    send(app.client.post(app.url(path)), headers).await
}

pub async fn get_with(app: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    send(app.client.get(app.url(path)), headers).await
}
