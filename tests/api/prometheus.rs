//! Reading the engine's `GET /metrics`: the Prometheus text format, checked strictly, and the
//! value of one sample.

use std::collections::{HashMap, HashSet};

use crate::helpers::TestServer;

pub async fn scrape(app: &TestServer) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET /metrics");
    response.text().await.expect("metrics text")
}

/// Name, labels, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// One sample line split into name, labels and value; label values may hold any character
/// but `"` (routes hold braces).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let (label_value, after) = after.split_once('"')?;
        labels.push((key, label_value));
        rest = after.strip_prefix(',').unwrap_or(after);
        if !after.is_empty() && !after.starts_with(',') {
            return None;
        }
    }
    Some((name, labels, value))
}

/// The value of one sample: `name{labels}`, labels matched exactly.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .find(|(n, l, _)| *n == name && l.len() == labels.len() && labels.iter().all(|pair| l.contains(pair)))
        .map(|(_, _, v)| v)
}

/// Strict text-format check: every family has HELP and TYPE before its samples, and every
/// sample line is `name{label="value",...} number`.
pub fn assert_exposition_format(text: &str) {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().expect("name").to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().expect("name"), parts.next().expect("kind"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
        } else {
            let (name, _, _) = parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line}"));
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "name: {line}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                typed.contains_key(family) && helped.contains(family),
                "untyped sample: {line}"
            );
        }
    }
}
