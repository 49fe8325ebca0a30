//! The OpenAPI 3.1 document of the HTTP API, written by hand in `openapi.json` (it is the contract
//! clients read, reviewed as a document) and served as is at `GET /api/openapi.json`. The tests
//! below keep it honest: it parses, every `$ref` resolves, it describes exactly the methods and
//! paths of the route table the router is built from, and its error codes are the API's.

/// The document, served verbatim.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::gate::MemoryGate;
    use crate::http::limit::RateLimits;
    use crate::http::ApiError;
    use crate::store::SqliteStore;

    /// The HTTP methods an OpenAPI path item can hold.
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is not valid JSON")
    }

    /// `(pointer, $ref)` of every `$ref` in the document.
    fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "$ref" {
                        out.push((at.to_owned(), child.as_str().unwrap_or("<not a string>").to_owned()));
                    } else {
                        refs(
                            child,
                            &format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                            out,
                        );
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    refs(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn document_is_openapi_3_1_and_every_ref_resolves() {
        let doc = document();
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1"), "openapi is {version:?}, want 3.1.x");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()), "no paths");

        let mut all = Vec::new();
        refs(&doc, "#", &mut all);
        assert!(!all.is_empty(), "no $ref at all");
        let broken: Vec<String> = all
            .iter()
            .filter(|(_, target)| {
                !target.starts_with("#/components/")
                    || doc.pointer(&target[1..]).is_none_or(|resolved| resolved.is_null())
            })
            .map(|(at, target)| format!("{at}: {target}"))
            .collect();
        assert!(
            broken.is_empty(),
            "$refs that do not resolve to #/components/...:\n{}",
            broken.join("\n")
        );
    }

    #[test]
    fn operations_are_unique_and_every_response_carries_the_request_id() {
        let doc = document();
        let mut ids = BTreeSet::new();
        let mut problems = Vec::new();
        let resolve = |v: &Value| -> Value {
            match v["$ref"].as_str() {
                Some(target) => doc.pointer(&target[1..]).cloned().unwrap_or(Value::Null),
                None => v.clone(),
            }
        };
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                match op["operationId"].as_str() {
                    Some(id) if ids.insert(id.to_owned()) => {}
                    Some(id) => problems.push(format!("{method} {path}: duplicate operationId {id}")),
                    None => problems.push(format!("{method} {path}: no operationId")),
                }
                let responses = op["responses"].as_object();
                if responses.is_none_or(|r| r.is_empty()) {
                    problems.push(format!("{method} {path}: no responses"));
                }
                for (status, response) in responses.into_iter().flatten() {
                    let response = resolve(response);
                    if response["headers"]["X-Request-Id"]["$ref"] != "#/components/headers/X-Request-Id" {
                        problems.push(format!("{method} {path} {status}: no X-Request-Id header"));
                    }
                    if status.starts_with(['4', '5'])
                        && response["content"]["application/json"]["schema"]["$ref"] != "#/components/schemas/Error"
                    {
                        problems.push(format!(
                            "{method} {path} {status}: error answer without the Error schema"
                        ));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_error_code_enum_is_every_code_the_api_answers() {
        let doc = document();
        let documented: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .iter()
            .map(|c| c.as_str().expect("code"))
            .collect();
        let answered: BTreeSet<&str> = ApiError::examples().iter().map(ApiError::code).collect();
        let undocumented: Vec<_> = answered.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&answered).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "codes answered but not in ErrorCode: {undocumented:?}; in ErrorCode but never answered: {unknown:?}"
        );
    }

    /// Every `(method, path)` the document describes.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.insert((method.to_owned(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_describes_exactly_the_routes_of_the_router() {
        let (_, table) = crate::http::routes::<MemoryGate, SqliteStore>(Arc::new(RateLimits::unlimited())).finish();
        let routed: BTreeSet<(String, String)> = table
            .iter()
            .flat_map(|r| r.methods.iter().map(|m| (m.as_str().to_lowercase(), r.path.to_owned())))
            .collect();
        let documented = documented(&document());
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routed but not in openapi.json: {undocumented:?}; in openapi.json but not routed: {unrouted:?}"
        );
    }
}
