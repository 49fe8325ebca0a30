//! MySQL (or MariaDB) order store of the distributed mode: the sale catalogue, and the orders the
//! consumer writes from the log with multi-row `INSERT IGNORE` (the unique key makes a
//! redelivered order a no-op, so at-least-once delivery stores each order exactly once).

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, QueryBuilder, Row};

use super::{StoreAudit, StoredOrder};
use crate::domain::{now_millis, Order, Sale, SaleId, SaleSpec, UserId};
use crate::error::ApiError;

/// Rows per `INSERT` statement (5 placeholders each, far below MySQL's 65,535).
const ROWS_PER_INSERT: usize = 2_000;

#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("mysql: {e}"))
}

const SELECT_SALE: &str = "SELECT id, name, stock, per_user_limit, starts_at, ends_at, demo, created_at FROM sales";

fn sale_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Sale, sqlx::Error> {
    Ok(Sale {
        id: SaleId(row.try_get("id")?),
        name: row.try_get("name")?,
        stock: row.try_get::<i64, _>("stock")? as u64,
        per_user_limit: row.try_get::<i32, _>("per_user_limit")? as u32,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        demo: row.try_get::<Option<i8>, _>("demo")?.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

impl MySqlStore {
    /// Connects (creating the database if it does not exist) and applies the migrations.
    pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<Self, ApiError> {
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

    /// Stores a batch of orders from the log; duplicates are ignored. Returns rows newly stored.
    pub async fn insert_orders(&self, orders: &[Order]) -> Result<u64, ApiError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let mut inserted = 0;
        for chunk in orders.chunks(ROWS_PER_INSERT) {
            let mut insert =
                QueryBuilder::new("INSERT IGNORE INTO orders (order_id, sale_id, user_id, seq, created_at) ");
            insert.push_values(chunk, |mut row, o| {
                row.push_bind(o.order_id.hyphenated().to_string())
                    .push_bind(o.sale_id.0)
                    .push_bind(o.user_id.as_str())
                    .push_bind(o.seq)
                    .push_bind(o.created_at);
            });
            inserted += insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(inserted)
    }

    pub async fn create_sale(&self, spec: SaleSpec) -> Result<Sale, ApiError> {
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
            return self
                .sales()
                .await?
                .into_iter()
                .find(|s| s.demo)
                .ok_or_else(|| ApiError::Internal("demo sale vanished".into()));
        }
        Ok(spec.into_sale(SaleId(result.last_insert_id() as i64), created_at))
    }

    pub async fn sales(&self) -> Result<Vec<Sale>, ApiError> {
        let rows = sqlx::query(&format!("{SELECT_SALE} ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(sale_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    pub async fn sale(&self, id: SaleId) -> Result<Option<Sale>, ApiError> {
        let row = sqlx::query(&format!("{SELECT_SALE} WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(sale_from_row).transpose().map_err(unavailable)
    }

    pub async fn orders_of(&self, sale: SaleId, user: &UserId) -> Result<Vec<StoredOrder>, ApiError> {
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

    pub async fn holders(&self, sale: SaleId) -> Result<Vec<(UserId, u32)>, ApiError> {
        let rows = sqlx::query("SELECT user_id, COUNT(*) AS n FROM orders WHERE sale_id = ? GROUP BY user_id")
            .bind(sale.0)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((UserId::trusted(r.try_get("user_id")?), r.try_get::<i64, _>("n")? as u32)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    }

    pub async fn audit(&self, sale: SaleId) -> Result<StoreAudit, ApiError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS stored, COUNT(*) - COUNT(DISTINCT user_id, seq) AS duplicates FROM orders WHERE sale_id = ?",
        )
        .bind(sale.0)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let stored: i64 = row.try_get("stored").map_err(unavailable)?;
        let duplicates: i64 = row.try_get("duplicates").map_err(unavailable)?;
        Ok(StoreAudit {
            stored: stored as u64,
            duplicates: duplicates as u64,
        })
    }

    pub async fn ready(&self) -> Result<(), ApiError> {
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
