-- Schema 1 of the router's PostgreSQL store (`store.postgres`): what several `router serve` instances share.
-- Text keys are COLLATE "C" so their order is byte order, as in the redb file.

-- Request records: the u128 request id as 16 big-endian bytes (byte order = time order), its unix ms, and the
-- record in the store's versioned encoding (`store::tables::encode_record`: version byte + JSON).
CREATE TABLE requests (
    id bytea PRIMARY KEY,
    time_ms bigint NOT NULL,
    rec bytea NOT NULL
);

-- Daily rollups: the key of redb's `usage_daily` (UTC day since 1970-01-01, channel, endpoint, token
-- fingerprint, token_key, model, gateway key; absent parts are '') and its counters.
CREATE TABLE usage_daily (
    day integer NOT NULL,
    channel text COLLATE "C" NOT NULL,
    endpoint text COLLATE "C" NOT NULL,
    token_fp text COLLATE "C" NOT NULL,
    token_key text COLLATE "C" NOT NULL,
    model text COLLATE "C" NOT NULL,
    gateway_key text COLLATE "C" NOT NULL,
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    input bigint NOT NULL,
    cache_read bigint NOT NULL,
    cache_write bigint NOT NULL,
    output bigint NOT NULL,
    reasoning bigint NOT NULL,
    cost_usd double precision NOT NULL,
    unknown_cost bigint NOT NULL,
    estimated bigint NOT NULL,
    PRIMARY KEY (day, channel, endpoint, token_fp, token_key, model, gateway_key)
);

-- Hourly rollups: the same key with the hour since the Unix epoch (UTC) in place of the day.
CREATE TABLE usage_hourly (
    hour integer NOT NULL,
    channel text COLLATE "C" NOT NULL,
    endpoint text COLLATE "C" NOT NULL,
    token_fp text COLLATE "C" NOT NULL,
    token_key text COLLATE "C" NOT NULL,
    model text COLLATE "C" NOT NULL,
    gateway_key text COLLATE "C" NOT NULL,
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    input bigint NOT NULL,
    cache_read bigint NOT NULL,
    cache_write bigint NOT NULL,
    output bigint NOT NULL,
    reasoning bigint NOT NULL,
    cost_usd double precision NOT NULL,
    unknown_cost bigint NOT NULL,
    estimated bigint NOT NULL,
    PRIMARY KEY (hour, channel, endpoint, token_fp, token_key, model, gateway_key)
);

-- The small JSON tables of `store::KvTable` (channels, models, prices, health, balances, gateway_keys).
CREATE TABLE kv (
    tbl text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);

-- Small facts about the store (`requests_pruned_before` -> unix ms).
CREATE TABLE meta (
    key text PRIMARY KEY,
    value bigint NOT NULL
);
