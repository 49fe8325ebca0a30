//! The embedded order store: SQLite in WAL mode with `synchronous=FULL`, written by one thread
//! that commits orders in groups.
//!
//! Group commit: buyers enqueue their order and wait; the writer takes everything queued (up to
//! `MAX_BATCH`), inserts it in one transaction and pays one fsync for the whole group, then answers
//! each buyer. Under a stampede batches grow by themselves, so durability costs one fsync per
//! batch, not per order; a lone buyer is committed at once, with no waiting for company.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{OrderStore, StoreAudit};
use crate::backend::{BackendError, Check, Role};
use crate::domain::{now_millis, GateState, Holding, Order, OrderState, Payment, Sale, SaleId, SaleSpec, UserId};
use crate::metrics::METRICS;
use crate::payment::LatePayment;
use crate::throttle::Throttle;

/// The most orders one transaction commits.
const MAX_BATCH: usize = 4096;
/// Orders that may wait for the writer; past this the engine sheds load with 503.
const QUEUE_CAPACITY: usize = 65_536;
/// How long a buyer waits for a place in a full queue before being told to retry.
const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(500);
/// Reader connections: WAL lets them read side by side, so one long count does not hold up
/// every other read.
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sales (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL,
    stock          INTEGER NOT NULL CHECK (stock >= 0),
    per_user_limit INTEGER NOT NULL CHECK (per_user_limit >= 1),
    starts_at      INTEGER,
    ends_at        INTEGER,
    demo           INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id   TEXT    PRIMARY KEY,
    sale_id    INTEGER NOT NULL REFERENCES sales(id),
    user_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    created_at INTEGER NOT NULL,
    UNIQUE (sale_id, user_id, seq)
);
-- One row, rewritten by the readiness probe of a store whose writes failed.
CREATE TABLE IF NOT EXISTS write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS late_payments (
    payment_id  TEXT    PRIMARY KEY,
    order_id    TEXT    NOT NULL,
    sale_id     INTEGER NOT NULL,
    amount      TEXT,
    received_at INTEGER NOT NULL
);
";

/// Columns added after the first release, added to an existing database at open.
const ADDED_COLUMNS: [(&str, &str, &str); 9] = [
    ("sales", "payment_window_secs", "INTEGER NOT NULL DEFAULT 0"),
    // NULL: the sale has no waiting room.
    ("sales", "queue_admit_per_sec", "INTEGER"),
    ("sales", "queue_mode", "TEXT"),
    ("sales", "queue_ticket_ttl_secs", "INTEGER"),
    ("sales", "stock_shards", "INTEGER NOT NULL DEFAULT 1"),
    ("orders", "state", "TEXT NOT NULL DEFAULT 'confirmed'"),
    ("orders", "pay_by", "INTEGER"),
    ("orders", "paid_at", "INTEGER"),
    ("orders", "payment_id", "TEXT"),
];

/// After the columns exist: what the gate's rebuild and the auditor read by state.
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS orders_by_state ON orders (sale_id, state);";

const INSERT_ORDER: &str = "INSERT INTO orders (order_id, sale_id, user_id, seq, created_at, state, pay_by)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const UPDATE_STATE: &str = "UPDATE orders SET state = ?2, paid_at = ?3, payment_id = ?4 WHERE order_id = ?1";
const INSERT_LATE_PAYMENT: &str =
    "INSERT OR IGNORE INTO late_payments (payment_id, order_id, sale_id, amount, received_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_SALE: &str =
    "INSERT INTO sales (name, stock, per_user_limit, starts_at, ends_at, demo, created_at, payment_window_secs,
                        queue_admit_per_sec, queue_mode, queue_ticket_ttl_secs, stock_shards)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
const SELECT_SALE: &str =
    "SELECT id, name, stock, per_user_limit, starts_at, ends_at, demo, created_at, payment_window_secs,
            queue_admit_per_sec, queue_mode, queue_ticket_ttl_secs, stock_shards FROM sales";
const SELECT_ORDER: &str =
    "SELECT order_id, sale_id, user_id, seq, created_at, state, pay_by, paid_at, payment_id FROM orders";
/// The states whose orders hold a unit, as SQL.
const HELD: &str = "('confirmed', 'awaiting_payment', 'paid')";

/// Adds `column` to `table` unless an earlier start did: SQLite has no `ADD COLUMN IF NOT EXISTS`.
fn add_column_if_missing(conn: &Connection, table: &str, column: &str, declaration: &str) -> rusqlite::Result<()> {
    let exists = conn
        .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?
        .exists([column])?;
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"))?;
    }
    Ok(())
}

/// What the writer answers: shared, because one failed commit fails every order of its batch.
type Written<T> = Result<T, Arc<rusqlite::Error>>;

enum Command {
    Record {
        order: Order,
        done: oneshot::Sender<Written<()>>,
    },
    CreateSale {
        spec: SaleSpec,
        done: oneshot::Sender<Written<Sale>>,
    },
    /// Payment-lifecycle transitions the gate decided (a batch of expiries is one command).
    Transitions {
        orders: Vec<Order>,
        done: oneshot::Sender<Written<()>>,
    },
    LatePayment {
        late: LatePayment,
        done: oneshot::Sender<Written<()>>,
    },
    /// A tiny write: can the store write again after writes failed (`/readyz`)?
    Probe { done: oneshot::Sender<Written<()>> },
    /// Stop accepting; commit what is already queued; exit.
    Close,
}

enum Outcome {
    Written(Written<()>),
    Created(Written<Sale>),
    Closed,
}

impl Command {
    fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (
                Command::Record { done, .. }
                | Command::Transitions { done, .. }
                | Command::LatePayment { done, .. }
                | Command::Probe { done },
                Outcome::Written(r),
            ) => drop(done.send(r)),
            (Command::CreateSale { done, .. }, Outcome::Created(r)) => drop(done.send(r)),
            (command, _) => command.fail(&Arc::new(rusqlite::Error::InvalidQuery)),
        }
    }

    fn fail(self, why: &Arc<rusqlite::Error>) {
        match self {
            Command::Record { done, .. }
            | Command::Transitions { done, .. }
            | Command::LatePayment { done, .. }
            | Command::Probe { done } => drop(done.send(Err(Arc::clone(why)))),
            Command::CreateSale { done, .. } => drop(done.send(Err(Arc::clone(why)))),
            Command::Close => {}
        }
    }
}

/// SQLite-backed [`OrderStore`]; the file is `<data-dir>/seckill.sqlite3`.
pub struct SqliteStore {
    sender: mpsc::Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
    /// Readiness has a connection of its own: `/readyz` never queues behind the API's reads.
    probe: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// The last group commit failed (a full disk, say): `/readyz` probes a write until one
    /// succeeds.
    write_failing: Arc<AtomicBool>,
}

/// The reader connections; a permit guarantees one of them is free.
struct Readers {
    connections: Vec<Mutex<Connection>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    /// Runs `query` on a free reader; the caller holds one of the pool's permits.
    fn with_free<T>(&self, query: impl FnOnce(&Connection) -> T) -> T {
        for conn in &self.connections {
            // A panic cannot leave a connection half-changed: poisoning is ignored.
            match conn.try_lock() {
                Ok(conn) => return query(&conn),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => return query(&poisoned.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        // Unreachable while permits and connections are as many, but waiting is correct anyway.
        let conn = self.connections[0]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        query(&conn)
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL + FULL: a commit returns after the WAL is fsynced, so a committed order survives
    // a crash of the process and of the machine.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// What an SQLite error means for the engine: a full disk or an unusable file is an outage
/// that ends when the operator acts (503); anything else is a fault of ours (500).
fn classify(e: impl Into<Arc<rusqlite::Error>>) -> BackendError {
    use rusqlite::ErrorCode::*;
    let e = e.into();
    match e.sqlite_error_code() {
        Some(DiskFull) => BackendError::full(Role::Store, e),
        Some(SystemIoFailure | ReadOnly | CannotOpen | DatabaseBusy | DatabaseLocked | NotADatabase) => {
            BackendError::unavailable(Role::Store, e)
        }
        _ => BackendError::fault(Role::Store, e),
    }
}

fn writer_stopped() -> BackendError {
    BackendError::unavailable(Role::Store, "the group-commit writer has stopped")
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, BackendError> {
        Self::open_with_commit_delay(data_dir, Duration::ZERO)
    }

    /// Like [`SqliteStore::open`], holding every group commit for `delay` (fault injection).
    pub fn open_with_commit_delay(data_dir: &Path, delay: Duration) -> Result<Self, BackendError> {
        let cannot = |what: &str, e: &dyn std::fmt::Display| {
            BackendError::unavailable(Role::Store, format!("{what} {}: {e}", data_dir.display()))
        };
        std::fs::create_dir_all(data_dir).map_err(|e| cannot("cannot create the data dir", &e))?;
        let path = data_dir.join("seckill.sqlite3");
        let opened = |conn: rusqlite::Result<Connection>| conn.map_err(|e| cannot("cannot open the store in", &e));
        let writer_conn = opened(open(&path))?;
        let schema = || -> rusqlite::Result<()> {
            writer_conn.execute_batch(SCHEMA)?;
            for (table, column, declaration) in ADDED_COLUMNS {
                add_column_if_missing(&writer_conn, table, column, declaration)?;
            }
            writer_conn.execute_batch(INDEXES)
        };
        schema().map_err(|e| cannot("cannot create the schema in", &e))?;
        let connections = (0..READERS)
            .map(|_| opened(open(&path)).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let probe = opened(open(&path))?;
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let write_failing = Arc::new(AtomicBool::new(false));
        let failing = Arc::clone(&write_failing);
        let writer = std::thread::Builder::new()
            .name("sqlite-group-commit".into())
            .spawn(move || run_writer(writer_conn, receiver, delay, &failing))
            .map_err(|e| cannot("cannot start the writer thread for", &e))?;
        Ok(SqliteStore {
            sender,
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Readers {
                connections,
                permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            }),
            probe: Arc::new(Mutex::new(probe)),
            path,
            write_failing,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `command` (built around its answer channel) and waits for the writer's answer.
    async fn write<T>(&self, command: impl FnOnce(oneshot::Sender<Written<T>>) -> Command) -> Result<T, BackendError> {
        let (done, answer) = oneshot::channel();
        self.enqueue(command(done)).await?;
        match answer.await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(writer_stopped()),
        }
    }

    async fn enqueue(&self, command: Command) -> Result<(), BackendError> {
        match tokio::time::timeout(ENQUEUE_TIMEOUT, self.sender.send(command)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(writer_stopped()),
            // `send` is cancel-safe: on timeout nothing was queued, so the caller may release.
            Err(_) => Err(BackendError::Overloaded { role: Role::Store }),
        }
    }

    /// Runs a read on a free reader connection off the async threads. Readers beyond the pool
    /// wait here, on the async side, instead of each holding a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let permit = Arc::clone(&self.readers.permits)
            .acquire_owned()
            .await
            .map_err(|e| BackendError::fault(Role::Store, e))?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readers.with_free(|conn| query(conn).map_err(classify))
        })
        .await
        .map_err(|e| BackendError::fault(Role::Store, e))?
    }
}

fn sale_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Sale> {
    Ok(Sale {
        id: SaleId(row.get(0)?),
        spec: SaleSpec {
            name: row.get(1)?,
            stock: row.get::<_, i64>(2)? as u64,
            per_user_limit: row.get::<_, i64>(3)? as u32,
            starts_at: row.get(4)?,
            ends_at: row.get(5)?,
            demo: row.get(6)?,
            payment_window_secs: row.get(8)?,
            waiting_room: crate::domain::waiting_room_from(row.get(9)?, row.get(10)?, row.get(11)?).map_err(
                |what| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, what.into()),
            )?,
            stock_shards: row.get(12)?,
        },
        created_at: row.get(7)?,
    })
}

/// An order from a row of [`SELECT_ORDER`]. Stored values were validated on the way in; one
/// that no longer parses is a fault of ours, reported as a conversion failure.
fn order_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    let bad = |column: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.to_owned().into())
    };
    let id: String = row.get(0)?;
    let state: String = row.get(5)?;
    let paid_at: Option<i64> = row.get(7)?;
    let payment_id: Option<String> = row.get(8)?;
    Ok(Order {
        order_id: uuid::Uuid::parse_str(&id).map_err(|_| bad(0, "not a UUID"))?,
        sale_id: SaleId(row.get(1)?),
        user_id: UserId::trusted(row.get(2)?),
        seq: row.get(3)?,
        created_at: row.get(4)?,
        state: OrderState::parse(&state).ok_or_else(|| bad(5, "not an order state"))?,
        pay_by: row.get(6)?,
        payment: payment_id.map(|id| Payment {
            id,
            at: paid_at.unwrap_or_default(),
        }),
    })
}

impl OrderStore for SqliteStore {
    async fn record(&self, order: &Order) -> Result<(), BackendError> {
        let order = order.clone();
        self.write(|done| Command::Record { order, done }).await
    }

    async fn create_sale(&self, spec: SaleSpec) -> Result<Sale, BackendError> {
        self.write(|done| Command::CreateSale { spec, done }).await
    }

    async fn record_transitions(&self, orders: &[Order]) -> Result<(), BackendError> {
        let orders = orders.to_vec();
        self.write(|done| Command::Transitions { orders, done }).await
    }

    async fn record_late_payment(&self, late: &LatePayment) -> Result<(), BackendError> {
        let late = late.clone();
        self.write(|done| Command::LatePayment { late, done }).await
    }

    async fn order(&self, order_id: uuid::Uuid) -> Result<Option<Order>, BackendError> {
        let id = order_id.hyphenated().to_string();
        self.read(move |c| {
            c.prepare_cached(&format!("{SELECT_ORDER} WHERE order_id = ?1"))?
                .query_row([id], order_from_row)
                .optional()
        })
        .await
    }

    async fn sales_after(&self, after: SaleId) -> Result<Vec<Sale>, BackendError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT_SALE} WHERE id > ?1 ORDER BY id"))?;
            let rows = stmt.query_map([after.0], sale_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn orders_of(&self, sale: SaleId, user: &UserId) -> Result<Vec<Order>, BackendError> {
        let user = user.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_ORDER} WHERE sale_id = ?1 AND user_id = ?2 ORDER BY seq"
            ))?;
            let rows = stmt.query_map(params![sale.0, user.as_str()], order_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn gate_state(&self, sale: SaleId) -> Result<GateState, BackendError> {
        self.read(move |c| {
            // Units held count against the limit; the last seq is over every order, returned
            // units included, so no seq is handed out twice.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT user_id, SUM(state IN {HELD}), MAX(seq) FROM orders WHERE sale_id = ?1 GROUP BY user_id"
            ))?;
            let holders = stmt
                .query_map([sale.0], |r| {
                    Ok(Holding {
                        // Stored ids were validated on the way in; the store is trusted.
                        user: UserId::trusted(r.get(0)?),
                        held: r.get(1)?,
                        last_seq: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_ORDER} WHERE sale_id = ?1 AND state = 'awaiting_payment'"
            ))?;
            let open_holds = stmt
                .query_map([sale.0], order_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let paid: i64 = c.query_row(
                "SELECT COUNT(*) FROM orders WHERE sale_id = ?1 AND state = 'paid'",
                [sale.0],
                |r| r.get(0),
            )?;
            Ok(GateState {
                holders,
                open_holds,
                paid: paid as u64,
            })
        })
        .await
    }

    /// Conflicts are refused at `record` (never acknowledged), so none is ever kept.
    async fn caught_up(&self, _: crate::domain::Millis) -> Result<bool, BackendError> {
        Ok(true)
    }

    async fn audit(&self, sale: SaleId, per_user_limit: u32) -> Result<StoreAudit, BackendError> {
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT COALESCE(SUM(state IN {HELD}), 0), COUNT(*) - COUNT(DISTINCT user_id || '/' || seq),
                            (SELECT COUNT(*) FROM (SELECT user_id FROM orders WHERE sale_id = ?1 AND state IN {HELD}
                                                   GROUP BY user_id HAVING COUNT(*) > ?2)),
                            COALESCE(SUM(state = 'awaiting_payment'), 0), COALESCE(SUM(state = 'paid'), 0),
                            COALESCE(SUM(state = 'expired'), 0), COALESCE(SUM(state = 'cancelled'), 0),
                            (SELECT COUNT(*) FROM late_payments WHERE sale_id = ?1)
                     FROM orders WHERE sale_id = ?1"
                ),
                params![sale.0, per_user_limit],
                |r| {
                    let n = |i| r.get::<_, i64>(i).map(|n| n as u64);
                    Ok(StoreAudit {
                        stored: n(0)?,
                        duplicates: n(1)?,
                        conflicts: 0,
                        over_limit: n(2)?,
                        awaiting_payment: n(3)?,
                        paid: n(4)?,
                        expired: n(5)?,
                        cancelled: n(6)?,
                        late_payments: n(7)?,
                    })
                },
            )
        })
        .await
    }

    async fn ready(&self) -> Vec<Check> {
        let result = if self.sender.is_closed() {
            Err(writer_stopped())
        } else if self.write_failing.load(Ordering::Relaxed) {
            self.write(|done| Command::Probe { done }).await
        } else {
            let probe = Arc::clone(&self.probe);
            tokio::task::spawn_blocking(move || {
                let conn = probe.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                conn.query_row("SELECT 1", [], |_| Ok(())).map_err(classify)
            })
            .await
            .unwrap_or_else(|e| Err(BackendError::fault(Role::Store, e)))
        };
        vec![Check::required("sqlite", result)]
    }

    async fn close(&self) {
        if self.sender.send(Command::Close).await.is_err() {
            return; // already closed
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn run_writer(mut conn: Connection, mut commands: mpsc::Receiver<Command>, delay: Duration, failing: &AtomicBool) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // After `close()`, `blocking_recv` still yields what was buffered, then `None`.
    while let Some(first) = commands.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        METRICS.set_store_queue_depth(commands.len());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if batch.iter().any(|c| matches!(c, Command::Close)) {
            commands.close();
        }
        let committed = commit_batch(&mut conn, &mut batch);
        failing.store(!committed, Ordering::Relaxed);
    }
    tracing::info!("order store closed; every queued order is committed");
}

/// Why one order's row was refused. A `(sale, user, seq)` another order holds is a conflict: the
/// gate never hands out a seq twice, so it is logged loudly and counted; the buyer is not told
/// "success" for it and its unit goes back.
fn refused(order: &Order, e: rusqlite::Error) -> Arc<rusqlite::Error> {
    if e.to_string().contains("orders.seq") {
        tracing::error!(order = %order.order_id, sale = %order.sale_id, user = %order.user_id, seq = order.seq,
            "order conflict: another order holds this (sale, user, seq); refused");
        METRICS.observe_order_conflicts(1);
    }
    Arc::new(e)
}

/// Inserts the batch in one transaction. A row that fails (say a duplicate) fails alone;
/// a failed commit fails every row, and none of them is stored.
/// Commits `batch` in one transaction and answers each command; `false` if the commit failed.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<Command>) -> bool {
    let mut outcomes = Vec::with_capacity(batch.len());
    let committed = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        {
            let mut insert_order = tx.prepare_cached(INSERT_ORDER)?;
            let mut insert_sale = tx.prepare_cached(INSERT_SALE)?;
            let mut update_state = tx.prepare_cached(UPDATE_STATE)?;
            let mut insert_late = tx.prepare_cached(INSERT_LATE_PAYMENT)?;
            for command in batch.iter() {
                outcomes.push(match command {
                    Command::Record { order, .. } => Outcome::Written(
                        insert_order
                            .execute(params![
                                order.order_id.hyphenated().to_string(),
                                order.sale_id.0,
                                order.user_id.as_str(),
                                order.seq,
                                order.created_at,
                                order.state.as_str(),
                                order.pay_by,
                            ])
                            .map(|_| ())
                            .map_err(|e| refused(order, e)),
                    ),
                    Command::Transitions { orders, .. } => Outcome::Written(
                        orders
                            .iter()
                            .try_for_each(|o| {
                                let payment = o.payment.as_ref();
                                update_state
                                    .execute(params![
                                        o.order_id.hyphenated().to_string(),
                                        o.state.as_str(),
                                        payment.map(|p| p.at),
                                        payment.map(|p| p.id.as_str()),
                                    ])
                                    .map(|_| ())
                            })
                            .map_err(Arc::new),
                    ),
                    Command::LatePayment { late, .. } => Outcome::Written(
                        insert_late
                            .execute(params![
                                late.payment_id,
                                late.order_id.hyphenated().to_string(),
                                late.sale_id.0,
                                late.amount,
                                late.received_at,
                            ])
                            .map(|_| ())
                            .map_err(Arc::new),
                    ),
                    Command::CreateSale { spec, .. } => {
                        let created_at = now_millis();
                        let inserted = insert_sale.execute(params![
                            spec.name,
                            spec.stock as i64,
                            spec.per_user_limit,
                            spec.starts_at,
                            spec.ends_at,
                            spec.demo,
                            created_at,
                            spec.payment_window_secs,
                            spec.waiting_room.map(|w| w.admit_per_sec),
                            spec.waiting_room.map(|w| w.mode.as_str()),
                            spec.waiting_room.map(|w| w.ticket_ttl_secs),
                            spec.stock_shards,
                        ]);
                        Outcome::Created(inserted.map_err(Arc::new).map(|_| Sale {
                            id: SaleId(tx.last_insert_rowid()),
                            spec: spec.clone(),
                            created_at,
                        }))
                    }
                    Command::Probe { .. } => Outcome::Written(
                        tx.execute(
                            "INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?1)",
                            [now_millis()],
                        )
                        .map(|_| ())
                        .map_err(Arc::new),
                    ),
                    Command::Close => Outcome::Closed,
                });
            }
        }
        tx.commit()
    })();
    METRICS.observe_commit(batch.len());
    match committed {
        Ok(()) => {
            batch.drain(..).zip(outcomes).for_each(|(c, o)| c.answer(o));
            true
        }
        Err(e) => {
            // A full disk fails every batch until the operator acts: one line a second.
            static FAILED: Throttle = Throttle::new(1_000);
            if let Some(suppressed) = FAILED.allow() {
                tracing::error!(error = %e, batch = batch.len(), suppressed, "group commit failed; no order of the batch is stored");
            }
            let why = Arc::new(e);
            batch.drain(..).for_each(|c| c.fail(&why));
            false
        }
    }
}
