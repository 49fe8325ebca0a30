//! [`Target`]: a small HTTP/1 client for one engine, shared by the bench and the auditor.
//!
//! Purchases go through [`Target::send`], which hands back the status and the raw body for the
//! bench to classify; reads go through typed GETs that answer the API's own types.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use seckill_api::{Audit, OrderDetail, SaleList, SaleView};
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
    #[error("{method} {path}: {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {path}: not the expected answer: {cause}")]
    Decode {
        method: &'static str,
        path: String,
        cause: serde_json::Error,
    },
}

/// One engine, by its base URL; connections are pooled and kept alive.
pub struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// `Bearer <admin token>`, sent on the reads that may need it (the audit, any order).
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

    /// Sends the admin token (`Authorization: Bearer`) on the audit and on order reads.
    pub fn with_admin(mut self, token: Option<&str>) -> Self {
        self.admin = token.filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}"));
        self
    }

    /// The `Authorization` header of the admin, when there is a token.
    pub fn admin_header(&self) -> Option<(&'static str, &str)> {
        self.admin.as_deref().map(|bearer| ("authorization", bearer))
    }

    /// Sends a request with no body; any status is an answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.send_body(method, path, headers, Bytes::new()).await
    }

    /// Sends a request with `body`; any status is an answer.
    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.client.request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `GET path`, answered 2xx with a body of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_as(path, &[]).await
    }

    /// `GET path` with `headers`, answered 2xx with a body of type `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str, headers: &[(&str, &str)]) -> Result<T, ClientError> {
        let (status, body) = self.send(Method::GET, path, headers).await?;
        if !status.is_success() {
            return Err(ClientError::Status {
                method: "GET",
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|cause| ClientError::Decode {
            method: "GET",
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

    /// The audit, with the admin token when there is one (the route may require it).
    pub async fn audit(&self, sale: i64) -> Result<Audit, ClientError> {
        let admin: Vec<_> = self.admin_header().into_iter().collect();
        self.get_as(&format!("/api/sales/{sale}/audit"), &admin).await
    }

    /// An order as its buyer or, with the admin token, as the admin.
    pub async fn order(&self, order_id: &str, buyer: &str) -> Result<OrderDetail, ClientError> {
        let who = self.admin_header().unwrap_or(("x-user-id", buyer));
        self.get_as(&format!("/api/orders/{order_id}"), &[who]).await
    }

    /// `POST /api/sales` as the admin: the new sale, or why not.
    pub async fn create_sale(&self, request: &serde_json::Value) -> Result<SaleView, ClientError> {
        const PATH: &str = "/api/sales";
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(self.admin_header());
        let body = Bytes::from(request.to_string());
        let (status, body) = self.send_body(Method::POST, PATH, &headers, body).await?;
        if status != StatusCode::CREATED {
            return Err(ClientError::Status {
                method: "POST",
                path: PATH.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|cause| ClientError::Decode {
            method: "POST",
            path: PATH.to_owned(),
            cause,
        })
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
