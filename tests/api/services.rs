//! The distributed mode's services for the tests that need them: Redis, MariaDB and a tansu
//! broker (each test gets its own prefix, database, topic and broker), servers a test may kill,
//! and a proxy a test may cut.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::helpers::free_port;

/// The distributed mode's services for one test: its own Redis prefix, MySQL database and
/// Kafka topic on the shared Redis and MariaDB, and its own tansu broker.
#[derive(Clone)]
pub struct Services {
    pub redis_url: String,
    /// `--redis-cluster`: `redis_url` lists nodes of a Redis Cluster.
    pub redis_cluster: bool,
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

    /// Like [`Services::start`], with a durable broker the test can kill and restart.
    pub async fn with_durable_broker() -> Self {
        Self::with_broker(Broker::durable().await)
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
            redis_cluster: false,
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
        .chain(self.redis_cluster.then(|| "--redis-cluster".to_owned()))
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

/// A tansu Kafka-protocol broker of one test, on a free port: in memory, or durable (its log in
/// a SQLite file, so it survives `kill -9`).
pub struct Broker {
    child: std::sync::Mutex<Option<std::process::Child>>,
    pub address: String,
    pid: std::sync::atomic::AtomicU32,
    listen: String,
    /// The durable broker's directory (its SQLite file); `None`: in memory.
    dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// On a free port, or on `(port, advertised port)` when clients must reach it another way.
    pub async fn start(ports: Option<(u16, u16)>) -> Self {
        let (port, advertised) = ports.unwrap_or_else(|| {
            let port = free_port();
            (port, port)
        });
        Self::launch_new(format!("127.0.0.1:{port}"), format!("127.0.0.1:{advertised}"), None).await
    }

    /// A broker whose log is durable: what it acknowledged survives [`Broker::kill`].
    pub async fn durable() -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch_new(address.clone(), address, Some(dir)).await
    }

    async fn launch_new(listen: String, address: String, dir: Option<tempfile::TempDir>) -> Self {
        let broker = Broker {
            child: std::sync::Mutex::new(None),
            address,
            pid: std::sync::atomic::AtomicU32::new(0),
            listen,
            dir,
        };
        broker.launch().await;
        broker
    }

    async fn launch(&self) {
        let tansu = std::env::var("SECKILL_TANSU").ok().or_else(|| {
            let home = std::env::var("HOME").ok()?;
            let path = format!("{home}/.cargo/bin/tansu");
            std::path::Path::new(&path).exists().then_some(path)
        });
        let tansu = tansu.unwrap_or_else(|| "tansu".into());
        let mut command = std::process::Command::new(&tansu);
        command.arg("broker");
        match &self.dir {
            // tansu opens `sqlite://<name>` relative to its working directory.
            Some(dir) => command
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(dir.path()),
            None => command.args(["--storage-engine", "memory://tansu/"]),
        };
        let mut child = command
            .arg("--listener-url")
            .arg(format!("tcp://{}", self.listen))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", self.address))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {tansu} (the distributed tests need tansu: `bash .ci/run` installs it): {e}")
            });
        self.pid.store(child.id(), std::sync::atomic::Ordering::SeqCst);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(&self.listen).await.is_ok() {
                *self.child.lock().expect("broker child") = Some(child);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tansu did not listen on {}", self.listen);
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.load(std::sync::atomic::Ordering::SeqCst).to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGSTOP: the broker holds its connections but answers nothing. Returns once every
    /// thread of it has stopped: `kill` returns when the signal is sent, and on a loaded
    /// machine a thread can still answer a request after that.
    pub fn pause(&self) {
        self.signal("STOP");
        let pid = self.pid.load(std::sync::atomic::Ordering::SeqCst);
        let stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                tasks.flatten().all(|task| {
                    // The state follows the parenthesised command name: `T` or `t` once stopped.
                    std::fs::read_to_string(task.path().join("stat"))
                        .ok()
                        .and_then(|stat| {
                            stat.rsplit_once(')')
                                .map(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
                        })
                        .unwrap_or(true)
                })
            })
        };
        let started = std::time::Instant::now();
        while !stopped() && started.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGKILL: no shutdown work; a durable broker keeps what it had written.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (and, when durable, the same log).
    pub async fn restart(&self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
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

/// A Redis Cluster of three masters (Debian's redis-server), without persistence, each node on
/// free ports of its own (client and cluster bus); every node is killed when it is dropped.
pub struct RedisCluster {
    nodes: Vec<std::process::Child>,
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
}

/// One node of a test cluster, listening on free ports of its own (client and cluster bus; the
/// default bus port, port + 10000, may be taken or beyond 65535). A port free when asked can be
/// taken by another test's connection before redis-server binds it, and redis-server then exits:
/// it starts again on other ports.
async fn start_cluster_node(dir: &Path) -> (std::process::Child, u16) {
    for _ in 0..5 {
        let (port, bus) = (free_port(), free_port());
        if port == bus {
            continue;
        }
        let mut child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // A dead master is declared failed in 2 s rather than the default 15 s.
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string()])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (Debian's redis-server): {e}"));
        for _ in 0..200 {
            let exited = !matches!(child.try_wait(), Ok(None));
            if exited {
                break;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return (child, port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("redis-server did not start as a cluster node on any of 5 pairs of free ports");
}

impl RedisCluster {
    pub async fn start() -> Self {
        Self::with_replicas(0).await
    }

    /// Three masters with `replicas` replicas each; a dead master's replica takes over.
    pub async fn with_replicas(replicas: usize) -> Self {
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for _ in 0..3 * (1 + replicas) {
            let (child, port) = start_cluster_node(cluster.dir.path()).await;
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Every node must agree that all slots are served before a client is pointed at them.
        for _ in 0..300 {
            let mut ok = true;
            for port in &cluster.ports {
                ok &= cluster
                    .query::<String>(*port, redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .contains("cluster_state:ok");
            }
            // Replicas that have not synced yet could not take over.
            for port in &cluster.ports {
                let info: String = cluster.query(*port, redis::cmd("INFO").arg("replication")).await;
                ok &= !info.contains("role:slave") || info.contains("master_link_status:up");
            }
            if ok {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the Redis Cluster on {:?} never reached cluster_state:ok",
            cluster.ports
        );
    }

    /// SIGKILL of the master on `port`; with no replicas its slots go unserved.
    pub fn kill(&mut self, port: u16) {
        let at = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of the cluster");
        let _ = self.nodes[at].kill();
        let _ = self.nodes[at].wait();
    }

    /// `--redis-url` for the engine: every node, comma-separated.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
        nodes.join(",")
    }

    /// A command to one node, as it is (no cluster redirection).
    pub async fn query<T: redis::FromRedisValue>(&self, port: u16, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis node");
        cmd.query_async(&mut conn).await.expect("redis node command")
    }

    /// The port of the master serving `key`: its `CLUSTER KEYSLOT`, then the node whose
    /// `CLUSTER NODES` line marked `myself` lists a range holding that slot.
    pub async fn owner_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .query(self.ports[0], redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await;
        for port in &self.ports {
            let nodes: String = self.query(*port, redis::cmd("CLUSTER").arg("NODES")).await;
            let myself = nodes.lines().find(|l| l.contains("myself")).expect("a myself line");
            let serves = myself.split_whitespace().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                return *port;
            }
        }
        panic!("no node of {:?} serves slot {slot} of {key}", self.ports);
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A replica of the Redis on `master` (Debian's redis-server), killed when dropped. It can be
/// paused (SIGSTOP): it then acknowledges nothing, as a replica that is slow or cut off.
pub struct RedisReplica {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisReplica {
    pub async fn of(master: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args([
                "--port",
                &port.to_string(),
                "--replicaof",
                "127.0.0.1",
                &master.to_string(),
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (Debian's redis-server): {e}"));
        let replica = RedisReplica { child, port, _dir: dir };
        for _ in 0..300 {
            if replica
                .info()
                .await
                .is_some_and(|i| i.contains("master_link_status:up"))
            {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the replica on {port} never synced with its master on {master}");
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        client.get_multiplexed_async_connection().await.ok()
    }

    async fn info(&self) -> Option<String> {
        redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.connection().await?)
            .await
            .ok()
    }

    /// A hash field as the replica has it.
    pub async fn hget(&self, key: &str, field: &str) -> Option<i64> {
        let mut conn = self.connection().await.expect("replica");
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(&mut conn)
            .await
            .expect("HGET on the replica")
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisReplica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

impl Services {
    /// Deletes keys from the test's Redis, as a partial data loss would.
    pub async fn redis_del(&self, keys: &[String]) {
        let _: i64 = self.redis(redis::cmd("DEL").arg(keys)).await;
    }

    /// One command on the test's Redis.
    pub async fn redis<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        cmd.query_async(&mut conn).await.expect("redis command")
    }

    /// The Redis key of a sale's gate structure (`meta`, `buyers`, `pending`).
    pub fn gate_key(&self, sale: i64, name: &str) -> String {
        format!("{}:{{s{sale}}}:{name}", self.redis_prefix)
    }

    /// The order ids MySQL holds for a sale in `table` (`orders` or `order_conflicts`).
    pub async fn stored_order_ids(&self, sale: i64, table: &str) -> std::collections::HashSet<String> {
        use sqlx::Connection;
        let mut conn = sqlx::mysql::MySqlConnection::connect(&self.database_url)
            .await
            .expect("mysql");
        // Bytes: the column is `ascii_bin`, which sqlx does not read as text.
        let ids: Vec<Vec<u8>> = sqlx::query_scalar(&format!("SELECT order_id FROM {table} WHERE sale_id = ?"))
            .bind(sale)
            .fetch_all(&mut conn)
            .await
            .expect("select order ids");
        ids.into_iter()
            .map(|id| String::from_utf8(id).expect("an ASCII order id"))
            .collect()
    }
}
