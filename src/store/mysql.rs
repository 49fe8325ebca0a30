//! MySQL (or MariaDB) order store of the distributed mode: the sale catalogue, and the orders the
//! consumer writes from the log with multi-row `INSERT IGNORE` (the unique key makes a
//! redelivered order a no-op, so at-least-once delivery stores each order exactly once).

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, QueryBuilder, Row};

use super::{StoreAudit, StoredOrder};
use crate::backend::{BackendError, Cause, Role};
use crate::domain::{now_millis, Holding, Order, Sale, SaleId, SaleSpec, UserId};

/// Rows per `INSERT` statement (5 placeholders each, far below MySQL's 65,535).
const ROWS_PER_INSERT: usize = 2_000;

/// `INSERT IGNORE INTO <table>` of `orders` (both order tables have the same first columns).
fn insert_rows<'a>(table: &str, orders: &'a [Order]) -> QueryBuilder<'a, sqlx::MySql> {
    let mut insert = QueryBuilder::new(format!(
        "INSERT IGNORE INTO {table} (order_id, sale_id, user_id, seq, created_at) "
    ));
    insert.push_values(orders, |mut row, o| {
        row.push_bind(o.order_id.hyphenated().to_string())
            .push_bind(o.sale_id.0)
            .push_bind(o.user_id.as_str())
            .push_bind(o.seq)
            .push_bind(o.created_at);
    });
    insert
}

/// Orders of `chunk` that `INSERT IGNORE` skipped although their id is not stored: another order
/// holds their `(sale, user, seq)`. They go to `order_conflicts`, loudly.
async fn keep_conflicts(tx: &mut sqlx::Transaction<'_, sqlx::MySql>, chunk: &[Order]) -> Result<(), BackendError> {
    let mut select = QueryBuilder::new("SELECT order_id FROM orders WHERE order_id IN ");
    select.push_tuples(chunk, |mut row, o| {
        row.push_bind(o.order_id.hyphenated().to_string());
    });
    let stored: std::collections::HashSet<String> = select
        .build_query_scalar::<String>()
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?
        .into_iter()
        .collect();
    let conflicts: Vec<Order> = chunk
        .iter()
        .filter(|o| !stored.contains(&o.order_id.hyphenated().to_string()))
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

#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

fn unavailable(e: impl Into<Cause>) -> BackendError {
    BackendError::unavailable(Role::Store, e)
}

const SELECT_SALE: &str = "SELECT id, name, stock, per_user_limit, starts_at, ends_at, demo, created_at FROM sales";

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
        Ok(MySqlStore { pool })
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
        tx.commit().await.map_err(unavailable)?;
        Ok(inserted)
    }

    pub async fn create_sale(&self, spec: SaleSpec) -> Result<Sale, BackendError> {
        let created_at = now_millis();
        let result = sqlx::query(
            "INSERT IGNORE INTO sales (name, stock, per_user_limit, starts_at, ends_at, demo, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&spec.name)
        .bind(spec.stock as i64)
        .bind(spec.per_user_limit)
        .bind(spec.starts_at)
        .bind(spec.ends_at)
        .bind(spec.demo.then_some(1i8))
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if result.rows_affected() == 0 && spec.demo {
            // Another instance created the demo sale first: use theirs.
            return self.sales().await?.into_iter().find(|s| s.spec.demo).ok_or_else(|| {
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

    pub async fn sales(&self) -> Result<Vec<Sale>, BackendError> {
        let rows = sqlx::query(&format!("{SELECT_SALE} ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(sale_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    pub async fn sale(&self, id: SaleId) -> Result<Option<Sale>, BackendError> {
        let row = sqlx::query(&format!("{SELECT_SALE} WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(sale_from_row).transpose().map_err(unavailable)
    }

    pub async fn orders_of(&self, sale: SaleId, user: &UserId) -> Result<Vec<StoredOrder>, BackendError> {
        let rows =
            sqlx::query("SELECT order_id, seq, created_at FROM orders WHERE sale_id = ? AND user_id = ? ORDER BY seq")
                .bind(sale.0)
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(StoredOrder {
                    order_id: r.try_get("order_id")?,
                    seq: r.try_get::<i32, _>("seq")? as u32,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    }

    /// Conflicting orders count too: each took a unit from the gate.
    pub async fn holders(&self, sale: SaleId) -> Result<Vec<Holding>, BackendError> {
        let rows = sqlx::query(
            "SELECT user_id, COUNT(*) AS n, MAX(seq) AS last_seq FROM (
                 SELECT user_id, seq FROM orders WHERE sale_id = ?
                 UNION ALL SELECT user_id, seq FROM order_conflicts WHERE sale_id = ?
             ) AS held GROUP BY user_id",
        )
        .bind(sale.0)
        .bind(sale.0)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(Holding {
                    user: UserId::trusted(r.try_get("user_id")?),
                    held: r.try_get::<i64, _>("n")? as u32,
                    last_seq: r.try_get::<i32, _>("last_seq")? as u32,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    }

    pub async fn audit(&self, sale: SaleId, per_user_limit: u32) -> Result<StoreAudit, BackendError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS stored, COUNT(*) - COUNT(DISTINCT user_id, seq) AS duplicates,
                    (SELECT COUNT(*) FROM order_conflicts WHERE sale_id = ?) AS conflicts,
                    (SELECT COUNT(*) FROM (
                         SELECT user_id FROM orders WHERE sale_id = ? GROUP BY user_id HAVING COUNT(*) > ?
                     ) AS beyond_limit) AS over_limit
             FROM orders WHERE sale_id = ?",
        )
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
            duplicates: count("duplicates")?,
            conflicts: count("conflicts")?,
            over_limit: count("over_limit")?,
        })
    }

    pub async fn ready(&self) -> Result<(), BackendError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
