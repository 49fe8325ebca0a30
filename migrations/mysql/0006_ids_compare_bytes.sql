-- Buyer, order and payment ids compare byte for byte, as the gate and the embedded store
-- compare them. Under the default case-insensitive collation `Alice` and `alice` were one
-- buyer to the unique key (the second one's order was filed as a conflict, and the audit
-- called the sale inconsistent) and to the orders lookup (each read the other's orders), and
-- a provider's payment ids `P1` and `p1` were one late payment. The engine accepts only ASCII
-- in these ids, so they are stored as ASCII: smaller rows and plain byte comparisons in every
-- index that holds them.
ALTER TABLE orders
    MODIFY order_id   CHAR(36)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY user_id    VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY payment_id VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NULL;
ALTER TABLE order_conflicts
    MODIFY order_id   CHAR(36)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY user_id    VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY payment_id VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NULL;
ALTER TABLE late_payments
    MODIFY payment_id VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    MODIFY order_id   CHAR(36)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL;
