-- Over how many Redis hash tags the distributed gate splits a sale's stock.
ALTER TABLE sales
    ADD COLUMN stock_shards SMALLINT NOT NULL DEFAULT 1;
