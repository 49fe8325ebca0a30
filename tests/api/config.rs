//! Configuration: flag > env > file precedence, unknown keys and secrets on the command line
//! stopping the start, and the README's table naming every `serve` setting.

use clap::Args;
use serde_json::{json, Value};

use seckill::config::ServeConfig;

/// One `seckill serve` setting, as the engine's own clap definition declares it.
#[derive(Debug)]
pub struct Setting {
    /// `--listen`.
    pub flag: String,
    /// `SECKILL_LISTEN`.
    pub env: Option<String>,
    /// What a value-enum setting accepts (names and aliases); empty when any value its type
    /// parses will do.
    pub values: Vec<String>,
    /// Left out of `--help`: fault injection for tests, which no deployment or table names.
    pub hidden: bool,
}

/// Every `seckill serve` setting: `ServeConfig`'s arguments (with the flattened distributed
/// ones) and clap's own `--help`.
pub fn serve_settings() -> Vec<Setting> {
    let mut command = ServeConfig::augment_args(clap::Command::new("serve"));
    // Building settles what each argument takes (a bare flag takes no value) and adds --help.
    command.build();
    command
        .get_arguments()
        .map(|arg| Setting {
            flag: format!("--{}", arg.get_long().expect("every serve setting has a --long name")),
            env: arg
                .get_env()
                .map(|env| env.to_str().expect("an ASCII variable name").to_owned()),
            values: arg
                .get_possible_values()
                .iter()
                .flat_map(|value| value.get_name_and_aliases())
                .map(str::to_owned)
                .collect(),
            hidden: arg.is_hide_set(),
        })
        .collect()
}

fn seckill() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_seckill"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SECKILL_") {
            command.env_remove(key);
        }
    }
    command
}

/// Starts `seckill serve` with `--config` and the given environment; returns its base URL.
fn serve_with_config(
    config: &std::path::Path,
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let mut child = seckill()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .next()
        .expect("a line")
        .expect("read");
    let base = line
        .strip_prefix("seckill listening on ")
        .expect("listening")
        .trim()
        .to_owned();
    (child, base)
}

#[tokio::test]
async fn a_config_file_sets_what_flags_and_env_do_not() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("seckill.toml");
    std::fs::write(
        &config,
        "demo_stock = 7\nadmin_token = \"from-the-file\"\nlisten = \"127.0.0.1:1\"\n",
    )
    .expect("write");
    let client = reqwest::Client::new();
    // The file says 7; the environment beats the file; the --listen flag beats the file's port 1.
    for (env, expected) in [(vec![], 7), (vec![("SECKILL_DEMO_STOCK", "9")], 9)] {
        let data = dir.path().join(format!("data-{expected}"));
        let (mut child, base) = serve_with_config(&config, &data, &env);
        let count: Value = client
            .get(format!("{base}/seckill/getCount"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        let created = client
            .post(format!("{base}/api/sales"))
            .bearer_auth("from-the-file")
            .json(&json!({ "name": "x", "stock": 1 }))
            .send()
            .await
            .expect("POST")
            .status();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(count["num"], expected, "demo stock");
        assert_eq!(created, 201, "admin token from the file");
    }
}

#[test]
fn bad_config_files_and_secret_flags_stop_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "redis_ulr = \"redis://x\"\n").expect("write");
    let output = seckill()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown setting `redis_ulr`"), "{stderr}");

    let output = seckill()
        .args(["serve", "--admin-token", "visible-in-ps"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token is a secret"), "{stderr}");
    assert!(!stderr.contains("visible-in-ps"), "the secret is not echoed: {stderr}");

    let output = seckill().args(["serve", "--auth", "jwt"]).output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SECKILL_JWT_SECRET"));
}

/// `--help` shows each setting's variable, and clap would show its value too: service URLs carry
/// passwords, so their values are hidden; one typed on the command line is refused.
#[test]
fn help_never_shows_a_password_and_urls_with_one_are_refused_as_flags() {
    for subcommand in ["serve", "consumer"] {
        let output = seckill()
            .args([subcommand, "--help"])
            .env("SECKILL_REDIS_URL", "redis://:redis-pw-1@redis:6379/0")
            .env("SECKILL_DATABASE_URL", "mysql://u:mysql-pw-2@db/seckill")
            .env("SECKILL_ADMIN_TOKEN", "admin-token-3")
            .env("SECKILL_JWT_SECRET", "jwt-secret-4")
            .output()
            .expect("run");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && help.contains("SECKILL_DATABASE_URL"),
            "{help}"
        );
        for secret in ["redis-pw-1", "mysql-pw-2", "admin-token-3", "jwt-secret-4"] {
            assert!(!help.contains(secret), "`{subcommand} --help` shows {secret}: {help}");
        }
    }
    let output = seckill()
        .args(["serve", "--database-url", "mysql://u:visible-in-ps@db/seckill"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--database-url carries a password"), "{stderr}");
    assert!(stderr.contains("SECKILL_DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("visible-in-ps"),
        "the password is not echoed: {stderr}"
    );
}

#[test]
fn the_readme_table_documents_every_serve_setting() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let table: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `--")).collect();
    let settings = serve_settings();
    assert!(
        settings.iter().any(|s| s.flag == "--redis-url"),
        "the flattened distributed settings are listed: {settings:?}"
    );
    let mut missing = Vec::new();
    for setting in settings.iter().filter(|s| !s.hidden && s.flag != "--help") {
        for name in std::iter::once(&setting.flag).chain(&setting.env) {
            if !table.iter().any(|row| row.contains(&format!("`{name}`"))) {
                missing.push(name.clone());
            }
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "README config table lacks: {missing:?}");
}
