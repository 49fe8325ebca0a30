//! The deployment files (Dockerfile, .dockerignore, deploy/compose.yaml, deploy/prometheus.yml,
//! deploy/grafana/seckill-dashboard.json) checked against the real binary: every flag and
//! `SECKILL_*` variable they name is one `seckill serve --help` lists, and every metric the
//! dashboard queries is one the engine exports. No Docker needed: the files are parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;

use crate::helpers::{Options, Services, TestServer};

/// Variables an engine container may set that are not `serve` flags: the log filter `main.rs`
/// reads, and what the Rust runtime or libc read.
const NON_FLAG_ENV: [&str; 4] = ["SECKILL_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "TZ"];

/// Secrets: refused on the command line, so only ever set from the environment, and never
/// written into a deployment file (interpolated from the operator's environment instead).
const SECRETS: [(&str, &str); 3] = [
    ("--admin-token", "SECKILL_ADMIN_TOKEN"),
    ("--jwt-secret", "SECKILL_JWT_SECRET"),
    ("--purchase-token-secret", "SECKILL_PURCHASE_TOKEN_SECRET"),
];

/// The metric families the dashboard must chart (the two histograms by their family name).
const DASHBOARD_FAMILIES: [&str; 11] = [
    "seckill_purchases_total",
    "seckill_http_requests_total",
    "seckill_http_request_duration_seconds",
    "seckill_stock_remaining",
    "seckill_stock_initial",
    "seckill_commit_batch_size",
    "seckill_store_queue_depth",
    "seckill_kafka_producer_queue_messages",
    "seckill_kafka_consumer_lag_messages",
    "seckill_rate_limited_total",
    "seckill_purchases_in_flight",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// `seckill --help` as data

/// What one `--help` text declares.
#[derive(Debug, Default)]
struct Help {
    text: String,
    /// `--long` names of the options (from the option lines, not the prose).
    flags: BTreeSet<String>,
    /// Every `SECKILL_*` name anywhere in the text (`[env: SECKILL_X=]`, or env-only secrets
    /// documented in prose).
    env: BTreeSet<String>,
    /// Possible values of an option, by its flag and by its env name.
    values: BTreeMap<String, Vec<String>>,
}

fn help(args: &[&str]) -> Help {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seckill"));
    command.args(args).arg("--help");
    // clap prints the current value of each variable: keep the text independent of ours.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SECKILL_") {
            command.env_remove(key);
        }
    }
    let output = command.output().expect("run seckill --help");
    assert!(output.status.success(), "seckill {args:?} --help failed: {output:?}");
    parse_help(&String::from_utf8(output.stdout).expect("utf-8 help"))
}

fn parse_help(text: &str) -> Help {
    let mut help = Help {
        text: text.to_owned(),
        env: identifiers(text, "SECKILL_", |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
        }),
        ..Help::default()
    };
    // Option blocks: an option line (`  -h, --help`, `      --listen <LISTEN>`) and the
    // indented lines under it up to the next option line.
    let mut blocks: Vec<(Vec<String>, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('-') && !trimmed.starts_with("- ") && indent <= 6 {
            let names: Vec<String> = trimmed
                .split([' ', ',', '='])
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(|w| w.trim_end_matches(['<', '[', '.']).to_owned())
                .collect();
            help.flags.extend(names.iter().cloned());
            blocks.push((names, Vec::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            if !trimmed.is_empty() && indent <= 6 {
                // A new heading (`Options:`): the block ended.
                blocks.push((Vec::new(), Vec::new()));
            } else {
                body.push(trimmed);
            }
        }
    }
    for (names, body) in blocks {
        let mut env = None;
        let mut values = Vec::new();
        let mut listing = false;
        for line in body {
            // `[env: X=]`, `[possible values: a, b]`: on lines of their own, or at the end of a
            // one-paragraph description.
            if let Some((_, rest)) = line.split_once("[env: ") {
                env = rest.split(['=', ']']).next().map(str::to_owned);
            }
            if let Some((_, rest)) = line.split_once("[possible values: ") {
                let list = rest.split(']').next().unwrap_or_default();
                values.extend(list.split(", ").map(str::to_owned));
            }
            if line == "Possible values:" {
                listing = true;
            } else if listing {
                match line.strip_prefix("- ") {
                    Some(item) => values.push(item.split(':').next().unwrap_or(item).trim().to_owned()),
                    None => listing = false,
                }
            }
        }
        if values.is_empty() {
            continue;
        }
        for key in names.into_iter().chain(env) {
            help.values.insert(key, values.clone());
        }
    }
    help
}

/// Every `prefix…` word of `text` whose characters after the prefix satisfy `allowed`.
fn identifiers(text: &str, prefix: &str, allowed: impl Fn(char) -> bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at + prefix.len()..];
        let len = tail.find(|c: char| !allowed(c)).unwrap_or(tail.len());
        if !preceded_by_word && len > 0 {
            found.insert(format!("{prefix}{}", &tail[..len]));
        }
        rest = &tail[len..];
    }
    found
}

#[test]
fn the_help_parser_finds_flags_env_names_and_possible_values() {
    // Both layouts clap uses for possible values, so the compose checks below can fail.
    let help = parse_help(
        "Usage: seckill serve [OPTIONS]\n\nOptions:\n      --listen <LISTEN>\n          Address.\n\n          \
         [env: SECKILL_LISTEN=]\n          [default: 127.0.0.1:3030]\n\n      --log-format <LOG_FORMAT>\n          \
         Log format.\n\n          [env: SECKILL_LOG_FORMAT=]\n          [possible values: text, json]\n\n      \
         --auth <AUTH>\n          Who the buyer is. Secrets: SECKILL_JWT_SECRET.\n\n          Possible values:\n          \
         - header: x-user-id\n          - jwt:    a token\n\n          [env: SECKILL_AUTH=]\n\n  -h, --help\n          \
         Print help\n      --backend <BACKEND>\n          `embedded`: one process [env: SECKILL_BACKEND=] \
         [default: embedded] [possible values: embedded, distributed]\n",
    );
    let flags: Vec<&str> = help.flags.iter().map(String::as_str).collect();
    assert_eq!(flags, ["--auth", "--backend", "--help", "--listen", "--log-format"]);
    let env: Vec<&str> = help.env.iter().map(String::as_str).collect();
    assert_eq!(
        env,
        [
            "SECKILL_AUTH",
            "SECKILL_BACKEND",
            "SECKILL_JWT_SECRET",
            "SECKILL_LISTEN",
            "SECKILL_LOG_FORMAT"
        ]
    );
    assert_eq!(help.values["--log-format"], ["text", "json"]);
    assert_eq!(help.values["SECKILL_LOG_FORMAT"], ["text", "json"]);
    assert_eq!(help.values["SECKILL_AUTH"], ["header", "jwt"]);
    assert_eq!(help.values["--backend"], ["embedded", "distributed"]);
    assert_eq!(help.values["SECKILL_BACKEND"], ["embedded", "distributed"]);
    assert!(!help.values.contains_key("--listen"));
}

// ---------------------------------------------------------------------------------------------
// deploy/compose.yaml

struct Compose {
    dir: PathBuf,
    doc: Yaml,
}

impl Compose {
    fn load() -> Self {
        let mut doc: Yaml = serde_yaml::from_str(&read("deploy/compose.yaml")).expect("compose.yaml is YAML");
        doc.apply_merge().expect("compose.yaml: `<<` merge keys");
        Compose {
            dir: repo().join("deploy"),
            doc,
        }
    }

    fn services(&self) -> BTreeMap<String, &Yaml> {
        self.doc["services"]
            .as_mapping()
            .expect("compose.yaml: `services` mapping")
            .iter()
            .map(|(name, service)| (name.as_str().expect("service name").to_owned(), service))
            .collect()
    }

    /// Services built from the repository's Dockerfile: the engines.
    fn engines(&self) -> BTreeMap<String, &Yaml> {
        let dockerfile = std::fs::canonicalize(repo().join("Dockerfile")).expect("Dockerfile at the repo root");
        self.services()
            .into_iter()
            .filter(|(_, service)| {
                let build = &service["build"];
                let (context, file) = match build {
                    Yaml::String(context) => (context.as_str(), "Dockerfile"),
                    Yaml::Mapping(_) => (
                        build["context"].as_str().unwrap_or("."),
                        build["dockerfile"].as_str().unwrap_or("Dockerfile"),
                    ),
                    _ => return false,
                };
                std::fs::canonicalize(self.dir.join(context).join(file)).is_ok_and(|path| path == dockerfile)
            })
            .collect()
    }
}

/// A string or a list of strings (`command`, `entrypoint`), as a list.
fn words(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Null => Vec::new(),
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Yaml::Sequence(items) => items.iter().map(scalar).collect(),
        other => panic!("expected a string or a list, got {other:?}"),
    }
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// `environment` as a map or as a `KEY=VALUE` list.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Null => Vec::new(),
        Yaml::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Yaml::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = scalar(item);
                match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (item, String::new()),
                }
            })
            .collect(),
        other => panic!("environment: expected a map or a list, got {other:?}"),
    }
}

/// `depends_on` as `(service, condition)`, list or map form.
fn depends_on(service: &Yaml) -> Vec<(String, String)> {
    match &service["depends_on"] {
        Yaml::Null => Vec::new(),
        Yaml::Sequence(items) => items.iter().map(|s| (scalar(s), "service_started".into())).collect(),
        Yaml::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let condition = v["condition"].as_str().unwrap_or("service_started");
                (scalar(k), condition.to_owned())
            })
            .collect(),
        other => panic!("depends_on: expected a list or a map, got {other:?}"),
    }
}

/// The port an engine listens on, from `--listen` (or its `SECKILL_LISTEN`), as the container
/// port.
fn listen_port(command: &[String], env: &[(String, String)]) -> u16 {
    let address = command
        .iter()
        .position(|w| w == "--listen")
        .and_then(|i| command.get(i + 1).cloned())
        .or_else(|| {
            command
                .iter()
                .find_map(|w| w.strip_prefix("--listen=").map(str::to_owned))
        })
        .or_else(|| env.iter().find(|(k, _)| k == "SECKILL_LISTEN").map(|(_, v)| v.clone()))
        .expect("an engine names its --listen address (the default 127.0.0.1 is unreachable from outside)");
    let address: std::net::SocketAddr = address.parse().unwrap_or_else(|e| panic!("--listen {address}: {e}"));
    assert!(
        address.ip().is_unspecified(),
        "an engine in a container must listen on 0.0.0.0, not {address}"
    );
    address.port()
}

/// `[[ip:]host:]container[/proto]`, ports or ranges: the container side, or why it is malformed.
fn parse_port_mapping(mapping: &str) -> Result<(Option<String>, String), String> {
    let (ports, proto) = mapping.split_once('/').unwrap_or((mapping, "tcp"));
    if !["tcp", "udp", "sctp"].contains(&proto) {
        return Err(format!("protocol {proto:?}"));
    }
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let port_or_range = |s: &str| -> Result<(), String> {
        let (low, high) = s.split_once('-').unwrap_or((s, s));
        let low: u16 = low.parse().map_err(|_| format!("port {s:?}"))?;
        let high: u16 = high.parse().map_err(|_| format!("port {s:?}"))?;
        if low == 0 || high < low {
            return Err(format!("port {s:?}"));
        }
        Ok(())
    };
    port_or_range(parts[0])?;
    let host = match parts.get(1) {
        Some(host) => {
            port_or_range(host)?;
            Some(host.to_string())
        }
        None => None,
    };
    if let Some(ip) = parts.get(2) {
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<std::net::IpAddr>().map_err(|_| format!("host ip {ip:?}"))?;
    }
    Ok((host, parts[0].to_owned()))
}

#[test]
fn the_port_mapping_parser_rejects_malformed_mappings() {
    assert_eq!(
        parse_port_mapping("3031:3030"),
        Ok((Some("3031".into()), "3030".into()))
    );
    assert_eq!(
        parse_port_mapping("127.0.0.1:9090:9090/tcp").map(|p| p.1),
        Ok("9090".into())
    );
    assert_eq!(parse_port_mapping("3030"), Ok((None, "3030".into())));
    for bad in [
        "3031:",
        ":3030",
        "3031:30300000",
        "3031:http",
        "localhost:1:2",
        "1:2/xyz",
        "0:3030",
    ] {
        assert!(parse_port_mapping(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn compose_file_names_only_flags_and_env_the_binary_accepts() {
    let compose = Compose::load();
    let services = compose.services();
    for needed in ["redis", "kafka", "mysql"] {
        assert!(services.contains_key(needed), "compose.yaml has no `{needed}` service");
    }
    let engines = compose.engines();
    assert!(
        engines.len() >= 2,
        "compose.yaml must build at least two engines from the repo's Dockerfile, found {:?}",
        engines.keys()
    );
    let serve = help(&["serve"]);
    assert!(
        serve.flags.contains("--backend"),
        "unexpected help text:\n{}",
        serve.text
    );
    // The value checks below rely on reading possible values out of the help.
    assert!(
        serve
            .values
            .get("SECKILL_BACKEND")
            .is_some_and(|v| v.iter().any(|v| v == "distributed")),
        "possible values not found in the help text:\n{}",
        serve.text
    );
    let mut problems = Vec::new();

    for (name, engine) in &engines {
        // The image's ENTRYPOINT is `seckill`: the command starts with the subcommand.
        let entrypoint = words(&engine["entrypoint"]);
        assert!(entrypoint.is_empty(), "{name}: keep the image's ENTRYPOINT (seckill)");
        let command = words(&engine["command"]);
        assert_eq!(
            command.first().map(String::as_str),
            Some("serve"),
            "{name}: command {command:?}"
        );
        for (i, word) in command.iter().enumerate().skip(1) {
            let Some(flag) = word.strip_prefix("--").map(|_| word.split('=').next().unwrap_or(word)) else {
                continue;
            };
            if !serve.flags.contains(flag) {
                problems.push(format!("{name}: command flag {flag} is not in `seckill serve --help`"));
            }
            if let Some((secret_flag, env)) = SECRETS.iter().find(|(f, _)| *f == flag) {
                problems.push(format!("{name}: {secret_flag} on the command line: set {env} instead"));
            }
            let value = word
                .split_once('=')
                .map(|(_, v)| v.to_owned())
                .or_else(|| command.get(i + 1).filter(|v| !v.starts_with("--")).cloned());
            if let (Some(allowed), Some(value)) = (serve.values.get(flag), value) {
                if !allowed.contains(&value) {
                    problems.push(format!("{name}: {flag} {value}: not one of {allowed:?}"));
                }
            }
        }
        // --backend distributed: the compose file is the distributed deployment.
        let backend = command
            .iter()
            .position(|w| w == "--backend")
            .and_then(|i| command.get(i + 1))
            .map(String::as_str);
        let env = environment(engine);
        let backend = backend.or(env
            .iter()
            .find(|(k, _)| k == "SECKILL_BACKEND")
            .map(|(_, v)| v.as_str()));
        assert_eq!(backend, Some("distributed"), "{name}: not --backend distributed");

        for (key, value) in &env {
            if NON_FLAG_ENV.contains(&key.as_str()) {
                continue;
            }
            if !serve.env.contains(key) {
                problems.push(format!("{name}: environment {key} is not in `seckill serve --help`"));
                continue;
            }
            if let Some(allowed) = serve.values.get(key) {
                if !value.contains('$') && !allowed.contains(value) {
                    problems.push(format!("{name}: {key}={value}: not one of {allowed:?}"));
                }
            }
            if SECRETS.iter().any(|(_, env)| env == key) && !value.starts_with("${") {
                problems.push(format!(
                    "{name}: {key} is written into compose.yaml: interpolate it (${{{key}:?…}})"
                ));
            }
        }
        for needed in ["SECKILL_REDIS_URL", "SECKILL_KAFKA_BROKERS", "SECKILL_DATABASE_URL"] {
            if !env.iter().any(|(k, _)| k == needed) {
                problems.push(format!("{name}: {needed} is not set (the default is 127.0.0.1)"));
            }
        }

        // The published ports reach the port the engine listens on.
        let port = listen_port(&command, &env).to_string();
        let published: Vec<String> = match &engine["ports"] {
            Yaml::Sequence(ports) => ports
                .iter()
                .filter_map(|p| match p {
                    Yaml::Mapping(_) => Some(scalar(&p["target"])),
                    p => parse_port_mapping(&scalar(p)).ok().map(|(_, container)| container),
                })
                .collect(),
            _ => Vec::new(),
        };
        if !published.contains(&port) {
            problems.push(format!(
                "{name}: no port mapping reaches --listen port {port} ({published:?})"
            ));
        }
    }

    let mut host_ports = BTreeMap::new();
    for (name, service) in &services {
        assert!(
            service["image"].is_string() || service["build"].is_mapping() || service["build"].is_string(),
            "{name}: neither image nor build"
        );
        for (target, condition) in depends_on(service) {
            match services.get(&target) {
                None => problems.push(format!("{name}: depends_on {target}, which is not a service")),
                Some(dependency) => {
                    let known = ["service_started", "service_healthy", "service_completed_successfully"];
                    if !known.contains(&condition.as_str()) {
                        problems.push(format!("{name}: depends_on {target}: condition {condition}"));
                    }
                    if condition == "service_healthy" && dependency["healthcheck"]["test"].is_null() {
                        problems.push(format!(
                            "{name}: waits for {target} to be healthy, which has no healthcheck"
                        ));
                    }
                }
            }
        }
        if let Some(ports) = service["ports"].as_sequence() {
            for port in ports {
                let (host, container) = match port {
                    Yaml::Mapping(_) => (
                        Some(scalar(&port["published"])).filter(|p| !p.is_empty()),
                        scalar(&port["target"]),
                    ),
                    port => match parse_port_mapping(&scalar(port)) {
                        Ok(parsed) => parsed,
                        Err(why) => {
                            problems.push(format!("{name}: port mapping {port:?}: {why}"));
                            continue;
                        }
                    },
                };
                if container.parse::<u16>().map_or(true, |p| p == 0) && !container.contains('-') {
                    problems.push(format!("{name}: port mapping {port:?}: container port {container:?}"));
                }
                if let Some(host) = host {
                    if let Some(other) = host_ports.insert(host.clone(), name.clone()) {
                        problems.push(format!("{name} and {other} both publish host port {host}"));
                    }
                }
            }
        } else if !service["ports"].is_null() {
            problems.push(format!("{name}: ports is not a list"));
        }
        // Named volumes are declared; bind-mounted files exist.
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = match volume {
                Yaml::Mapping(_) => scalar(&volume["source"]),
                other => scalar(other).split(':').next().unwrap_or_default().to_owned(),
            };
            if source.starts_with('.') || source.starts_with('/') {
                if !compose.dir.join(&source).exists() {
                    problems.push(format!(
                        "{name}: bind mount {source} does not exist next to compose.yaml"
                    ));
                }
            } else if compose.doc["volumes"].get(source.as_str()).is_none() {
                problems.push(format!("{name}: volume {source} is not declared under `volumes`"));
            }
        }
        for config in service["configs"].as_sequence().into_iter().flatten() {
            let source = match config {
                Yaml::Mapping(_) => scalar(&config["source"]),
                other => scalar(other),
            };
            if compose.doc["configs"].get(source.as_str()).is_none() {
                problems.push(format!("{name}: config {source} is not declared under `configs`"));
            }
        }
    }
    assert!(problems.is_empty(), "deploy/compose.yaml:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuations joined.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.trim().split_once(char::is_whitespace).unwrap_or((&current, ""));
                instructions.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// A build stage: its name (or index), its base image and its instructions.
type Stage = (String, String, Vec<(String, String)>);

/// An exec-form (`["a", "b"]`) argument list.
fn exec_form(keyword: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| panic!("{keyword} {args}: use the exec form [\"…\"]"))
}

/// `.dockerignore` semantics, enough for this repo: the last matching pattern wins, `!`
/// re-includes, a pattern matching a directory excludes what is under it; `*` is one path
/// element's characters, `**` any number of elements.
fn docker_ignores(patterns: &[(bool, String)], path: &str) -> bool {
    fn glob(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => glob(&pattern[1..], path) || (!path.is_empty() && glob(pattern, &path[1..])),
            (Some(p), Some(s)) => element(p.as_bytes(), s.as_bytes()) && glob(&pattern[1..], &path[1..]),
            _ => false,
        }
    }
    fn element(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => element(&p[1..], s) || (!s.is_empty() && element(p, &s[1..])),
            (Some(b'?'), Some(_)) => element(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && element(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let elements: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for (exclude, pattern) in patterns {
        let pattern: Vec<&str> = pattern
            .trim_matches('/')
            .split('/')
            .filter(|e| !e.is_empty() && *e != ".")
            .collect();
        if (1..=elements.len()).any(|n| glob(&pattern, &elements[..n])) {
            ignored = *exclude;
        }
    }
    ignored
}

fn dockerignore_patterns(text: &str) -> Vec<(bool, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(pattern) => (false, pattern.trim().to_owned()),
            None => (true, l.to_owned()),
        })
        .collect()
}

#[test]
fn the_dockerignore_matcher_follows_docker_semantics() {
    let patterns = dockerignore_patterns("# c\ntarget\n*.sqlite3*\n**/*.log\n*\n!src\n!Cargo.*\n");
    assert!(docker_ignores(&patterns, "target/release/seckill"));
    assert!(docker_ignores(&patterns, "migrations/mysql/0001_orders.sql"));
    assert!(docker_ignores(&patterns, "README.md"));
    assert!(!docker_ignores(&patterns, "src/main.rs"));
    assert!(!docker_ignores(&patterns, "Cargo.lock"));
    let patterns = dockerignore_patterns("**/*.log\ndata\n");
    assert!(docker_ignores(&patterns, "a/b/c.log"));
    assert!(!docker_ignores(&patterns, "src/data.rs"));
}

fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().expect("file type").is_dir() {
            files_under(&entry.path(), &format!("{name}/"), out);
        } else {
            out.push(name);
        }
    }
}

#[test]
fn dockerfile_builds_and_runs_the_seckill_binary() {
    let instructions = dockerfile_instructions(&read("Dockerfile"));
    // Stages: (name or index, base image, instructions).
    let mut stages: Vec<Stage> = Vec::new();
    for (keyword, args) in instructions {
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, r#as, name] if r#as.eq_ignore_ascii_case("as") => name.to_string(),
                _ => stages.len().to_string(),
            };
            stages.push((name, words[0].to_owned(), Vec::new()));
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before FROM"))
                .2
                .push((keyword, args));
        }
    }
    assert!(
        stages.len() >= 2,
        "a multi-stage build: the toolchain stays out of the image"
    );
    let (runtime, builders) = stages.split_last().expect("stages");
    let builder = builders
        .iter()
        .find(|(_, _, body)| {
            body.iter().any(|(k, a)| {
                k == "RUN" && a.contains("cargo build") && a.contains("--release") && a.contains("--locked")
            })
        })
        .expect("a builder stage running `cargo build --release --locked`");
    assert!(builder.1.starts_with("rust:"), "builder FROM {}", builder.1);
    let run = builder
        .2
        .iter()
        .find(|(k, a)| k == "RUN" && a.contains("cargo build"))
        .expect("RUN");
    assert!(
        !run.1.contains("--bin ") || run.1.contains("--bin seckill"),
        "the builder builds another binary: {}",
        run.1
    );
    assert!(
        !runtime.1.starts_with("rust:"),
        "the final stage must not be the toolchain image"
    );

    let body = &runtime.2;
    let last = |keyword: &str| body.iter().rev().find(|(k, _)| k == keyword).map(|(_, a)| a.clone());
    // The binary comes from the builder, to where the ENTRYPOINT finds it.
    let copies: Vec<Vec<&str>> = body
        .iter()
        .filter(|(k, _)| k == "COPY")
        .map(|(_, a)| a.split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.iter().any(|w| *w == format!("--from={}", builder.0)))
        .collect();
    let copied = copies
        .iter()
        .find_map(|w| {
            let paths: Vec<&&str> = w.iter().filter(|w| !w.starts_with("--")).collect();
            let (source, dest) = (paths.first()?, paths.last()?);
            source.ends_with("seckill").then(|| dest.to_string())
        })
        .expect("COPY --from=<builder> of the seckill binary");
    let source = copies
        .iter()
        .flat_map(|w| w.iter().filter(|w| !w.starts_with("--")).take(1))
        .find(|s| s.ends_with("seckill"))
        .expect("source");
    assert!(
        source.contains("target/release/seckill") || run.1.contains(source),
        "the builder does not put the release binary at {source}"
    );
    let entrypoint = exec_form("ENTRYPOINT", &last("ENTRYPOINT").expect("ENTRYPOINT"));
    let program = entrypoint.first().expect("ENTRYPOINT program").clone();
    let on_path = [
        "/usr/local/bin/seckill",
        "/usr/bin/seckill",
        "/usr/local/bin/",
        "/usr/bin/",
    ];
    assert!(
        program == copied || (program == "seckill" && on_path.contains(&copied.as_str())),
        "ENTRYPOINT {program} does not run the copied binary {copied}"
    );
    assert_eq!(
        entrypoint.len(),
        1,
        "ENTRYPOINT [\"seckill\"]: the subcommand belongs to CMD"
    );

    let user = last("USER").expect("USER: the image must not run as root");
    let user = user.split(':').next().unwrap_or_default();
    assert!(user != "root" && user != "0", "USER {user}");

    // CMD: a subcommand with flags that exist; listening where EXPOSE says.
    let cmd = exec_form("CMD", &last("CMD").expect("CMD"));
    assert_eq!(cmd.first().map(String::as_str), Some("serve"), "CMD {cmd:?}");
    let serve = help(&["serve"]);
    for word in cmd.iter().filter(|w| w.starts_with("--")) {
        let flag = word.split('=').next().unwrap_or(word);
        assert!(
            serve.flags.contains(flag),
            "CMD flag {flag} is not in `seckill serve --help`"
        );
    }
    let port = listen_port(&cmd, &[]);
    let exposed = last("EXPOSE").expect("EXPOSE");
    assert!(
        exposed
            .split_whitespace()
            .any(|p| p.split('/').next() == Some(&port.to_string())),
        "EXPOSE {exposed} but CMD listens on {port}"
    );
    for (_, env) in body.iter().filter(|(k, _)| k == "ENV") {
        for key in env.split_whitespace().filter_map(|w| w.split('=').next()) {
            if key.starts_with("SECKILL_") {
                assert!(serve.env.contains(key), "ENV {key} is not in `seckill serve --help`");
            }
        }
    }

    // The build context keeps what `cargo build` reads.
    let patterns = dockerignore_patterns(&read(".dockerignore"));
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    files_under(&repo().join("src"), "src/", &mut needed);
    files_under(&repo().join("migrations"), "migrations/", &mut needed);
    let ignored: Vec<&String> = needed.iter().filter(|p| docker_ignores(&patterns, p)).collect();
    assert!(
        ignored.is_empty(),
        ".dockerignore drops files the build needs: {ignored:?}"
    );
    assert!(
        docker_ignores(&patterns, "target/release/seckill"),
        ".dockerignore must drop target/"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/prometheus.yml

#[test]
fn prometheus_scrapes_every_engine_on_its_listen_port() {
    let config: Yaml = serde_yaml::from_str(&read("deploy/prometheus.yml")).expect("prometheus.yml is YAML");
    let compose = Compose::load();
    let services = compose.services();
    let jobs = config["scrape_configs"].as_sequence().expect("scrape_configs list");
    let mut targets = BTreeSet::new();
    for job in jobs {
        assert!(job["job_name"].is_string(), "job without job_name: {job:?}");
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        assert_eq!(path, "/metrics", "job {:?}", job["job_name"]);
        for group in job["static_configs"].as_sequence().into_iter().flatten() {
            for target in group["targets"].as_sequence().expect("static_configs targets") {
                let target = scalar(target);
                let (host, port) = target
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("target {target}: host:port"));
                assert!(
                    services.contains_key(host),
                    "target {target}: {host} is not a compose service"
                );
                port.parse::<u16>().unwrap_or_else(|_| panic!("target {target}: port"));
                targets.insert(target);
            }
        }
    }
    for (name, engine) in compose.engines() {
        let port = listen_port(&words(&engine["command"]), &environment(engine));
        let target = format!("{name}:{port}");
        assert!(
            targets.contains(&target),
            "prometheus.yml does not scrape {target} ({targets:?})"
        );
    }

    // The compose file mounts this file where Prometheus reads it.
    let prometheus = services.get("prometheus").expect("a prometheus service");
    let mounted = prometheus["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(scalar)
        .find(|v| v.starts_with("./prometheus.yml:"))
        .expect("compose mounts ./prometheus.yml into prometheus");
    let inside = mounted.split(':').nth(1).expect("mount target");
    let flag = words(&prometheus["command"])
        .into_iter()
        .find_map(|w| w.strip_prefix("--config.file=").map(str::to_owned))
        .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".into());
    assert_eq!(inside, flag, "prometheus reads {flag}, the file is mounted at {inside}");
}

// ---------------------------------------------------------------------------------------------
// deploy/grafana/seckill-dashboard.json

/// Every `seckill_…` identifier in a query of the dashboard (panel targets, template variables).
fn dashboard_metrics(value: &serde_json::Value, key: Option<&str>, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::String(s) if matches!(key, Some("expr" | "query" | "definition")) => {
            out.extend(identifiers(s, "seckill_", |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
            }));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_metrics(v, key, out)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| dashboard_metrics(v, Some(k), out)),
        _ => {}
    }
}

/// Metric families (`# TYPE name kind`) of an exposition.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// The family a queried series belongs to: itself, or a histogram's `_bucket`/`_sum`/`_count`.
fn family_of<'a>(series: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(series) {
        return Some(series);
    }
    for (suffix, kinds) in [
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
    ] {
        if let Some(base) = series.strip_suffix(suffix) {
            if families.get(base).is_some_and(|kind| kinds.contains(&kind.as_str())) {
                return Some(base);
            }
        }
    }
    None
}

async fn scrape(app: &TestServer) -> String {
    let resp = app.client.get(app.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics text")
}

/// Some traffic, so that labelled series exist, then the exposition.
async fn exercise_and_scrape(app: &TestServer) -> String {
    let sale = app.live_sale(10, 1).await;
    for user in ["deploy-a", "deploy-b"] {
        let (status, body) = app.buy(sale, user).await;
        assert_eq!(status, 201, "{body}");
    }
    app.get("/seckill/getCount").await;
    app.get("/no/such/route").await;
    scrape(app).await;
    scrape(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_only_metrics_the_engine_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/seckill-dashboard.json")).expect("dashboard is JSON");
    assert!(
        dashboard["title"].is_string() && dashboard["uid"].is_string(),
        "title and uid"
    );
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let variables = dashboard["templating"]["list"].as_array().cloned().unwrap_or_default();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    let mut ids = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("panel title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: duplicate id"
        );
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("{title}: no targets")) {
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty expr"
            );
            let datasource = if target["datasource"].is_object() {
                &target["datasource"]
            } else {
                &panel["datasource"]
            };
            assert_eq!(datasource["type"], "prometheus", "{title}: datasource type");
            let uid = datasource["uid"].as_str().expect("datasource uid");
            if let Some(variable) = uid.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                let declared = variables
                    .iter()
                    .any(|v| v["name"] == variable && v["type"] == "datasource" && v["query"] == "prometheus");
                assert!(
                    declared,
                    "{title}: datasource ${{{variable}}} is not a prometheus datasource variable"
                );
            }
        }
    }

    let mut queried = BTreeSet::new();
    dashboard_metrics(&dashboard, None, &mut queried);

    // The union of what both backends export: some families exist in one mode only.
    let embedded = TestServer::spawn().await;
    let mut exported = families(&exercise_and_scrape(&embedded).await);
    let services = Services::start().await;
    let distributed = TestServer::spawn_with(Options::distributed(&services)).await;
    exported.extend(families(&exercise_and_scrape(&distributed).await));

    let unknown: Vec<&String> = queried.iter().filter(|m| family_of(m, &exported).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the engine does not export: {unknown:?}\nexported families: {exported:?}"
    );
    let charted: BTreeSet<&str> = queried.iter().filter_map(|m| family_of(m, &exported)).collect();
    let missing: Vec<&str> = DASHBOARD_FAMILIES
        .into_iter()
        .filter(|f| !charted.contains(f))
        .collect();
    assert!(missing.is_empty(), "the dashboard charts none of {missing:?}");
    for histogram in ["seckill_http_request_duration_seconds", "seckill_commit_batch_size"] {
        assert_eq!(exported[histogram], "histogram", "{histogram}");
    }
}
