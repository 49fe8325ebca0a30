//! The deployment files (Dockerfile, .dockerignore, deploy/compose.yaml, deploy/prometheus.yml,
//! deploy/grafana/seckill-dashboard.json) checked against the real engine: every flag and
//! `SECKILL_*` variable they name is a `seckill serve` setting (from the engine's own clap
//! definition), and every metric the dashboard queries is one the engine exports. No Docker
//! needed: the files are read with YAML, Dockerfile and ignore-file parsers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};

use dockerfile_parser_rs::{Dockerfile, Instruction};
use ignore::gitignore::GitignoreBuilder;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{serve_settings, Setting};
use crate::helpers::TestServer;
#[cfg(feature = "distributed")]
use crate::helpers::{Options, Services};
use crate::prometheus::scrape;

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

/// The settings a deployment may name: those `seckill serve --help` shows (a hidden one is
/// fault injection for tests).
struct Serve(Vec<Setting>);

impl Serve {
    fn settings() -> Self {
        Serve(serve_settings().into_iter().filter(|s| !s.hidden).collect())
    }

    fn flag(&self, flag: &str) -> Option<&Setting> {
        self.0.iter().find(|s| s.flag == flag)
    }

    fn env(&self, name: &str) -> Option<&Setting> {
        self.0.iter().find(|s| s.env.as_deref() == Some(name))
    }
}

/// The values a setting accepts when it is a closed list (a value enum), else `None`.
fn closed_values(setting: Option<&Setting>) -> Option<&[String]> {
    setting.map(|s| s.values.as_slice()).filter(|values| !values.is_empty())
}

// ---------------------------------------------------------------------------------------------
// deploy/compose.yaml

struct Compose {
    dir: PathBuf,
    doc: Value,
}

impl Compose {
    /// The file as data, `<<` merge keys expanded (and a duplicated key refused) by the YAML
    /// parser.
    fn load() -> Self {
        let doc: Value = serde_saphyr::from_str(&read("deploy/compose.yaml")).expect("compose.yaml is YAML");
        Compose {
            dir: repo().join("deploy"),
            doc,
        }
    }

    fn services(&self) -> BTreeMap<String, &Value> {
        self.doc["services"]
            .as_object()
            .expect("compose.yaml: `services` mapping")
            .iter()
            .map(|(name, service)| (name.clone(), service))
            .collect()
    }

    /// Services built from the repository's Dockerfile: the engines.
    fn engines(&self) -> BTreeMap<String, &Value> {
        let dockerfile = std::fs::canonicalize(repo().join("Dockerfile")).expect("Dockerfile at the repo root");
        self.services()
            .into_iter()
            .filter(|(_, service)| {
                let build = &service["build"];
                let (context, file) = match build {
                    Value::String(context) => (context.as_str(), "Dockerfile"),
                    Value::Object(_) => (
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

/// A published port in compose's long syntax. The short `"[ip:]host:container"` string does
/// not deserialize into it: the file writes fields, so the test reads fields.
// Every field is deserialized (and so validated) though the checks read only some.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Port {
    target: NonZeroU16,
    published: Option<NonZeroU16>,
    host_ip: Option<IpAddr>,
    protocol: Option<Protocol>,
    name: Option<String>,
    app_protocol: Option<String>,
    mode: Option<PortMode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PortMode {
    Host,
    Ingress,
}

/// `ports`, each in the long syntax; what does not read as one is a problem.
fn ports(name: &str, service: &Value, problems: &mut Vec<String>) -> Vec<Port> {
    let entries = match &service["ports"] {
        Value::Null => return Vec::new(),
        Value::Array(entries) => entries,
        _ => {
            problems.push(format!("{name}: ports is not a list"));
            return Vec::new();
        }
    };
    entries
        .iter()
        .filter_map(|entry| match serde_json::from_value::<Port>(entry.clone()) {
            Ok(port) => Some(port),
            Err(why) => {
                problems.push(format!(
                    "{name}: port {entry}: {why} (write `target:`, `published:`, `host_ip:` fields)"
                ));
                None
            }
        })
        .collect()
}

/// A string or a list of strings (`command`, `entrypoint`), as a list.
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => panic!("expected a string or a list, got {other:?}"),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// `environment` as a map or as a `KEY=VALUE` list.
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Null => Vec::new(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(items) => items
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
fn depends_on(service: &Value) -> Vec<(String, String)> {
    match &service["depends_on"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(|s| (scalar(s), "service_started".into())).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let condition = v["condition"].as_str().unwrap_or("service_started");
                (k.clone(), condition.to_owned())
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
    let serve = Serve::settings();
    assert!(serve.flag("--backend").is_some(), "no --backend among {:?}", serve.0);
    // The value checks below rely on the settings carrying their possible values.
    assert!(
        closed_values(serve.env("SECKILL_BACKEND")).is_some_and(|v| v.iter().any(|v| v == "distributed")),
        "no possible values for SECKILL_BACKEND: {:?}",
        serve.0
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
            if serve.flag(flag).is_none() {
                problems.push(format!("{name}: command flag {flag} is not a `seckill serve` setting"));
            }
            if let Some((secret_flag, env)) = SECRETS.iter().find(|(f, _)| *f == flag) {
                problems.push(format!("{name}: {secret_flag} on the command line: set {env} instead"));
            }
            let value = word
                .split_once('=')
                .map(|(_, v)| v.to_owned())
                .or_else(|| command.get(i + 1).filter(|v| !v.starts_with("--")).cloned());
            if let (Some(allowed), Some(value)) = (closed_values(serve.flag(flag)), value) {
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
            if serve.env(key).is_none() {
                problems.push(format!("{name}: environment {key} is not a `seckill serve` setting"));
                continue;
            }
            if let Some(allowed) = closed_values(serve.env(key)) {
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
        let port = listen_port(&command, &env);
        let targets: Vec<u16> = ports(name, engine, &mut Vec::new())
            .iter()
            .map(|p| p.target.get())
            .collect();
        if !targets.contains(&port) {
            problems.push(format!(
                "{name}: no port mapping reaches --listen port {port} ({targets:?})"
            ));
        }
    }

    let mut host_ports = BTreeMap::new();
    for (name, service) in &services {
        assert!(
            service["image"].is_string() || service["build"].is_object() || service["build"].is_string(),
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
        for port in ports(name, service, &mut problems) {
            if let Some(published) = port.published {
                if let Some(other) = host_ports.insert(published, name.clone()) {
                    problems.push(format!("{name} and {other} both publish host port {published}"));
                }
            }
        }
        // Named volumes are declared; bind-mounted files exist.
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = match volume {
                Value::Object(_) => scalar(&volume["source"]),
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
        for config in service["configs"].as_array().into_iter().flatten() {
            let source = match config {
                Value::Object(_) => scalar(&config["source"]),
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

/// A build stage: its name (or index), its base image and its instructions.
struct Stage<'a> {
    name: String,
    image: &'a str,
    body: Vec<&'a Instruction>,
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
    let text = read("Dockerfile");
    let dockerfile: Dockerfile = text.parse().unwrap_or_else(|e| panic!("Dockerfile: {e:?}"));
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in &dockerfile.instructions {
        match instruction {
            Instruction::From { image, alias, .. } => stages.push(Stage {
                name: alias.clone().unwrap_or_else(|| stages.len().to_string()),
                image,
                body: Vec::new(),
            }),
            Instruction::Comment(_) | Instruction::Empty {} => {}
            other => stages
                .last_mut()
                .unwrap_or_else(|| panic!("{other} before FROM"))
                .body
                .push(other),
        }
    }
    assert!(
        stages.len() >= 2,
        "a multi-stage build: the toolchain stays out of the image"
    );
    let (runtime, builders) = stages.split_last().expect("stages");
    // A RUN's command as one line (the parser keeps its words).
    let run_line = |instruction: &Instruction| match instruction {
        Instruction::Run { command, .. } => Some(command.join(" ")),
        _ => None,
    };
    let (builder, run) = builders
        .iter()
        .find_map(|stage| {
            let run = stage
                .body
                .iter()
                .filter_map(|i| run_line(i))
                .find(|run| run.contains("cargo build") && run.contains("--release") && run.contains("--locked"))?;
            Some((stage, run))
        })
        .expect("a builder stage running `cargo build --release --locked`");
    assert!(builder.image.starts_with("rust:"), "builder FROM {}", builder.image);
    assert!(
        !run.contains("--bin ") || run.contains("--bin seckill"),
        "the builder builds another binary: {run}"
    );
    // What the builder copies from the build context exists there.
    for instruction in &builder.body {
        if let Instruction::Copy {
            from: None, sources, ..
        } = instruction
        {
            for source in sources {
                assert!(
                    repo().join(source).exists(),
                    "{instruction}: {source} is not in the repository"
                );
            }
        }
    }
    assert!(
        !runtime.image.starts_with("rust:"),
        "the final stage must not be the toolchain image"
    );

    let body = &runtime.body;
    // The binary comes from the builder, to where the ENTRYPOINT finds it.
    let (source, copied) = body
        .iter()
        .find_map(|instruction| match instruction {
            Instruction::Copy {
                from: Some(from),
                sources,
                destination,
                ..
            } if *from == builder.name => {
                let source = sources.first().filter(|s| s.ends_with("seckill"))?;
                Some((source.clone(), destination.clone()))
            }
            _ => None,
        })
        .expect("COPY --from=<builder> of the seckill binary");
    assert!(
        source.contains("target/release/seckill") || run.contains(&source),
        "the builder does not put the release binary at {source}"
    );
    // ENTRYPOINT and CMD in the exec form (`["seckill"]`): the shell form would run the engine
    // under `sh -c`, which neither passes CMD on nor forwards SIGTERM. The parser prints an
    // instruction in the exec form, so an exec-form line reads back as the parser prints it.
    let last = |pick: fn(&Instruction) -> Option<&Vec<String>>, keyword: &str| {
        let instruction = body
            .iter()
            .rev()
            .find(|i| pick(i).is_some())
            .unwrap_or_else(|| panic!("{keyword}"));
        assert!(
            text.lines().any(|line| line.trim() == instruction.to_string()),
            "write {keyword} in the exec form, as `{instruction}`"
        );
        pick(instruction).expect("picked").clone()
    };
    let entrypoint = last(
        |i| match i {
            Instruction::Entrypoint(words) => Some(words),
            _ => None,
        },
        "ENTRYPOINT",
    );
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

    let user = body
        .iter()
        .rev()
        .find_map(|i| match i {
            Instruction::User { user, .. } => Some(user.as_str()),
            _ => None,
        })
        .expect("USER: the image must not run as root");
    assert!(user != "root" && user != "0", "USER {user}");

    // CMD: a subcommand with flags that exist; listening where EXPOSE says.
    let cmd = last(
        |i| match i {
            Instruction::Cmd(words) => Some(words),
            _ => None,
        },
        "CMD",
    );
    assert_eq!(cmd.first().map(String::as_str), Some("serve"), "CMD {cmd:?}");
    let serve = Serve::settings();
    for word in cmd.iter().filter(|w| w.starts_with("--")) {
        let flag = word.split('=').next().unwrap_or(word);
        assert!(
            serve.flag(flag).is_some(),
            "CMD flag {flag} is not a `seckill serve` setting"
        );
    }
    let port = listen_port(&cmd, &[]);
    let exposed = body
        .iter()
        .rev()
        .find_map(|i| match i {
            Instruction::Expose { ports } => Some(ports),
            _ => None,
        })
        .expect("EXPOSE");
    assert!(
        exposed.iter().any(|p| p.split('/').next() == Some(&port.to_string())),
        "EXPOSE {exposed:?} but CMD listens on {port}"
    );
    for instruction in body {
        if let Instruction::Env(vars) = instruction {
            for key in vars.keys().filter(|k| k.starts_with("SECKILL_")) {
                assert!(serve.env(key).is_some(), "ENV {key} is not a `seckill serve` setting");
            }
        }
    }

    // The build context keeps what `cargo build` reads. The `ignore` crate matches with
    // gitignore rules, where a pattern without a slash matches at any depth (Docker: at the
    // root only), so as long as no line re-includes (`!`) or names only directories (`dir/`),
    // it drops at least what Docker drops: what it keeps, Docker keeps.
    let dockerignore = read(".dockerignore");
    let patterns: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let unsupported: Vec<&&str> = patterns
        .iter()
        .filter(|p| p.starts_with('!') || p.ends_with('/'))
        .collect();
    assert!(
        unsupported.is_empty(),
        ".dockerignore: {unsupported:?}: the check below reads plain exclusions only"
    );
    let mut matcher = GitignoreBuilder::new(repo());
    for pattern in &patterns {
        matcher
            .add_line(None, pattern)
            .unwrap_or_else(|e| panic!(".dockerignore: {pattern}: {e}"));
    }
    let matcher = matcher.build().expect(".dockerignore patterns");
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned(), "build.rs".to_owned()];
    files_under(&repo().join("src"), "src/", &mut needed);
    files_under(&repo().join("migrations"), "migrations/", &mut needed);
    let ignored: Vec<&String> = needed
        .iter()
        .filter(|p| matcher.matched_path_or_any_parents(p, false).is_ignore())
        .collect();
    assert!(
        ignored.is_empty(),
        ".dockerignore drops files the build needs: {ignored:?}"
    );
    // Docker anchors a plain name at the context root: `target` is the build output.
    assert!(
        patterns.contains(&"target"),
        ".dockerignore must drop target/ (a line `target`)"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/prometheus.yml

#[test]
fn prometheus_scrapes_every_engine_on_its_listen_port() {
    let config: Value = serde_saphyr::from_str(&read("deploy/prometheus.yml")).expect("prometheus.yml is YAML");
    let compose = Compose::load();
    let services = compose.services();
    let jobs = config["scrape_configs"].as_array().expect("scrape_configs list");
    let mut targets = BTreeSet::new();
    for job in jobs {
        assert!(job["job_name"].is_string(), "job without job_name: {job:?}");
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        assert_eq!(path, "/metrics", "job {:?}", job["job_name"]);
        for group in job["static_configs"].as_array().into_iter().flatten() {
            for target in group["targets"].as_array().expect("static_configs targets") {
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
        .as_array()
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

/// Every `prefix…` word of `text` whose characters after the prefix satisfy `allowed`: the
/// metric names in a query (PromQL and Grafana's `label_values(…)`).
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
    #[cfg(feature = "distributed")]
    {
        let services = Services::start().await;
        let distributed = TestServer::spawn_with(Options::distributed(&services)).await;
        exported.extend(families(&exercise_and_scrape(&distributed).await));
    }

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
