-- The consumer inserts every sold unit, and each secondary index is written per row: this one
-- cost MariaDB about a quarter of its CPU per stored order (bench/README.md). Nothing on a
-- sale's hot path reads orders by state; the two readers that filter on it (rebuilding a sale's
-- gate after a Redis loss, and the audit) read every order of the sale anyway, and the unique
-- key's `sale_id` prefix finds them. The embedded store never had such an index.
ALTER TABLE orders DROP KEY ix_orders_sale_state;
