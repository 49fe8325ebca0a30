//! `GET /api/openapi.json`: the served document is the file in the repository, and every
//! operation it documents reaches a handler on the real server.

use serde_json::Value;

use crate::helpers::{Options, TestServer};

const DOCUMENT_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/openapi.json");

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document_file() -> Value {
    let text = std::fs::read_to_string(DOCUMENT_FILE).unwrap_or_else(|e| panic!("read {DOCUMENT_FILE}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DOCUMENT_FILE} is not JSON: {e}"))
}

/// Whether an answer is the router's own fallback: the route or the method does not exist.
fn is_fallback(status: u16, body: &Value) -> bool {
    let code = body["error"]["code"].as_str();
    (status == 404 && code == Some("not_found")) || (status == 405 && code == Some("method_not_allowed"))
}

#[tokio::test]
async fn the_served_document_is_the_file_and_every_operation_is_routed() {
    let app = TestServer::spawn_with(Options::new()).await;

    let resp = app.client.get(app.url("/api/openapi.json")).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "Content-Type is {content_type:?}"
    );
    let served: Value = resp.json().await.expect("the served document is JSON");
    let file = document_file();
    assert_eq!(served, file, "the served document differs from {DOCUMENT_FILE}");

    let paths = file["paths"].as_object().expect("paths");
    let mut fallbacks = Vec::new();
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{user_id}", "nobody")
            .replace("{ticket}", "0f3c9a2b5d7e4f61a8b9c0d1e2f30415")
            .replace("{order_id}", "0192f1c4-5b7a-7c3e-9a51-2f4d6c8e0b1a");
        assert!(!concrete.contains('{'), "no value for a parameter of {path}");
        for method in METHODS.into_iter().filter(|m| item.get(*m).is_some()) {
            let request = match method {
                "get" => app.client.get(app.url(&concrete)),
                "post" => app.client.post(app.url(&concrete)).json(&serde_json::json!({})),
                "put" => app.client.put(app.url(&concrete)).json(&serde_json::json!({})),
                "patch" => app.client.patch(app.url(&concrete)).json(&serde_json::json!({})),
                "delete" => app.client.delete(app.url(&concrete)),
                "head" => app.client.head(app.url(&concrete)),
                other => app
                    .client
                    .request(other.to_uppercase().parse().expect("method"), app.url(&concrete)),
            };
            let resp = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {concrete}: {e}"));
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if is_fallback(status, &body) {
                fallbacks.push(format!("{} {path} → {status} {body}", method.to_uppercase()));
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} operations documented");
    assert!(
        fallbacks.is_empty(),
        "documented but answered by the router's fallback:\n{}\nserver log:\n{}",
        fallbacks.join("\n"),
        app.log_tail(20)
    );
}

/// The classic purchase's refusal codes are the document's: a named buyer over the limit is
/// told `already_purchased` (200, as the classic API answers every sale outcome).
#[tokio::test]
async fn the_classic_purchase_answers_only_documented_codes() {
    let app = TestServer::spawn_with(Options::new()).await;
    let documented: Vec<Value> = document_file()["components"]["schemas"]["ClassicPurchaseResult"]["properties"]
        ["code"]["enum"]
        .as_array()
        .expect("the code enum")
        .clone();
    let buy = || async {
        let resp = app
            .client
            .post(app.url("/seckill/seckill"))
            .header("x-user-id", "carol")
            .send()
            .await
            .expect("POST");
        (resp.status().as_u16(), resp.json::<Value>().await.expect("json"))
    };
    assert_eq!(buy().await.1["ok"], true);
    let (status, again) = buy().await;
    assert_eq!(
        (status, &again["ok"], &again["code"]),
        (200, &Value::Bool(false), &Value::from("already_purchased"))
    );
    assert!(documented.contains(&again["code"]), "{again} not in {documented:?}");
}
