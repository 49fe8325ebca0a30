-- A sale's waiting room; all three NULL: none, buyers purchase directly.
ALTER TABLE sales
    ADD COLUMN queue_admit_per_sec   INT         NULL,
    ADD COLUMN queue_mode            VARCHAR(20) NULL,
    ADD COLUMN queue_ticket_ttl_secs INT         NULL;
