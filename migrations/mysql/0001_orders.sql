-- Sales and orders of the distributed mode. Times are Unix milliseconds, as in the engine.
CREATE TABLE IF NOT EXISTS sales (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name           VARCHAR(400) NOT NULL,
    stock          BIGINT       NOT NULL,
    per_user_limit INT          NOT NULL,
    starts_at      BIGINT       NULL,
    ends_at        BIGINT       NULL,
    -- 1 for the demo sale, NULL otherwise: the unique key lets only one instance create it.
    demo           TINYINT      NULL,
    created_at     BIGINT       NOT NULL,
    UNIQUE KEY uq_sales_demo (demo)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- (sale_id, user_id, seq) is unique: an order delivered twice by the log is stored once.
-- With the default per-user limit of 1, seq is always 1 and this is the (sale_id, user_id) key.
CREATE TABLE IF NOT EXISTS orders (
    order_id   CHAR(36)    NOT NULL PRIMARY KEY,
    sale_id    BIGINT      NOT NULL,
    user_id    VARCHAR(64) NOT NULL,
    seq        INT         NOT NULL,
    created_at BIGINT      NOT NULL,
    stored_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY uq_orders_sale_user_seq (sale_id, user_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
