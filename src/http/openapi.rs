//! The OpenAPI 3.1 document of the HTTP API, hand-written in `openapi.json` and served as is at
//! `GET /api/openapi.json`. The tests below keep it honest: it parses, every `$ref` resolves,
//! every route of the router is documented and every documented operation is routed.

/// The document, served verbatim.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;

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

    /// The `code()` strings of `ApiError`, as written in `error.rs`.
    fn error_codes(source: &str) -> BTreeSet<String> {
        let start = source.find("fn code(").expect("error.rs has no fn code(");
        let body = &source[start..];
        let open = body.find('{').expect("fn code body");
        let mut depth = 0usize;
        let mut end = body.len();
        for (i, c) in body[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        body[open..end]
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_error_code_enum_matches_error_rs() {
        let doc = document();
        let documented: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode enum")
            .iter()
            .map(|c| c.as_str().expect("code").to_owned())
            .collect();
        let mut actual = error_codes(include_str!("../error.rs"));
        // Start-up only: never an HTTP answer.
        actual.remove("invalid_config");
        let undocumented: Vec<_> = actual.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&actual).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "codes in error.rs but not in ErrorCode: {undocumented:?}; in ErrorCode but not in error.rs: {unknown:?}"
        );
    }

    // ---- the router's routes, scanned from its source ----

    /// What each byte of Rust source is part of.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Kind {
        Code,
        Comment,
        Literal,
    }

    /// Classifies every byte of `src` as code, comment, or string/char literal.
    fn classify(src: &str) -> Vec<Kind> {
        let b = src.as_bytes();
        let mut kinds = vec![Kind::Code; b.len()];
        let mut i = 0;
        while i < b.len() {
            let start = i;
            let kind = if b[i..].starts_with(b"//") {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            } else if b[i..].starts_with(b"/*") {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                Kind::Comment
            } else if let Some(end) = string_end(b, i) {
                i = end;
                Kind::Literal
            } else if let Some(end) = char_end(src, i) {
                i = end;
                Kind::Literal
            } else {
                i += 1;
                continue;
            };
            let end = i.min(b.len());
            kinds[start..end].iter_mut().for_each(|k| *k = kind);
            i = end;
        }
        kinds
    }

    /// If a string literal (`"…"`, `r"…"`, `r#"…"#`, `b"…"`, `br"…"`) starts at `i`, the index
    /// just past it.
    fn string_end(b: &[u8], i: usize) -> Option<usize> {
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let mut j = i;
        if b[j] != b'"' && ident_before {
            return None;
        }
        if b.get(j) == Some(&b'b') {
            j += 1;
        }
        if b.get(j) == Some(&b'r') {
            let mut hashes = 0;
            let mut k = j + 1;
            while b.get(k) == Some(&b'#') {
                hashes += 1;
                k += 1;
            }
            if b.get(k) != Some(&b'"') {
                return None;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            k += 1;
            while k < b.len() && !b[k..].starts_with(&close) {
                k += 1;
            }
            return Some((k + close.len()).min(b.len()));
        }
        if b.get(j) != Some(&b'"') {
            return None;
        }
        let mut k = j + 1;
        while k < b.len() && b[k] != b'"' {
            k += if b[k] == b'\\' { 2 } else { 1 };
        }
        Some((k + 1).min(b.len()))
    }

    /// If a char literal (`'x'`, `'\n'`, `'\''`) starts at `i`, the index just past it; `None`
    /// for a lifetime (`'a`).
    fn char_end(src: &str, i: usize) -> Option<usize> {
        let b = src.as_bytes();
        if b[i] != b'\'' {
            return None;
        }
        if b.get(i + 1) == Some(&b'\\') {
            let close = src.get(i + 3..)?.find('\'')?;
            return Some(i + 3 + close + 1);
        }
        let len = src.get(i + 1..)?.chars().next()?.len_utf8();
        (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + len + 2)
    }

    /// A cursor over Rust source.
    struct Cursor<'a> {
        src: &'a str,
        kinds: &'a [Kind],
        at: usize,
    }

    impl Cursor<'_> {
        /// Skips whitespace and comments.
        fn skip_space(&mut self) {
            let b = self.src.as_bytes();
            while self.at < b.len() && (self.kinds[self.at] == Kind::Comment || b[self.at].is_ascii_whitespace()) {
                self.at += 1;
            }
        }

        fn eat(&mut self, token: &str) -> bool {
            self.skip_space();
            if self.kinds.get(self.at) == Some(&Kind::Code) && self.src[self.at..].starts_with(token) {
                self.at += token.len();
                true
            } else {
                false
            }
        }

        /// A path like `get` or `axum::routing::get`; returns its last segment.
        fn ident_path(&mut self) -> Option<String> {
            self.skip_space();
            let b = self.src.as_bytes();
            let start = self.at;
            while self.at < b.len() && (b[self.at].is_ascii_alphanumeric() || matches!(b[self.at], b'_' | b':')) {
                self.at += 1;
            }
            let last = self.src[start..self.at].rsplit("::").next().unwrap_or_default();
            (!last.is_empty()).then(|| last.to_owned())
        }

        /// A string literal's contents (escapes left as written).
        fn string(&mut self) -> Option<String> {
            self.skip_space();
            let end = string_end(self.src.as_bytes(), self.at)?;
            let literal = &self.src[self.at..end];
            self.at = end;
            let body = &literal[literal.find('"')? + 1..];
            Some(body.trim_end_matches('#').strip_suffix('"')?.to_owned())
        }

        /// Skips a balanced `( … )` group; brackets in comments and literals do not count. The
        /// cursor must be on the `(`.
        fn skip_group(&mut self) -> bool {
            let b = self.src.as_bytes();
            if b.get(self.at) != Some(&b'(') {
                return false;
            }
            let mut depth = 0usize;
            while self.at < b.len() {
                if self.kinds[self.at] == Kind::Code {
                    match b[self.at] {
                        b'(' | b'[' | b'{' => depth += 1,
                        b')' | b']' | b'}' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.at += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                }
                self.at += 1;
            }
            false
        }
    }

    /// Every `(method, path)` the router source declares with `.route("PATH", get(h).post(h2)…)`.
    /// Methods are lower case, as OpenAPI writes them. Panics on a construct it cannot read, so a
    /// router written differently fails loudly instead of passing unchecked.
    fn scan_routes(src: &str) -> Vec<(String, String)> {
        let kinds = classify(src);
        for unsupported in [".nest(", ".nest_service(", ".route_service("] {
            if let Some(at) = find_code(src, &kinds, unsupported, 0) {
                panic!("the route scanner cannot follow `{unsupported}` (at byte {at}): document those routes and extend the scanner");
            }
        }
        let mut routes = Vec::new();
        let mut from = 0;
        while let Some(at) = find_code(src, &kinds, ".route(", from) {
            let mut c = Cursor {
                src,
                kinds: &kinds,
                at: at + ".route(".len(),
            };
            let context = || src[at..].lines().next().unwrap_or_default().to_owned();
            let path = c
                .string()
                .unwrap_or_else(|| panic!("route without a literal path: {}", context()));
            assert!(c.eat(","), "no `,` after the path of {}", context());
            loop {
                let function = c.ident_path().unwrap_or_else(|| panic!("no method in {}", context()));
                c.skip_space();
                assert!(c.skip_group(), "unbalanced call in {}", context());
                let method = function.strip_suffix("_service").unwrap_or(&function);
                if METHODS.contains(&method) {
                    routes.push((method.to_owned(), path.clone()));
                } else if matches!(method, "any" | "on" | "on_service" | "any_service") {
                    panic!(
                        "the route scanner cannot tell the methods of `{function}(…)` in {}",
                        context()
                    );
                }
                // `.layer(…)` and the like add no method; a chained method does.
                if !c.eat(".") {
                    break;
                }
            }
            assert!(
                c.eat(")") || (c.eat(",") && c.eat(")")),
                "cannot read the end of {}",
                context()
            );
            from = c.at;
        }
        routes
    }

    fn find_code(src: &str, kinds: &[Kind], needle: &str, from: usize) -> Option<usize> {
        let mut start = from;
        while let Some(offset) = src.get(start..)?.find(needle) {
            let at = start + offset;
            if kinds[at] == Kind::Code {
                return Some(at);
            }
            start = at + 1;
        }
        None
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

    /// `None` when router and document agree, else what each lacks.
    fn mismatch(routes: &[(String, String)], doc: &Value) -> Option<String> {
        let routed: BTreeSet<(String, String)> = routes.iter().cloned().collect();
        let documented = documented(doc);
        let show = |set: Vec<&(String, String)>| {
            set.iter()
                .map(|(m, p)| format!("  {} {p}", m.to_uppercase()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        if undocumented.is_empty() && unrouted.is_empty() {
            return None;
        }
        let mut message = String::new();
        if !undocumented.is_empty() {
            message += &format!(
                "routed in src/http/mod.rs but missing from src/http/openapi.json:\n{}\n",
                show(undocumented)
            );
        }
        if !unrouted.is_empty() {
            message += &format!(
                "documented in src/http/openapi.json but not routed in src/http/mod.rs:\n{}\n",
                show(unrouted)
            );
        }
        Some(message)
    }

    #[test]
    fn every_route_is_documented() {
        let routes = scan_routes(include_str!("mod.rs"));
        assert!(
            routes.len() >= 10,
            "the scanner found only {routes:?} in src/http/mod.rs"
        );
        if let Some(message) = mismatch(&routes, &document()) {
            panic!("{message}");
        }
    }

    const SNIPPET: &str = r##"
        // .route("/commented", get(nope))
        /* .route("/blocked", post(nope)) */
        pub fn router(state: S) -> Router {
            let not_a_route = ".route(\"/in-a-string\", get(x))";
            Router::new()
                .route("/", get(page))
                .route("/api/sales", get(list_sales::<G, S>).post(create_sale::<G, S>))
                .route(
                    "/api/sales/{id}",
                    axum::routing::get(get_sale::<G, S>)
                        // a comment between calls
                        .delete(|| async { (StatusCode::GONE, ")(") })
                        .layer(SomeLayer::new('(', "]"))
                        .put(replace),
                )
                .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
                .route(r#"/raw"#, post_service(svc))
                .fallback(|| async { ApiError::RouteNotFound })
                .with_state(state)
        }
    "##;

    fn route(method: &str, path: &str) -> (String, String) {
        (method.to_owned(), path.to_owned())
    }

    #[test]
    fn scanner_finds_chained_methods() {
        assert_eq!(
            scan_routes(SNIPPET),
            vec![
                route("get", "/"),
                route("get", "/api/sales"),
                route("post", "/api/sales"),
                route("get", "/api/sales/{id}"),
                route("delete", "/api/sales/{id}"),
                route("put", "/api/sales/{id}"),
                route("get", "/healthz"),
                route("post", "/raw"),
            ]
        );
    }

    #[test]
    fn an_undocumented_route_or_an_unrouted_operation_is_reported() {
        let doc = serde_json::json!({ "paths": {
            "/": { "get": {} },
            "/api/sales": { "get": {}, "post": {} },
            "/api/sales/{id}": { "get": {}, "delete": {}, "put": {} },
            "/healthz": { "get": {} },
            "/raw": { "post": {} },
        }});
        let routes = scan_routes(SNIPPET);
        assert_eq!(mismatch(&routes, &doc), None);

        let added = format!(
            "{}\n fn more() {{ Router::new().route(\"/new\", get(h).patch(h2)) }}",
            SNIPPET
        );
        let message = mismatch(&scan_routes(&added), &doc).expect("an undocumented route must be reported");
        assert!(
            message.contains("missing from src/http/openapi.json:\n  GET /new\n  PATCH /new"),
            "{message}"
        );

        let mut extra = doc.clone();
        extra["paths"]["/ghost"] = serde_json::json!({ "get": {} });
        let message = mismatch(&routes, &extra).expect("an unrouted operation must be reported");
        assert!(
            message.contains("not routed in src/http/mod.rs:\n  GET /ghost"),
            "{message}"
        );
    }

    #[test]
    #[should_panic(expected = "cannot follow `.nest(`")]
    fn the_scanner_refuses_nested_routers() {
        scan_routes(r#"Router::new().nest("/api", api()).route("/", get(page))"#);
    }
}
