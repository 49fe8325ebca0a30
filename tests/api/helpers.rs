use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[cfg(feature = "distributed")]
pub use crate::services::Services;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running engine process.
pub struct TestServer {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
    data_dir: PathBuf,
    // Dropped last: removes the data dir after the process is gone.
    _dir: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[derive(Clone, Default)]
pub struct Options {
    /// `Some`: run `--backend distributed` against these services.
    #[cfg(feature = "distributed")]
    pub distributed: Option<Services>,
    /// Distributed: leave the consumer to a separate `seckill consumer`.
    pub no_consumer: bool,
    pub demo_stock: u64,
    pub admin_token: Option<&'static str>,
    /// Fault injection: hold each group commit this long (`--commit-delay-ms`).
    pub commit_delay_ms: u64,
    /// More `serve` flags.
    pub extra_args: Vec<String>,
    /// More environment variables (secrets, which are refused as flags).
    pub env: Vec<(String, String)>,
    /// The store's `--data-dir`, when not the test's own temp dir (which keeps the server log).
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn new() -> Self {
        Options {
            demo_stock: 1000,
            admin_token: Some(ADMIN_TOKEN),
            ..Default::default()
        }
    }

    #[cfg(feature = "distributed")]
    pub fn distributed(services: &Services) -> Self {
        Options {
            distributed: Some(services.clone()),
            ..Options::new()
        }
    }
}

impl TestServer {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::new()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut server = Self::start(&data_dir, &options).await;
        server._dir = Some(dir);
        server
    }

    async fn start(data_dir: &Path, options: &Options) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seckill"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(options.data_dir.as_deref().unwrap_or(data_dir))
            .arg("--demo-stock")
            .arg(options.demo_stock.to_string())
            .arg("--commit-delay-ms")
            .arg(options.commit_delay_ms.to_string())
            .env_remove("SECKILL_ADMIN_TOKEN")
            .env("SECKILL_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(data_dir.join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .kill_on_drop(true);
        // Secrets go by environment: the engine refuses them as flags.
        if let Some(token) = options.admin_token {
            cmd.env("SECKILL_ADMIN_TOKEN", token);
        }
        cmd.args(&options.extra_args);
        cmd.envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        #[cfg(feature = "distributed")]
        if let Some(services) = &options.distributed {
            cmd.arg("--backend").arg("distributed").args(services.args());
            if options.no_consumer {
                cmd.arg("--no-consumer");
            }
        }
        let mut child = cmd.spawn().expect("spawn seckill");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("server did not start within 20 s")
            .expect("read stdout")
            .unwrap_or_else(|| {
                panic!(
                    "server exited: {}",
                    std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default()
                )
            });
        let base = line
            .strip_prefix("seckill listening on ")
            .expect("listening line")
            .trim()
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        TestServer {
            child,
            base,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(4096)
                .build()
                .expect("client"),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// SIGKILL: no flush, no goodbye. What was not durable is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// SIGTERM and wait: the graceful path. Returns the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid") as i32;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exit within 20 s")
            .expect("wait")
    }

    /// Starts a new process on the same data dir (call after `kill9` or `terminate`).
    pub async fn restart(mut self, options: Options) -> Self {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let mut next = Self::start(&self.data_dir, &options).await;
        next._dir = self._dir.take();
        next
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The last lines the server logged (stderr), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn count(&self) -> u64 {
        self.get("/seckill/getCount").await.1["num"].as_u64().expect("num")
    }

    /// A purchase through the classic API (`POST /seckill/seckill`): each is a new anonymous buyer.
    pub async fn classic_buy(&self) -> Value {
        let resp = self
            .client
            .post(self.url("/seckill/seckill"))
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }

    pub async fn buy(&self, sale: i64, user: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/api/sales/{sale}/purchase")))
            .header("x-user-id", user)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_sale(&self, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url("/api/sales"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a live sale and returns its id.
    pub async fn live_sale(&self, stock: u64, per_user_limit: u32) -> i64 {
        let (status, sale) = self
            .create_sale(json!({ "name": "test item", "stock": stock, "per_user_limit": per_user_limit }))
            .await;
        assert_eq!(status, 201, "{sale}");
        sale["id"].as_i64().expect("id")
    }

    /// A label-less sample of `/metrics` (a gauge or counter), if exported.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls `/metrics` every 100 ms until `name` satisfies `check` or `within` passes; returns
    /// the last value seen.
    pub async fn wait_metric(&self, name: &str, within: Duration, check: impl Fn(f64) -> bool) -> Option<f64> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let value = self.metric(name).await;
            if value.is_some_and(&check) || std::time::Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The auditor's verdict (an admin route).
    pub async fn audit(&self, sale: i64) -> Value {
        let resp = self
            .client
            .get(self.url(&format!("/api/sales/{sale}/audit")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        let audit = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{audit}");
        audit
    }
}

/// Asserts the JSON error shape and code.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

pub fn rfc3339_in(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

/// A small tmpfs of the test's own (root only): a disk that a test can fill and free.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    pub fn fill(&self) {
        use std::io::Write;
        let chunk = vec![0u8; 256 * 1024];
        if let Ok(mut file) = std::fs::File::create(self.dir.path().join("filler")) {
            while file.write_all(&chunk).is_ok() {}
        }
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
