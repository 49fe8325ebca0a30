-- Orders the log delivered whose (sale_id, user_id, seq) another order already holds. The gate
-- never hands out a seq twice, so a row here is a fault: it is kept (the buyer was told
-- "success"), logged, and counted by the auditor, which then calls the sale inconsistent.
CREATE TABLE IF NOT EXISTS order_conflicts (
    order_id    CHAR(36)     NOT NULL PRIMARY KEY,
    sale_id     BIGINT       NOT NULL,
    user_id     VARCHAR(64)  NOT NULL,
    seq         INT          NOT NULL,
    created_at  BIGINT       NOT NULL,
    detected_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    KEY ix_order_conflicts_sale (sale_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
