-- Orders with a payment step: an order is `confirmed` (no payment step), or `awaiting_payment`
-- until exactly one of `paid`, `expired` or `cancelled`. An expired or cancelled order's unit
-- went back on sale; its row stays, so its (sale_id, user_id, seq) is never handed out again.
ALTER TABLE orders
    ADD COLUMN state      VARCHAR(20)  NOT NULL DEFAULT 'confirmed',
    ADD COLUMN pay_by     BIGINT       NULL,
    ADD COLUMN paid_at    BIGINT       NULL,
    ADD COLUMN payment_id VARCHAR(200) NULL,
    ADD KEY ix_orders_sale_state (sale_id, state);

ALTER TABLE order_conflicts
    ADD COLUMN state      VARCHAR(20)  NOT NULL DEFAULT 'confirmed',
    ADD COLUMN pay_by     BIGINT       NULL,
    ADD COLUMN paid_at    BIGINT       NULL,
    ADD COLUMN payment_id VARCHAR(200) NULL;

-- Payments that arrived after their hold closed (expired or cancelled): kept for a refund.
-- The provider's payment id is the key, so a retried notice is kept once.
CREATE TABLE IF NOT EXISTS late_payments (
    payment_id  VARCHAR(200) NOT NULL PRIMARY KEY,
    order_id    CHAR(36)     NOT NULL,
    sale_id     BIGINT       NOT NULL,
    amount      TEXT         NULL,
    received_at BIGINT       NOT NULL,
    KEY ix_late_payments_sale (sale_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Seconds a buyer has to pay for a unit won in this sale; 0 = no payment step.
ALTER TABLE sales ADD COLUMN payment_window_secs INT NOT NULL DEFAULT 0;
