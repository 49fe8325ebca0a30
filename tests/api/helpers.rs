use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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

/// The distributed mode's services for one test: its own Redis prefix, MySQL database and
/// Kafka topic on the shared Redis and MariaDB, and its own tansu broker.
#[derive(Clone)]
pub struct Services {
    pub redis_url: String,
    pub backend_timeout_ms: u64,
    pub redis_prefix: String,
    pub database_url: String,
    pub topic: String,
    pub brokers: String,
    pub kafka_timeout_ms: u64,
    pub reconcile_after_ms: u64,
    pub broker: std::sync::Arc<Broker>,
    _cleanup: std::sync::Arc<Cleanup>,
}

/// Drops the test's database and Redis keys when the last clone of its `Services` goes.
struct Cleanup {
    database: String,
    redis_prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-uroot", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.database))
            .status();
        let script = format!(
            "redis-cli -h 127.0.0.1 --scan --pattern '{}:*' | xargs -r redis-cli -h 127.0.0.1 del >/dev/null",
            self.redis_prefix
        );
        let _ = std::process::Command::new("sh").arg("-c").arg(script).status();
    }
}

impl Services {
    pub async fn start() -> Self {
        Self::with_broker(Broker::start(None).await)
    }

    /// Like [`Services::start`], with every connection to the broker through a [`Proxy`] the
    /// test can cut (returned too).
    pub async fn behind_proxy() -> (Self, Proxy) {
        let port = free_port();
        let broker_port = free_port();
        let proxy = Proxy::start(port, format!("127.0.0.1:{broker_port}")).await;
        let broker = Broker::start(Some((broker_port, port))).await;
        (Self::with_broker(broker), proxy)
    }

    fn with_broker(broker: Broker) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let broker = std::sync::Arc::new(broker);
        Services {
            _cleanup: std::sync::Arc::new(Cleanup {
                database: format!("seckill_test_{id}"),
                redis_prefix: format!("test-{id}"),
            }),
            redis_url: "redis://127.0.0.1:6379/0".into(),
            backend_timeout_ms: 2000,
            redis_prefix: format!("test-{id}"),
            database_url: format!("mysql://root@127.0.0.1:3306/seckill_test_{id}"),
            topic: format!("orders-{id}"),
            brokers: broker.address.clone(),
            kafka_timeout_ms: 3000,
            reconcile_after_ms: 30_000,
            broker,
        }
    }

    pub fn args(&self) -> Vec<String> {
        [
            ("--redis-url", self.redis_url.clone()),
            ("--backend-timeout-ms", self.backend_timeout_ms.to_string()),
            ("--redis-prefix", self.redis_prefix.clone()),
            ("--database-url", self.database_url.clone()),
            ("--kafka-topic", self.topic.clone()),
            ("--kafka-brokers", self.brokers.clone()),
            ("--kafka-partitions", "4".into()),
            ("--kafka-group", format!("group-{}", self.topic)),
            ("--kafka-timeout-ms", self.kafka_timeout_ms.to_string()),
            ("--reconcile-after-ms", self.reconcile_after_ms.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }

    /// A `seckill consumer` process for these services.
    pub fn consumer(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_seckill"))
            .arg("consumer")
            .args(self.args())
            .env("SECKILL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn seckill consumer")
    }
}

/// A tansu Kafka-protocol broker of one test, on a free port, keeping everything in memory.
pub struct Broker {
    child: std::sync::Mutex<Option<std::process::Child>>,
    pub address: String,
    pid: u32,
}

impl Broker {
    /// On a free port, or on `(port, advertised port)` when clients must reach it another way.
    pub async fn start(ports: Option<(u16, u16)>) -> Self {
        let tansu = std::env::var("SECKILL_TANSU").ok().or_else(|| {
            let home = std::env::var("HOME").ok()?;
            let path = format!("{home}/.cargo/bin/tansu");
            std::path::Path::new(&path).exists().then_some(path)
        });
        let tansu = tansu.unwrap_or_else(|| "tansu".into());
        let (port, advertised) = ports.unwrap_or_else(|| {
            let port = free_port();
            (port, port)
        });
        let address = format!("127.0.0.1:{port}");
        let mut child = std::process::Command::new(&tansu)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .arg("--listener-url")
            .arg(format!("tcp://{address}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {tansu} (the distributed tests need tansu: `bash .ci/run` installs it): {e}")
            });
        let pid = child.id();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return Broker {
                    child: std::sync::Mutex::new(Some(child)),
                    address: format!("127.0.0.1:{advertised}"),
                    pid,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tansu did not listen on {address}");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGSTOP: the broker holds its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }
}

/// A TCP proxy between the engine and a service that a test can cut: while cut, open
/// connections are dropped and new ones closed at once, as when the network to it fails.
pub struct Proxy {
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(port: u16, upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy");
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let accept = {
            let (cut, connections) = (std::sync::Arc::clone(&cut), std::sync::Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut open = connections.lock().expect("proxy connections");
                    open.retain(|c| !c.is_finished());
                    open.push(task.abort_handle());
                }
            })
        };
        Proxy {
            cut,
            connections,
            accept,
        }
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().expect("proxy connections").drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server process of one test, with its own port and data dir, so the test can kill and
/// restart it without touching the others.
pub struct TestProcess {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    command: fn(&Path, u16) -> std::process::Command,
}

impl TestProcess {
    async fn start(dir: tempfile::TempDir, command: fn(&Path, u16) -> std::process::Command) -> Self {
        let mut process = TestProcess {
            child: None,
            dir,
            port: free_port(),
            command,
        };
        process.launch().await;
        process
    }

    async fn launch(&mut self) {
        let mut command = (self.command)(self.dir.path(), self.port);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        self.child = Some(child.unwrap_or_else(|e| panic!("cannot start {program}: {e}")));
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{program} did not listen on {}", self.port);
    }

    /// SIGKILL: no shutdown work; what survives is what the server had made durable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn mysql_url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis that persists every write to its append-only file, so a restart finds the gate as it was.
pub async fn redis_server() -> TestProcess {
    TestProcess::start(tempfile::tempdir().expect("temp dir"), |dir, port| {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir);
        cmd
    })
    .await
}

/// A fresh MariaDB (Debian's mariadb-server); InnoDB recovers from its redo log after a kill.
pub async fn mariadb_server() -> TestProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = std::process::Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ])
        .arg(format!("--datadir={}", dir.path().join("data").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mariadb-install-db (Debian's mariadb-server)");
    assert!(status.success(), "mariadb-install-db failed");
    TestProcess::start(dir, |dir, port| {
        // Debian puts it in /usr/sbin, which a non-root PATH may lack.
        let program = ["/usr/sbin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("mariadbd");
        let mut cmd = std::process::Command::new(program);
        cmd.args([
            "--no-defaults",
            "--user=root",
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
        ])
        .args(["--innodb-buffer-pool-size=64M", "--skip-name-resolve"])
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--port={port}"));
        cmd
    })
    .await
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[derive(Clone, Default)]
pub struct Options {
    /// `Some`: run `--backend distributed` against these services.
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

    pub async fn audit(&self, sale: i64) -> Value {
        let (status, audit) = self.get(&format!("/api/sales/{sale}/audit")).await;
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

impl Services {
    /// Deletes keys from the test's Redis, as a partial data loss would.
    pub async fn redis_del(&self, keys: &[String]) {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.expect("DEL");
    }

    /// The Redis key of a sale's gate structure (`meta`, `holders`, `seqs`, `pending`).
    pub fn gate_key(&self, sale: i64, name: &str) -> String {
        format!("{}:{{s{sale}}}:{name}", self.redis_prefix)
    }

    /// The order ids MySQL holds for a sale in `table` (`orders` or `order_conflicts`).
    pub async fn stored_order_ids(&self, sale: i64, table: &str) -> std::collections::HashSet<String> {
        use sqlx::Connection;
        let mut conn = sqlx::mysql::MySqlConnection::connect(&self.database_url)
            .await
            .expect("mysql");
        let ids: Vec<String> = sqlx::query_scalar(&format!("SELECT order_id FROM {table} WHERE sale_id = ?"))
            .bind(sale)
            .fetch_all(&mut conn)
            .await
            .expect("select order ids");
        ids.into_iter().collect()
    }
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
