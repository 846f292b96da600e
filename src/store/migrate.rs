//! `router store migrate`: copies a redb store into PostgreSQL (`store.postgres`), so an existing gateway can
//! move to several instances without losing its history.
//!
//! Owns what is copied and how a second run behaves: request records are inserted unless their id is there
//! (`ON CONFLICT DO NOTHING`), daily rollups are set to the source's values (not added: records may have been
//! pruned from the source while its rollups stay), so are the hourly rollups, the KV tables (channels, models,
//! prices, health, balances, gateway keys) are upserted, the retention bound is raised to the source's and
//! the hour from which hourly rollups are complete is the source's. So a run repeated, or resumed after a failure, ends in the same state. Must not
//! write the source, and should run before instances write the database (the rollup rows it copies are set,
//! not added to). Prints nothing (the CLI does).

use std::collections::BTreeMap;

use serde::Serialize;

use super::pg::Pg;
use super::tables::{self, DailyKey};
use super::{KvTable, Store, StoreError};
use crate::usage::RequestRecord;

/// Records per PostgreSQL statement.
const CHUNK: usize = 2000;

/// What a migration copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Migrated {
    pub records: u64,
    /// Of `records`, how many the database did not hold yet.
    pub new_records: u64,
    pub daily_rows: u64,
    pub hourly_rows: u64,
    pub kv_rows: u64,
    /// Whether the database held no records, rollups or KV rows before.
    pub target_was_empty: bool,
}

/// Copies everything of the redb store `from` into `to`. `progress` hears the records copied so far.
pub fn to_postgres(from: &Store, to: &Pg, mut progress: impl FnMut(u64)) -> Result<Migrated, StoreError> {
    let mut out = Migrated { target_was_empty: to.is_empty()?, ..Default::default() };
    let mut chunk: Vec<RequestRecord> = Vec::with_capacity(CHUNK);
    let mut failed = None;
    let mut flush = |chunk: &mut Vec<RequestRecord>, out: &mut Migrated| -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        out.new_records += to.insert_records_only(chunk)?;
        out.records += chunk.len() as u64;
        chunk.clear();
        progress(out.records);
        Ok(())
    };
    from.scan_requests(0..u128::MAX, false, |r| {
        chunk.push(r);
        if chunk.len() >= CHUNK
            && let Err(e) = flush(&mut chunk, &mut out)
        {
            failed = Some(e);
            return false;
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    flush(&mut chunk, &mut out)?;
    let mut daily = BTreeMap::new();
    from.scan_daily(0, u32::MAX, |k, c| {
        daily.insert(k, c);
    })?;
    let mut hourly = BTreeMap::new();
    from.scan_hourly(0, u32::MAX, |k, c| {
        let tables::HourlyKey { hour, channel, endpoint, token_fp, token_key, model, gateway_key } = k;
        hourly.insert(DailyKey { day: hour, channel, endpoint, token_fp, token_key, model, gateway_key }, c);
    })?;
    out.daily_rows = daily.len() as u64;
    out.hourly_rows = hourly.len() as u64;
    to.set_rollups(false, daily)?;
    to.set_rollups(true, hourly)?;
    for t in
        [KvTable::Channels, KvTable::Models, KvTable::Prices, KvTable::Health, KvTable::Balances, KvTable::GatewayKeys]
    {
        let rows = from.list_raw(t)?;
        out.kv_rows += rows.len() as u64;
        if !rows.is_empty() {
            to.apply_kv(t.name(), &[], &[], &rows)?.map_err(|key| StoreError::Exists { table: t.name(), key })?;
        }
    }
    let pruned = from.pruned_before()?;
    if pruned > 0 {
        to.raise_meta(tables::META_PRUNED_BEFORE, pruned)?;
    }
    to.set_meta(tables::META_HOURLY_FROM, from.hourly_from()?)?;
    Ok(out)
}
