//! Configuration: one struct per engine subcommand ([`ServeConfig`], [`ConsumerConfig`]),
//! filled by `clap` from flags, `SECKILL_*` variables and a TOML file ([`load`]). The
//! top-level parser, which also holds the load generator's subcommands, is the binary's.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Parser, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (the classic API's port is 3030; use port 0 for any free port).
    #[arg(long, env = "SECKILL_LISTEN", default_value = "127.0.0.1:3030")]
    pub listen: SocketAddr,

    /// Where the embedded order store keeps its SQLite file.
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Stock of the demo sale created on first start (the one the classic API sells).
    /// Ignored once the data dir holds a demo sale: a restart never resets stock.
    #[arg(long, env = "SECKILL_DEMO_STOCK", default_value_t = 1000)]
    pub demo_stock: u64,

    /// A TOML file of settings: keys are these flags' names (`redis_url = "..."`). Flags and
    /// `SECKILL_*` variables override it.
    #[arg(long, env = "SECKILL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Secret (env or config file only): bearer token of the admin routes and the `/admin`
    /// page. Unset: admin routes answer 403.
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// How buyers are identified: `header` trusts `X-User-Id` (set by a gateway in front);
    /// `jwt` needs `Authorization: Bearer <JWT>` whose `sub` is the user id; `either` takes the
    /// JWT when one is sent, else the header.
    #[arg(long, env = "SECKILL_AUTH", value_enum, default_value_t = AuthMode::Header)]
    pub auth: AuthMode,

    /// Secret (env or config file only): HS256 key that buyers' JWTs are signed with.
    #[arg(long, env = "SECKILL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM file of the RSA public key that verifies RS256 JWTs.
    #[arg(long, env = "SECKILL_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// When set, a JWT's `iss` must equal it.
    #[arg(long, env = "SECKILL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, a JWT's `aud` must contain it.
    #[arg(long, env = "SECKILL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Requests per second one client IP may make (token bucket; 0: no limit). 429 beyond.
    #[arg(long, env = "SECKILL_RATE_LIMIT_IP", default_value_t = 0)]
    pub rate_limit_ip: u32,

    /// Burst of the per-IP bucket (default: the per-second rate).
    #[arg(long, env = "SECKILL_RATE_LIMIT_IP_BURST")]
    pub rate_limit_ip_burst: Option<u32>,

    /// Purchases and token requests per second one buyer may make (0: no limit). 429 beyond.
    #[arg(long, env = "SECKILL_RATE_LIMIT_USER", default_value_t = 0)]
    pub rate_limit_user: u32,

    /// Burst of the per-buyer bucket (default: the per-second rate).
    #[arg(long, env = "SECKILL_RATE_LIMIT_USER_BURST")]
    pub rate_limit_user_burst: Option<u32>,

    /// Take the client IP from the first `X-Forwarded-For` entry (only behind a proxy that sets it).
    #[arg(long, env = "SECKILL_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Purchases must carry `X-Purchase-Token` from `GET /api/sales/{id}/token`, which is only
    /// handed out while the sale is live and is bound to the buyer. The classic API's anonymous
    /// `POST /seckill/seckill` is refused in this mode.
    #[arg(long, env = "SECKILL_REQUIRE_PURCHASE_TOKEN")]
    pub require_purchase_token: bool,

    /// Secret (env or config file only): HMAC key of purchase tokens. Instances behind one load
    /// balancer need the same one. Unset: a random key per process.
    #[arg(long, env = "SECKILL_PURCHASE_TOKEN_SECRET", hide_env_values = true)]
    pub purchase_token_secret: Option<Secret>,

    /// How long a purchase token stays valid.
    #[arg(long, env = "SECKILL_PURCHASE_TOKEN_TTL_SECS", default_value_t = 30)]
    pub purchase_token_ttl_secs: u64,

    /// Proof of work on joining a waiting room (the ALTCHA protocol): the SHA-256 a buyer must
    /// find starts with this many zero hex digits, 16^N tries on average (4: about 0.3 s in a
    /// browser, 0.02 s for a native script; 5: 4 s and 0.3 s). 0: off. Signed under a key
    /// derived from `--purchase-token-secret`, so every instance sharing it verifies.
    #[arg(long, env = "SECKILL_ALTCHA_DIFFICULTY", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=8))]
    pub altcha_difficulty: u8,

    /// Seconds a winner has to pay before the unit goes back on sale, for sales that name none
    /// (and the demo sale on first start). 0: no payment step, orders are final.
    #[arg(long, env = "SECKILL_PAYMENT_WINDOW_SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::domain::MAX_PAYMENT_WINDOW_SECS)))]
    pub payment_window_secs: u32,

    /// Secret (env or config file only): the key the payment provider signs webhooks with
    /// (`Seckill-Signature`). Unset: the webhook answers 403 `payments_disabled`.
    #[arg(long, env = "SECKILL_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub payment_webhook_secret: Option<Secret>,

    /// `test`: a built-in test payment provider, for demos: the buyer's page gets a Pay button
    /// that pays through the signed webhook (a random webhook secret is used when none is set).
    /// `none`: no provider in the engine; see `--payment-url`.
    #[arg(long, env = "SECKILL_PAYMENT_PROVIDER", value_enum, default_value_t = PaymentProvider::None)]
    pub payment_provider: PaymentProvider,

    /// The shop's payment page, for the buyer's page to link to with the order: `{order_id}` in
    /// it is replaced by the order id. Unset, and no test provider: the page shows no Pay button.
    #[arg(long, env = "SECKILL_PAYMENT_URL")]
    pub payment_url: Option<String>,

    /// Fault injection for tests: hold each order this long before its durability point (the
    /// group commit, or the publish to Kafka). This widens the window in which an order is
    /// reserved but not yet durable, so a crash test can prove what happens inside it.
    #[arg(long, env = "SECKILL_COMMIT_DELAY_MS", default_value_t = 0, hide = true)]
    pub commit_delay_ms: u64,

    /// Log format on stderr.
    #[arg(long, env = "SECKILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Purchases in flight at once; beyond it buyers get 503 `overloaded` (with Retry-After)
    /// at once, so a stampede beyond capacity never builds an unbounded queue.
    #[arg(long, env = "SECKILL_MAX_INFLIGHT_PURCHASES", default_value_t = crate::engine::DEFAULT_MAX_IN_FLIGHT)]
    pub max_inflight_purchases: usize,

    /// A request body must arrive within this time (408 otherwise).
    #[arg(long, env = "SECKILL_REQUEST_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_body_timeout_ms: u64,

    /// Open client connections at most; one more is closed as soon as it is accepted. Default:
    /// 90 % of the open-file limit (raised to its hard limit at start), keeping at least 100
    /// descriptors for the store, the backends and logs.
    #[arg(long, env = "SECKILL_MAX_CONNECTIONS", value_parser = at_least_one)]
    pub max_connections: Option<NonZeroUsize>,

    /// Open connections one client address may hold (an IPv6 client is its /64); one more is
    /// closed as soon as it is accepted. Always the TCP peer's address, even with
    /// --trust-forwarded-for. High by default because thousands of phones may share one
    /// carrier-grade NAT address, and a sale must not refuse them; lower it when clients come
    /// straight from the internet.
    #[arg(long, env = "SECKILL_MAX_CONNECTIONS_PER_IP", value_parser = at_least_one, default_value = "4096")]
    pub max_connections_per_ip: NonZeroUsize,

    /// A request head must arrive whole within this time, counted from the accept or from the
    /// first byte of the next request on a kept-alive connection; the connection is closed
    /// otherwise (a client trickling header bytes holds nothing for long).
    #[arg(long, env = "SECKILL_HEADER_TIMEOUT_SECS", value_parser = at_least_one, default_value = "10")]
    pub header_timeout_secs: NonZeroUsize,

    /// A kept-alive connection that carries nothing for this long is closed (so is one whose
    /// client stops reading its response).
    #[arg(long, env = "SECKILL_KEEP_ALIVE_TIMEOUT_SECS", value_parser = at_least_one, default_value = "60")]
    pub keep_alive_timeout_secs: NonZeroUsize,

    /// `embedded`: one process, in-process gate, SQLite. `distributed`: Redis gate, Kafka log,
    /// MySQL store; run as many instances as you like on the same services.
    #[arg(long, env = "SECKILL_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,

    /// Distributed mode: do not run the consumer in this process (run `seckill consumer`).
    #[arg(long, env = "SECKILL_NO_CONSUMER")]
    pub no_consumer: bool,

    #[command(flatten)]
    pub distributed: DistributedConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Header,
    Jwt,
    Either,
}

/// A secret setting: never printed (`Debug` shows `[redacted]`).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl ServeConfig {
    /// An empty secret (`SECKILL_ADMIN_TOKEN=`) is no secret: treated as unset, here once.
    pub fn drop_empty_secrets(&mut self) {
        for secret in [
            &mut self.admin_token,
            &mut self.jwt_secret,
            &mut self.purchase_token_secret,
            &mut self.payment_webhook_secret,
        ] {
            if secret.as_ref().is_some_and(|s| s.0.is_empty()) {
                *secret = None;
            }
        }
    }
}

/// A count or a time that 0 would turn into "refuse everything" or "close at once".
fn at_least_one(value: &str) -> Result<NonZeroUsize, String> {
    let n: usize = value.parse().map_err(|_| format!("`{value}` is not a whole number"))?;
    NonZeroUsize::new(n).ok_or_else(|| "must be at least 1 (0 would refuse or close every connection)".to_owned())
}

/// Settings that may only come from the environment or the config file: a command line is
/// visible to every user of the machine (`ps`).
pub const SECRET_SETTINGS: [&str; 4] = [
    "admin_token",
    "jwt_secret",
    "purchase_token_secret",
    "payment_webhook_secret",
];

/// Who takes payments, as far as the engine is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaymentProvider {
    /// A real provider, outside the engine, calls the webhook.
    None,
    /// The built-in test provider (demos, the page test).
    Test,
}

/// Service URLs that may carry a password: given on the command line, they must not.
pub const URL_SETTINGS: [&str; 2] = ["redis_url", "database_url"];

/// Whether a service URL names a password (`scheme://user:password@host`, `redis://:password@host`);
/// of a comma-separated list (a Redis Cluster's nodes), whether any does.
pub fn url_has_password(urls: &str) -> bool {
    urls.split(',').any(one_url_has_password)
}

fn one_url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority
        .rfind('@')
        .and_then(|at| authority[..at].split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Embedded,
    Distributed,
}

/// Where the distributed mode's services are.
#[derive(Debug, Clone, Args)]
pub struct DistributedConfig {
    /// Redis holding the stock gate. With --redis-cluster: URLs of one or more nodes of a Redis
    /// Cluster, separated by commas (the client finds the others). A URL with a password only
    /// from the environment or the config file.
    #[arg(
        long,
        env = "SECKILL_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub redis_url: String,

    /// --redis-url names nodes of a Redis Cluster: the gate speaks the cluster protocol (a
    /// sale's keys share one hash slot, so each purchase stays one script on one shard).
    #[arg(long, env = "SECKILL_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Replicas that must have a reservation or a payment before the buyer hears of it (Redis
    /// `WAIT` after each group's script): with 1, a Redis master that dies and is replaced by its
    /// replica loses no acknowledged sale. 0: answer as soon as the master has it (replication
    /// is asynchronous, so a failover may lose the last few and sell their units again).
    #[arg(long, env = "SECKILL_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, env = "SECKILL_REDIS_PREFIX", default_value = "seckill")]
    pub redis_prefix: String,

    /// Kafka bootstrap servers (Apache Kafka, Redpanda, tansu…).
    #[arg(long, env = "SECKILL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic of the order log.
    #[arg(long, env = "SECKILL_KAFKA_TOPIC", default_value = "seckill-orders")]
    pub kafka_topic: String,

    /// Partitions of the topic when the engine creates it.
    #[arg(long, env = "SECKILL_KAFKA_PARTITIONS", default_value_t = 8)]
    pub kafka_partitions: i32,

    /// Consumer group of the order consumers.
    #[arg(long, env = "SECKILL_KAFKA_GROUP", default_value = "seckill-consumer")]
    pub kafka_group: String,

    /// How long a purchase waits for the broker's ack before answering 503.
    #[arg(long, env = "SECKILL_KAFKA_TIMEOUT_MS", default_value_t = 5000)]
    pub kafka_timeout_ms: u64,

    /// MySQL (or MariaDB) of the order store; the database is created when missing. A URL with
    /// a password only from the environment or the config file.
    #[arg(
        long,
        env = "SECKILL_DATABASE_URL",
        hide_env_values = true,
        default_value = "mysql://root@127.0.0.1:3306/seckill"
    )]
    pub database_url: String,

    /// Most MySQL connections per process.
    #[arg(long, env = "SECKILL_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// Timeout of each Redis call and of connecting to Redis and MySQL.
    #[arg(long, env = "SECKILL_BACKEND_TIMEOUT_MS", default_value_t = 2000)]
    pub backend_timeout_ms: u64,

    /// A reservation unconfirmed for this long is re-published by the reconciler.
    /// Must be at least twice --kafka-timeout-ms.
    #[arg(long, env = "SECKILL_RECONCILE_AFTER_MS", default_value_t = 30_000)]
    pub reconcile_after_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    /// A TOML file of settings (keys are the flags' names); flags and env override it.
    #[arg(long, env = "SECKILL_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub distributed: DistributedConfig,

    /// Log format on stderr.
    #[arg(long, env = "SECKILL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve `/metrics` (consumer lag, batch sizes) and `/healthz` here; unset: no HTTP at all.
    #[arg(long, env = "SECKILL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A service URL fit for logs and error messages: a password in it becomes `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("config file {path} is not valid TOML: {cause}")]
    Parse { path: PathBuf, cause: String },
    #[error("config file {path}: unknown setting `{key}` (settings are the flags' names, e.g. redis_url)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: `{key}` must be a string, number or boolean")]
    BadValue { path: PathBuf, key: String },
    #[error("config file {path}: `{key}` is a switch: true or false")]
    NotASwitch { path: PathBuf, key: String },
    #[error("--{0} is a secret: set it in the environment or the config file, not on the command line")]
    SecretOnCommandLine(String),
    /// The flag and its variable; never the URL, which holds the password.
    #[error(
        "--{0} carries a password, which the command line shows to every user of the machine: \
         set {1} or `{2}` in the config file instead"
    )]
    PasswordOnCommandLine(String, String, String),
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

/// Parses the command line into `C` (the binary's parser) with the config file named by the
/// subcommand's `--config`: flags beat `SECKILL_*` variables, which beat the file, which beats
/// the defaults.
///
/// The process environment is never changed. The arguments are parsed once; each file setting
/// that neither a flag nor a variable gave is appended to a private copy of the arguments as
/// the flag it stands for, and the copy is parsed again. So the file's values are validated
/// exactly like flags, and a secret from the file never appears on the real command line.
pub fn load<C: Parser>(args: Vec<OsString>) -> Result<C, ConfigError> {
    let top = C::command();
    let given = top.clone().try_get_matches_from(&args)?;
    let (command, matches) = match given.subcommand() {
        Some((name, sub)) => (top.find_subcommand(name).unwrap_or(&top), sub),
        None => (&top, &given),
    };
    refuse_secrets_on_command_line(matches)?;
    let Some(path) = matches.try_get_one::<PathBuf>("config").ok().flatten() else {
        return Ok(C::from_arg_matches(&given)?);
    };
    let mut args = args;
    args.extend(file_arguments(path, command, matches)?);
    Ok(C::try_parse_from(args)?)
}

fn refuse_secrets_on_command_line(matches: &ArgMatches) -> Result<(), ConfigError> {
    for id in SECRET_SETTINGS {
        if matches!(matches.try_contains_id(id), Ok(true)) && matches.value_source(id) == Some(ValueSource::CommandLine)
        {
            return Err(ConfigError::SecretOnCommandLine(id.replace('_', "-")));
        }
    }
    for id in URL_SETTINGS {
        let from_command_line = matches!(matches.try_contains_id(id), Ok(true))
            && matches.value_source(id) == Some(ValueSource::CommandLine);
        let url = matches.try_get_one::<String>(id).ok().flatten();
        if from_command_line && url.is_some_and(|url| url_has_password(url)) {
            return Err(ConfigError::PasswordOnCommandLine(
                id.replace('_', "-"),
                format!("SECKILL_{}", id.to_uppercase()),
                id.to_owned(),
            ));
        }
    }
    Ok(())
}

/// The file's settings as arguments of `command` (`--redis-url=...`, or the bare `--no-consumer`
/// for a switch that is on), leaving out those `given` has from a flag or a variable. Every key
/// is checked to be a setting of `command`, and every value to be a scalar.
pub fn file_arguments(path: &Path, command: &clap::Command, given: &ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
        path: path.to_owned(),
        cause: e.to_string(),
    })?;
    let mut arguments = Vec::with_capacity(table.len());
    for (key, value) in table {
        let long = key.replace('_', "-");
        // A setting is a flag that a `SECKILL_*` variable can set too (so not `--config`).
        let Some(arg) = command
            .get_arguments()
            .filter(|a| a.get_id() != "config" && a.get_env().is_some())
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::BadValue {
                    path: path.to_owned(),
                    key,
                })
            }
        };
        if !matches!(
            given.value_source(arg.get_id().as_str()),
            None | Some(ValueSource::DefaultValue)
        ) {
            continue;
        }
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value.as_str() {
                "true" => arguments.push(format!("--{long}").into()),
                "false" => {}
                _ => {
                    return Err(ConfigError::NotASwitch {
                        path: path.to_owned(),
                        key,
                    })
                }
            }
        } else {
            arguments.push(format!("--{long}={value}").into());
        }
    }
    Ok(arguments)
}

/// The binary's parser in miniature, for this library's tests: the engine's two subcommands.
#[cfg(test)]
#[derive(Debug, Parser)]
#[command(name = "seckill")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[cfg(test)]
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    Serve(Box<ServeConfig>),
    Consumer(Box<ConsumerConfig>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve_command() -> clap::Command {
        Cli::command().find_subcommand("serve").cloned().expect("serve")
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    /// The arguments the file adds to `seckill serve <flags>`.
    fn file_arguments_of(file: &tempfile::NamedTempFile, flags: &[&str]) -> Result<Vec<String>, ConfigError> {
        let matches = Cli::command()
            .try_get_matches_from(["seckill", "serve"].iter().chain(flags))
            .expect("parses");
        let (_, serve) = matches.subcommand().expect("serve");
        let arguments = file_arguments(file.path(), &serve_command(), serve)?;
        Ok(arguments
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    /// `seckill serve --config <file> <flags>` as [`load`] reads it.
    fn serve_with(file: &Path, flags: &[&str]) -> ServeConfig {
        let mut args: Vec<OsString> = vec!["seckill".into(), "serve".into(), "--config".into(), file.into()];
        args.extend(flags.iter().map(OsString::from));
        match load::<Cli>(args).expect("loads").command {
            Command::Serve(config) => *config,
            Command::Consumer(_) => panic!("serve"),
        }
    }

    #[test]
    fn file_keys_map_to_the_flags() {
        let file =
            write("redis_url = \"redis://r:6379/1\"\nrate-limit-ip = 50\nno_consumer = true\nadmin_token = \"s\"\n");
        let mut arguments = file_arguments_of(&file, &[]).expect("valid");
        arguments.sort();
        assert_eq!(
            arguments,
            vec![
                "--admin-token=s",
                "--no-consumer",
                "--rate-limit-ip=50",
                "--redis-url=redis://r:6379/1",
            ]
        );
        // A setting a flag gives is left to the flag; a switch that is off adds nothing.
        let file = write("rate_limit_ip = 50\ntrust_forwarded_for = false\n");
        assert!(file_arguments_of(&file, &["--rate-limit-ip", "3"])
            .expect("valid")
            .is_empty());
    }

    #[test]
    fn unknown_keys_and_nested_values_are_refused() {
        let unknown = write("redis_ulr = \"x\"\n");
        assert!(matches!(
            file_arguments_of(&unknown, &[]),
            Err(ConfigError::UnknownKey { key, .. }) if key == "redis_ulr"
        ));
        let itself = write("config = \"other.toml\"\n");
        assert!(matches!(
            file_arguments_of(&itself, &[]),
            Err(ConfigError::UnknownKey { key, .. }) if key == "config"
        ));
        let nested = write("listen = [1, 2]\n");
        assert!(matches!(
            file_arguments_of(&nested, &[]),
            Err(ConfigError::BadValue { key, .. }) if key == "listen"
        ));
        let switch = write("no_consumer = \"sometimes\"\n");
        assert!(matches!(
            file_arguments_of(&switch, &[]),
            Err(ConfigError::NotASwitch { key, .. }) if key == "no_consumer"
        ));
        let broken = write("listen = \n");
        assert!(matches!(
            file_arguments_of(&broken, &[]),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default_and_the_environment_stays_as_it_was() {
        let file = write("demo_stock = 7\nrate_limit_ip = 5\nno_consumer = true\nadmin_token = \"from-the-file\"\n");
        let from_file = serve_with(file.path(), &[]);
        assert_eq!((from_file.demo_stock, from_file.rate_limit_ip), (7, 5));
        assert!(from_file.no_consumer);
        assert_eq!(
            from_file.admin_token.as_ref().map(Secret::expose),
            Some("from-the-file")
        );
        assert_eq!(from_file.purchase_token_ttl_secs, 30, "not in the file: the default");
        let flagged = serve_with(file.path(), &["--demo-stock", "3"]);
        assert_eq!((flagged.demo_stock, flagged.rate_limit_ip), (3, 5));
        for var in ["SECKILL_DEMO_STOCK", "SECKILL_RATE_LIMIT_IP", "SECKILL_ADMIN_TOKEN"] {
            assert!(std::env::var_os(var).is_none(), "loading set {var}");
        }
    }

    /// Where the child process of the next test finds its config file.
    const CHILD_CONFIG: &str = "SECKILL_TEST_CHILD_CONFIG";

    #[test]
    fn the_environment_beats_the_file() {
        // The variable is set only in a child process (this test binary again, running the
        // test below): this process's environment is never changed.
        let file = write("demo_stock = 7\nrate_limit_ip = 5\n");
        let exe = std::env::current_exe().expect("test binary");
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "config::tests::loaded_in_a_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_CONFIG, file.path())
            .env("SECKILL_DEMO_STOCK", "9")
            .env_remove("SECKILL_RATE_LIMIT_IP")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("1 passed"), "the child ran no test: {stdout}");
    }

    #[test]
    #[ignore = "run by the_environment_beats_the_file, in a child process with SECKILL_DEMO_STOCK=9"]
    fn loaded_in_a_child() {
        let Some(file) = std::env::var_os(CHILD_CONFIG) else {
            return;
        };
        let config = serve_with(Path::new(&file), &[]);
        assert_eq!(config.demo_stock, 9, "the variable beats the file's 7");
        assert_eq!(config.rate_limit_ip, 5, "the file beats the default");
    }

    #[test]
    fn secrets_are_refused_on_the_command_line() {
        let matches = Cli::command()
            .try_get_matches_from(["seckill", "serve", "--admin-token", "visible-in-ps"])
            .expect("parses");
        let (_, serve) = matches.subcommand().expect("serve");
        assert!(matches!(
            refuse_secrets_on_command_line(serve),
            Err(ConfigError::SecretOnCommandLine(flag)) if flag == "admin-token"
        ));
        let matches = Cli::command()
            .try_get_matches_from(["seckill", "serve"])
            .expect("parses");
        assert!(refuse_secrets_on_command_line(matches.subcommand().expect("serve").1).is_ok());
        // Through `load`, the same: a secret from the file is fine, one on the command line is not.
        let file = write("admin_token = \"from-the-file\"\n");
        let path = file.path().as_os_str();
        let args = |extra: &[&str]| -> Vec<OsString> {
            let mut args: Vec<OsString> = vec!["seckill".into(), "serve".into(), "--config".into(), path.into()];
            args.extend(extra.iter().map(OsString::from));
            args
        };
        assert!(load::<Cli>(args(&[])).is_ok());
        assert!(matches!(
            load::<Cli>(args(&["--jwt-secret=visible"])),
            Err(ConfigError::SecretOnCommandLine(flag)) if flag == "jwt-secret"
        ));
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("mysql://root:s3cret@db:3306/x"),
            "mysql://root:***@db:3306/x"
        );
        assert_eq!(redact_url("redis://:pw@r:6379/0"), "redis://:***@r:6379/0");
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("mysql://root@db/x"), "mysql://root@db/x");
    }

    #[test]
    fn urls_with_a_password_are_refused_on_the_command_line_only() {
        assert!(url_has_password("mysql://u:pw@db/x") && url_has_password("redis://:pw@r:6379/0"));
        for plain in [
            "mysql://root@db/x",
            "redis://127.0.0.1:6379/0",
            "redis://u:@r/0",
            "no-scheme",
        ] {
            assert!(!url_has_password(plain), "{plain}");
        }
        for (subcommand, flag) in [
            ("serve", "--redis-url"),
            ("serve", "--database-url"),
            ("consumer", "--database-url"),
        ] {
            let matches = Cli::command()
                .try_get_matches_from(["seckill", subcommand, flag, "mysql://u:visible-in-ps@db/x"])
                .expect("parses");
            let refused = refuse_secrets_on_command_line(matches.subcommand().expect("subcommand").1);
            let Err(e @ ConfigError::PasswordOnCommandLine(..)) = refused else {
                panic!("{subcommand} {flag}: {refused:?}");
            };
            let message = e.to_string();
            assert!(
                message.contains(&flag[2..]) && message.contains("SECKILL_"),
                "{message}"
            );
            assert!(!message.contains("visible-in-ps"), "{message}");
        }
        // Without a password, or from the file, a URL is fine.
        let matches = Cli::command()
            .try_get_matches_from(["seckill", "serve", "--redis-url", "redis://r:6379/0"])
            .expect("parses");
        assert!(refuse_secrets_on_command_line(matches.subcommand().expect("serve").1).is_ok());
        let file = write("database_url = \"mysql://u:from-the-file@db/x\"\n");
        let args: Vec<OsString> = vec!["seckill".into(), "serve".into(), "--config".into(), file.path().into()];
        let Ok(Cli {
            command: Command::Serve(config),
        }) = load::<Cli>(args)
        else {
            panic!("a password from the file is accepted");
        };
        assert_eq!(config.distributed.database_url, "mysql://u:from-the-file@db/x");
    }

    #[test]
    fn empty_secrets_count_as_unset() {
        let Command::Serve(mut config) = Cli::parse_from(["seckill", "serve"]).command else {
            panic!("serve");
        };
        config.admin_token = Some("".parse().expect("infallible"));
        config.jwt_secret = Some("k".parse().expect("infallible"));
        config.drop_empty_secrets();
        assert!(config.admin_token.is_none());
        assert!(config.jwt_secret.is_some());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let secret: Secret = "hunter2".parse().expect("infallible");
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }
}
