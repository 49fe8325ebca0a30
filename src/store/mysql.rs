//! MySQL (or MariaDB) order store of the distributed mode: the sale catalogue, and the orders the
//! consumer writes from the log with multi-row `INSERT IGNORE` (the unique key makes a
//! redelivered order a no-op, so at-least-once delivery stores each order exactly once).

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, QueryBuilder, Row};

use super::StoreAudit;
use crate::backend::{BackendError, Cause, Role};
use crate::domain::{now_millis, GateState, Holding, Order, OrderState, Payment, Sale, SaleId, SaleSpec, UserId};
use crate::payment::LatePayment;

/// Rows per `INSERT` statement: 9 placeholders each, 63,000 in all, just below the 65,535 a
/// prepared statement takes. Fewer, larger statements cost MySQL fewer parses and round trips.
const ROWS_PER_INSERT: usize = 7_000;

/// The states whose orders hold a unit, as SQL.
const HELD: &str = "('confirmed', 'awaiting_payment', 'paid')";

/// `INSERT IGNORE INTO <table>` of `orders` (both order tables have the same columns).
fn insert_rows<'a>(table: &str, orders: &'a [Order]) -> QueryBuilder<'a, sqlx::MySql> {
    let mut insert = QueryBuilder::new(format!(
        "INSERT IGNORE INTO {table} (order_id, sale_id, user_id, seq, created_at, state, pay_by, paid_at, payment_id) "
    ));
    insert.push_values(orders, |mut row, o| {
        row.push_bind(o.order_id.hyphenated().to_string())
            .push_bind(o.sale_id.0)
            .push_bind(o.user_id.as_str())
            .push_bind(o.seq)
            .push_bind(o.created_at)
            .push_bind(o.state.as_str())
            .push_bind(o.pay_by)
            .push_bind(o.payment.as_ref().map(|p| p.at))
            .push_bind(o.payment.as_ref().map(|p| p.id.as_str()));
    });
    insert
}

/// Closes the holds of `orders` that are still open: a hold only ever closes, once, so the
/// log's events apply in any order and a replay changes nothing.
async fn close_holds(tx: &mut sqlx::Transaction<'_, sqlx::MySql>, orders: &[Order]) -> Result<(), BackendError> {
    for state in [OrderState::Expired, OrderState::Cancelled] {
        let ids: Vec<String> = orders
            .iter()
            .filter(|o| o.state == state)
            .map(|o| o.order_id.hyphenated().to_string())
            .collect();
        for chunk in ids.chunks(ROWS_PER_INSERT) {
            let mut update = QueryBuilder::new("UPDATE orders SET state = ");
            update
                .push_bind(state.as_str())
                .push(" WHERE state = 'awaiting_payment' AND order_id IN ");
            update.push_tuples(chunk, |mut row, id| {
                row.push_bind(id);
            });
            update.build().execute(&mut **tx).await.map_err(unavailable)?;
        }
    }
    for o in orders.iter().filter(|o| o.state == OrderState::Paid) {
        let Some(payment) = &o.payment else { continue };
        sqlx::query(
            "UPDATE orders SET state = 'paid', paid_at = ?, payment_id = ?
             WHERE order_id = ? AND state = 'awaiting_payment'",
        )
        .bind(payment.at)
        .bind(&payment.id)
        .bind(o.order_id.hyphenated().to_string())
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

const SELECT_ORDER: &str =
    "SELECT order_id, sale_id, user_id, seq, created_at, state, pay_by, paid_at, payment_id FROM orders";

/// A column whose value the row holds but this code cannot read.
fn undecodable(column: &str, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: cause.into(),
    }
}

/// An id column (order, buyer, payment): ASCII compared byte for byte (`ascii_bin`), which MySQL
/// flags as binary, so sqlx reads it as bytes, not as text.
fn id_column(r: &sqlx::mysql::MySqlRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    let Some(bytes) = r.try_get::<Option<Vec<u8>>, _>(column)? else {
        return Ok(None);
    };
    String::from_utf8(bytes).map(Some).map_err(|e| undecodable(column, e))
}

/// A `NOT NULL` id column (see [`id_column`]).
fn required_id(r: &sqlx::mysql::MySqlRow, column: &str) -> Result<String, sqlx::Error> {
    id_column(r, column)?.ok_or_else(|| undecodable(column, "NULL where an id was expected"))
}

fn order_from_row(r: &sqlx::mysql::MySqlRow) -> Result<Order, sqlx::Error> {
    let order_id = required_id(r, "order_id")?;
    let state: String = r.try_get("state")?;
    let payment_id = id_column(r, "payment_id")?;
    let paid_at: Option<i64> = r.try_get("paid_at")?;
    Ok(Order {
        order_id: uuid::Uuid::parse_str(&order_id).map_err(|e| undecodable("order_id", e))?,
        sale_id: SaleId(r.try_get("sale_id")?),
        user_id: UserId::trusted(required_id(r, "user_id")?),
        seq: r.try_get::<i32, _>("seq")? as u32,
        created_at: r.try_get("created_at")?,
        state: OrderState::parse(&state).ok_or_else(|| undecodable("state", format!("not an order state: {state}")))?,
        pay_by: r.try_get("pay_by")?,
        payment: payment_id.map(|id| Payment {
            id,
            at: paid_at.unwrap_or_default(),
        }),
    })
}

/// Orders of `chunk` that `INSERT IGNORE` skipped although their id is not stored: another order
/// holds their `(sale, user, seq)`. They go to `order_conflicts`, loudly.
async fn keep_conflicts(tx: &mut sqlx::Transaction<'_, sqlx::MySql>, chunk: &[Order]) -> Result<(), BackendError> {
    let mut select = QueryBuilder::new("SELECT order_id FROM orders WHERE order_id IN ");
    select.push_tuples(chunk, |mut row, o| {
        row.push_bind(o.order_id.hyphenated().to_string());
    });
    // Bytes: the id column is `ascii_bin` (see `id_column`).
    let stored: std::collections::HashSet<Vec<u8>> = select
        .build_query_scalar::<Vec<u8>>()
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?
        .into_iter()
        .collect();
    let conflicts: Vec<Order> = chunk
        .iter()
        .filter(|o| !stored.contains(o.order_id.hyphenated().to_string().as_bytes()))
        .cloned()
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    for o in &conflicts {
        tracing::error!(order = %o.order_id, sale = %o.sale_id, user = %o.user_id, seq = o.seq,
            "order conflict: another order holds this (sale, user, seq); kept in order_conflicts");
    }
    crate::metrics::METRICS.observe_order_conflicts(conflicts.len() as u64);
    insert_rows("order_conflicts", &conflicts)
        .build()
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// The tables and columns the engine reads and writes.
const SCHEMA: [(&str, &str); 4] = [
    (
        "sales",
        "id, payment_window_secs, queue_admit_per_sec, queue_mode, queue_ticket_ttl_secs, stock_shards",
    ),
    (
        "orders",
        "order_id, sale_id, user_id, seq, created_at, state, pay_by, paid_at, payment_id",
    ),
    ("order_conflicts", "order_id, state"),
    ("late_payments", "payment_id"),
];

#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

fn unavailable(e: impl Into<Cause>) -> BackendError {
    BackendError::unavailable(Role::Store, e)
}

const SELECT_SALE: &str =
    "SELECT id, name, stock, per_user_limit, starts_at, ends_at, demo, payment_window_secs, created_at,
            queue_admit_per_sec, queue_mode, queue_ticket_ttl_secs, stock_shards FROM sales";

fn sale_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Sale, sqlx::Error> {
    Ok(Sale {
        id: SaleId(row.try_get("id")?),
        spec: SaleSpec {
            name: row.try_get("name")?,
            stock: row.try_get::<i64, _>("stock")? as u64,
            per_user_limit: row.try_get::<i32, _>("per_user_limit")? as u32,
            starts_at: row.try_get("starts_at")?,
            ends_at: row.try_get("ends_at")?,
            demo: row.try_get::<Option<i8>, _>("demo")?.is_some(),
            payment_window_secs: row.try_get::<i32, _>("payment_window_secs")?.max(0) as u32,
            waiting_room: crate::domain::waiting_room_from(
                row.try_get::<Option<i64>, _>("queue_admit_per_sec")?,
                row.try_get("queue_mode")?,
                row.try_get::<Option<i64>, _>("queue_ticket_ttl_secs")?,
            )
            .map_err(|what| sqlx::Error::Decode(what.into()))?,
            stock_shards: row.try_get::<i16, _>("stock_shards")?.max(1) as u16,
        },
        created_at: row.try_get("created_at")?,
    })
}

impl MySqlStore {
    /// Connects (creating the database if it does not exist) and applies the migrations.
    pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<Self, BackendError> {
        let options = MySqlConnectOptions::from_str(url).map_err(unavailable)?;
        if let Some(database) = options.get_database() {
            let database = database.to_owned();
            let mut admin = sqlx::mysql::MySqlConnection::connect_with(&options.clone().database("information_schema"))
                .await
                .map_err(unavailable)?;
            sqlx::query(&format!(
                "CREATE DATABASE IF NOT EXISTS `{}`",
                database.replace('`', "``")
            ))
            .execute(&mut admin)
            .await
            .map_err(unavailable)?;
            let _ = admin.close().await;
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/mysql")
            .run(&pool)
            .await
            .map_err(unavailable)?;
        let store = MySqlStore { pool };
        store.ready().await?;
        Ok(store)
    }

    /// Stores a batch of orders from the log. A copy of a stored order (same `order_id`) is
    /// ignored; an order whose `(sale, user, seq)` another order holds is a conflict: it is kept
    /// in `order_conflicts` and logged, never dropped. Returns rows newly stored in `orders`.
    pub async fn insert_orders(&self, orders: &[Order]) -> Result<u64, BackendError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let mut inserted = 0;
        for chunk in orders.chunks(ROWS_PER_INSERT) {
            let rows = insert_rows("orders", chunk)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
            inserted += rows;
            // Every row new: the common case costs nothing more. Otherwise tell copies (their
            // order id is stored) from conflicts (it is not).
            if rows < chunk.len() as u64 {
                keep_conflicts(&mut tx, chunk).await?;
            }
        }
        if orders
            .iter()
            .any(|o| o.payment.is_some() || matches!(o.state, OrderState::Expired | OrderState::Cancelled))
        {
            close_holds(&mut tx, orders).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(inserted)
    }

    pub async fn create_sale(&self, spec: SaleSpec) -> Result<Sale, BackendError> {
        let created_at = now_millis();
        let result = sqlx::query(
            "INSERT IGNORE INTO sales (name, stock, per_user_limit, starts_at, ends_at, demo, payment_window_secs, created_at,
                                       queue_admit_per_sec, queue_mode, queue_ticket_ttl_secs, stock_shards)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&spec.name)
        .bind(spec.stock as i64)
        .bind(spec.per_user_limit)
        .bind(spec.starts_at)
        .bind(spec.ends_at)
        .bind(spec.demo.then_some(1i8))
        .bind(spec.payment_window_secs)
        .bind(created_at)
        .bind(spec.waiting_room.map(|w| w.admit_per_sec))
        .bind(spec.waiting_room.map(|w| w.mode.as_str()))
        .bind(spec.waiting_room.map(|w| w.ticket_ttl_secs))
        .bind(spec.stock_shards)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if result.rows_affected() == 0 && spec.demo {
            // Another instance created the demo sale first: use theirs.
            return self
                .sales_after(SaleId(0))
                .await?
                .into_iter()
                .find(|s| s.spec.demo)
                .ok_or_else(|| {
                    BackendError::fault(
                        Role::Store,
                        "the demo sale another instance created is not in the catalogue",
                    )
                });
        }
        Ok(Sale {
            id: SaleId(result.last_insert_id() as i64),
            spec,
            created_at,
        })
    }

    pub async fn sales_after(&self, after: SaleId) -> Result<Vec<Sale>, BackendError> {
        let rows = sqlx::query(&format!("{SELECT_SALE} WHERE id > ? ORDER BY id"))
            .bind(after.0)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(sale_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    pub async fn orders_of(&self, sale: SaleId, user: &UserId) -> Result<Vec<Order>, BackendError> {
        let rows = sqlx::query(&format!(
            "{SELECT_ORDER} WHERE sale_id = ? AND user_id = ? ORDER BY seq"
        ))
        .bind(sale.0)
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(order_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    pub async fn order(&self, order_id: uuid::Uuid) -> Result<Option<Order>, BackendError> {
        let row = sqlx::query(&format!("{SELECT_ORDER} WHERE order_id = ?"))
            .bind(order_id.hyphenated().to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(order_from_row).transpose().map_err(unavailable)
    }

    /// Conflicting orders count too: each took a unit from the gate. An expired or cancelled
    /// order holds no unit but keeps its `seq` taken.
    pub async fn gate_state(&self, sale: SaleId) -> Result<GateState, BackendError> {
        let rows = sqlx::query(&format!(
            "SELECT user_id, CAST(SUM(state IN {HELD}) AS SIGNED) AS n, MAX(seq) AS last_seq FROM (
                 SELECT user_id, seq, state FROM orders WHERE sale_id = ?
                 UNION ALL SELECT user_id, seq, state FROM order_conflicts WHERE sale_id = ?
             ) AS held GROUP BY user_id"
        ))
        .bind(sale.0)
        .bind(sale.0)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let holders = rows
            .iter()
            .map(|r| {
                Ok(Holding {
                    user: UserId::trusted(required_id(r, "user_id")?),
                    held: r.try_get::<i64, _>("n")? as u32,
                    last_seq: r.try_get::<i32, _>("last_seq")? as u32,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)?;
        let open_holds = sqlx::query(&format!(
            "{SELECT_ORDER} WHERE sale_id = ? AND state = 'awaiting_payment'"
        ))
        .bind(sale.0)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(order_from_row)
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
        let paid: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE sale_id = ? AND state = 'paid'")
            .bind(sale.0)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(GateState {
            holders,
            open_holds,
            paid: paid as u64,
        })
    }

    /// Directly in MySQL (not through the log): a refused payment is answered only once kept.
    pub async fn record_late_payment(&self, late: &LatePayment) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT IGNORE INTO late_payments (payment_id, order_id, sale_id, amount, received_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&late.payment_id)
        .bind(late.order_id.hyphenated().to_string())
        .bind(late.sale_id.0)
        .bind(&late.amount)
        .bind(late.received_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub async fn audit(&self, sale: SaleId, per_user_limit: u32) -> Result<StoreAudit, BackendError> {
        let row = sqlx::query(&format!(
            "SELECT CAST(COALESCE(SUM(state IN {HELD}), 0) AS SIGNED) AS stored,
                    COUNT(*) - COUNT(DISTINCT user_id, seq) AS duplicates,
                    CAST(COALESCE(SUM(state = 'awaiting_payment'), 0) AS SIGNED) AS awaiting_payment,
                    CAST(COALESCE(SUM(state = 'paid'), 0) AS SIGNED) AS paid,
                    CAST(COALESCE(SUM(state = 'expired'), 0) AS SIGNED) AS expired,
                    CAST(COALESCE(SUM(state = 'cancelled'), 0) AS SIGNED) AS cancelled,
                    (SELECT COUNT(*) FROM late_payments WHERE sale_id = ?) AS late_payments,
                    (SELECT COUNT(*) FROM order_conflicts WHERE sale_id = ?) AS conflicts,
                    (SELECT COUNT(*) FROM (
                         SELECT user_id FROM orders WHERE sale_id = ? AND state IN {HELD}
                         GROUP BY user_id HAVING COUNT(*) > ?
                     ) AS beyond_limit) AS over_limit
             FROM orders WHERE sale_id = ?"
        ))
        .bind(sale.0)
        .bind(sale.0)
        .bind(sale.0)
        .bind(per_user_limit)
        .bind(sale.0)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let count = |name: &str| row.try_get::<i64, _>(name).map(|n| n as u64).map_err(unavailable);
        Ok(StoreAudit {
            stored: count("stored")?,
            awaiting_payment: count("awaiting_payment")?,
            paid: count("paid")?,
            expired: count("expired")?,
            cancelled: count("cancelled")?,
            late_payments: count("late_payments")?,
            duplicates: count("duplicates")?,
            conflicts: count("conflicts")?,
            over_limit: count("over_limit")?,
        })
    }

    /// Every table the engine uses answers: a table dropped behind the engine's back (the
    /// migrations stay recorded as applied, so nothing recreates it) is named, at start and in
    /// `/readyz`, instead of failing each request.
    pub async fn ready(&self) -> Result<(), BackendError> {
        for (table, columns) in SCHEMA {
            sqlx::query(&format!("SELECT {columns} FROM {table} LIMIT 0"))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    BackendError::unavailable(
                        Role::Store,
                        format!("mysql: table {table} is missing or incomplete ({e}); restore it from a backup or recreate it from migrations/mysql"),
                    )
                })?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
