//! [`Target`]: a small HTTP/1 client for one engine, shared by the bench and the auditor.
//!
//! Purchases go through [`Target::send`], which hands back the status and the raw body for the
//! bench to classify; reads go through typed GETs that answer the API's own types.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use seckill_api::{Audit, SaleList, SaleView};
use serde::de::DeserializeOwned;

/// Why a request to the engine got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the request")]
    Request(#[from] hyper::http::Error),
    #[error("no answer from the engine")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("the answer broke off")]
    Body(#[from] hyper::Error),
    #[error("GET {path}: {status}: {body}")]
    Status {
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("GET {path}: not the expected answer: {cause}")]
    Decode { path: String, cause: serde_json::Error },
}

/// One engine, by its base URL; connections are pooled and kept alive.
pub struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// `Authorization: Bearer <admin token>` for the admin routes (the audit).
    admin: Option<String>,
}

impl Target {
    /// `pool`: connections kept idle for reuse, as many as requests in flight at once.
    pub fn new(base: &str, pool: usize) -> Self {
        let mut connector = HttpConnector::new();
        // Small requests answered at once: Nagle's delay would be most of the latency.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .build(connector);
        Target {
            client,
            base: base.trim_end_matches('/').to_owned(),
            admin: None,
        }
    }

    /// The engine's admin token, which the audit needs.
    pub fn with_admin_token(mut self, token: Option<&str>) -> Self {
        self.admin = token.filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}"));
        self
    }

    /// Sends a request with no body; any status is an answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.client.request(request.body(Full::new(Bytes::new()))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `GET path`, answered 2xx with a body of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_with(path, &[]).await
    }

    async fn get_with<T: DeserializeOwned>(&self, path: &str, headers: &[(&str, &str)]) -> Result<T, ClientError> {
        let (status, body) = self.send(Method::GET, path, headers).await?;
        if !status.is_success() {
            return Err(ClientError::Status {
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|cause| ClientError::Decode {
            path: path.to_owned(),
            cause,
        })
    }

    pub async fn sales(&self) -> Result<SaleList, ClientError> {
        self.get("/api/sales").await
    }

    pub async fn sale(&self, id: i64) -> Result<SaleView, ClientError> {
        self.get(&format!("/api/sales/{id}")).await
    }

    pub async fn audit(&self, sale: i64) -> Result<Audit, ClientError> {
        let path = format!("/api/sales/{sale}/audit");
        match &self.admin {
            Some(bearer) => self.get_with(&path, &[("authorization", bearer)]).await,
            None => self.get(&path).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server on a fresh port: answers the first request with `status` and `body`.
    async fn answer_once(status: &str, body: &str) -> String {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(response.as_bytes()).await;
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_typed_get_reads_the_apis_type() {
        let base = answer_once("200 OK", r#"{"num":7}"#).await;
        let count: seckill_api::ClassicCount = Target::new(&base, 1).get("/seckill/getCount").await.expect("read");
        assert_eq!(count.num, 7);
    }

    #[tokio::test]
    async fn an_error_status_is_an_error_naming_path_and_status() {
        let base = answer_once("404 Not Found", "no").await;
        let err = Target::new(&base, 1).sale(9).await.expect_err("404");
        assert_eq!(err.to_string(), "GET /api/sales/9: 404 Not Found: no");
    }

    #[tokio::test]
    async fn an_answer_of_another_shape_is_a_decode_error() {
        let base = answer_once("200 OK", r#"{"num":7}"#).await;
        let err = Target::new(&base, 1).audit(1).await.expect_err("not an audit");
        assert!(matches!(err, ClientError::Decode { .. }), "{err}");
    }
}
