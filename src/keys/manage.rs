//! Gateway-key management as a person asks for it (`router keys`, `/admin/v1/keys`): the settings as given
//! (text, as flags or admin JSON carry them), their checks (user errors with a hint, nothing written), and each
//! change as one [`ops`](super::ops) operation sent through `store::Access` — the store file, a running server's
//! control socket, or (in the server) its own store. The CLI and the admin API call these functions, so both
//! check, answer and fail alike.
//!
//! Owns [`Ctx`] (the store, the configuration's keys, the time zone, now) and turning [`KeySettings`] into a
//! [`KeyPatch`]. Must not print, and must not keep a secret: a new one is returned to the caller once.

use std::path::PathBuf;

use jiff::tz::TimeZone;
use serde_json::json;

use super::ops::{Change, KeyPatch, KeyReport, KeysCreate, KeysReport, KeysRotate, KeysSetState, KeysUpdate, YamlKey};
use super::{State, StoredKey};
use crate::config::Config;
use crate::error::user;
use crate::live::limits::{Limits, Period};
use crate::store::{self, Access};

/// Settings shared by create and update, as text (`router keys` flags, admin JSON). Numbers are read here (not
/// by clap or serde) so that a bad one is a user error. The admin API takes the same fields as JSON
/// (`{"rpm": "60", "budget": "5", "per": "week"}`; numbers too).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// Tag expression or comma-separated model list the key may reach (e.g. `tag:free`).
    pub allow: Option<String>,
    /// Requests per minute.
    #[serde(deserialize_with = "text_or_number")]
    pub rpm: Option<String>,
    /// Tokens (input + output, as recorded) per minute.
    #[serde(deserialize_with = "text_or_number")]
    pub tpm: Option<String>,
    /// Requests at the same time (streams count until they end).
    #[serde(deserialize_with = "text_or_number")]
    pub max_parallel: Option<String>,
    /// Spend allowed per period, USD (needs `per`).
    #[serde(deserialize_with = "text_or_number")]
    pub budget: Option<String>,
    /// The budget's period, in server.timezone: day, week (from Monday), month or total.
    pub per: Option<String>,
    /// When the key stops working: a date (valid through that day), an RFC 3339 time, or a duration (30d, 12h).
    pub expires: Option<String>,
    /// A note for people (who has it, what for).
    pub note: Option<String>,
}

/// A setting given as JSON text or as a JSON number (read like the flag's text either way).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(serde::de::Error::custom(format!("expected a number or text, not {other}"))),
    })
}

/// What every key operation needs: the store, the configuration's keys and the time zone.
pub struct Ctx {
    config: Option<Config>,
    tz: TimeZone,
    now_ms: i64,
    store: StoreAt,
}

/// Where a [`Ctx`] reaches the store.
enum StoreAt {
    /// The caller holds it (the admin API in the server).
    Held(store::Store),
    /// A store file, or the running server that holds it (`Access::open`), opened per operation.
    Path(PathBuf),
}

impl Ctx {
    /// The server's view: its configuration and its own store.
    pub fn serving(config: &Config, store: store::Store) -> anyhow::Result<Ctx> {
        let tz = super::timezone(config.raw.server.timezone.as_deref()).map_err(anyhow::Error::msg)?;
        let config = config.path.is_some().then(|| config.clone());
        Ok(Ctx { config, tz, now_ms: crate::usage::now_ms(), store: StoreAt::Held(store) })
    }

    /// A command's view: the configuration file (if any) and the store at `store_path` (the file, or the running
    /// server that holds it). A bad `server.timezone` is a user error.
    pub fn new(config: Option<Config>, store_path: PathBuf) -> anyhow::Result<Ctx> {
        let tz_name = config.as_ref().and_then(|c| c.raw.server.timezone.clone());
        let tz = super::timezone(tz_name.as_deref()).map_err(|m| user(m).with_hint("fix server.timezone"))?;
        Ok(Ctx { config, tz, now_ms: crate::usage::now_ms(), store: StoreAt::Path(store_path) })
    }

    /// The store: the server's own, else the file or the running server that holds it.
    pub fn access(&self) -> anyhow::Result<Access> {
        match &self.store {
            StoreAt::Held(s) => Ok(Access::Direct(s.clone())),
            StoreAt::Path(p) => Access::open(p),
        }
    }

    fn yaml_keys(&self) -> Vec<YamlKey> {
        let Some(c) = &self.config else { return Vec::new() };
        c.gateway_keys
            .iter()
            .map(|k| YamlKey {
                name: k.name.clone(),
                allow: k.allow.clone(),
                limits: k.limits,
                expires_ms: k.expires_ms,
            })
            .collect()
    }

    /// A key of the configuration file cannot be changed here.
    pub fn check_not_yaml(&self, name: &str) -> anyhow::Result<()> {
        let Some(c) = &self.config else { return Ok(()) };
        if c.gateway_keys.iter().any(|k| k.name == name) {
            let file = c.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the configuration".into());
            return Err(user(format!("key `{name}` is defined in {file} (server.keys)"))
                .with_hint("change it in that file, or pick another name for a store key")
                .into());
        }
        Ok(())
    }

    /// The time zone reports and expiry dates use (`server.timezone`).
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    fn timezone_name(&self) -> Option<String> {
        self.config.as_ref().and_then(|c| c.raw.server.timezone.clone())
    }
}

fn bad(flag: &str, value: &str, hint: &str) -> anyhow::Error {
    user(format!("--{flag} `{value}` is not valid")).with_hint(hint.to_string()).into()
}

fn is_none_word(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "none" | "off" | "unlimited")
}

/// A positive whole number, or (for update) `none`.
fn count<T: std::str::FromStr + PartialEq + From<u8>>(
    flag: &str,
    v: &Option<String>,
    clearable: bool,
) -> anyhow::Result<Option<Change<T>>> {
    let Some(s) = v else { return Ok(None) };
    if clearable && is_none_word(s) {
        return Ok(Some(Change::Clear));
    }
    match s.trim().replace('_', "").parse::<T>() {
        Ok(n) if n != T::from(0) => Ok(Some(Change::Set(n))),
        _ => Err(bad(
            flag,
            s,
            if clearable {
                "give a whole number of at least 1, or `none` to remove the limit"
            } else {
                "give a whole number of at least 1"
            },
        )),
    }
}

fn period(v: &Option<String>) -> anyhow::Result<Option<Period>> {
    let Some(s) = v else { return Ok(None) };
    match s.trim().to_ascii_lowercase().as_str() {
        "day" | "daily" => Ok(Some(Period::Day)),
        "week" | "weekly" => Ok(Some(Period::Week)),
        "month" | "monthly" => Ok(Some(Period::Month)),
        "total" => Ok(Some(Period::Total)),
        _ => Err(bad("per", s, "use day, week, month or total")),
    }
}

/// The settings as a patch of the key's current ones (for `create`, of none).
fn patch(ctx: &Ctx, s: &KeySettings, clearable: bool) -> anyhow::Result<KeyPatch> {
    let budget = match &s.budget {
        None => None,
        Some(b) if clearable && is_none_word(b) => Some(Change::Clear),
        Some(b) => match b.trim().trim_start_matches('$').parse::<f64>() {
            Ok(usd) if usd.is_finite() && usd > 0.0 => Some(Change::Set(usd)),
            _ => return Err(bad("budget", b, "give a positive amount of USD, e.g. 5 or 0.50")),
        },
    };
    let text = |v: &Option<String>| {
        v.as_ref().map(|t| if t.trim().is_empty() { Change::Clear } else { Change::Set(t.trim().to_string()) })
    };
    let expires_ms = match &s.expires {
        None => None,
        Some(e) => match super::parse_expiry(e, ctx.now_ms, &ctx.tz, true) {
            Ok(Some(ms)) => Some(Change::Set(ms)),
            Ok(None) => Some(Change::Clear),
            Err(m) => return Err(user(format!("--expires: {m}")).with_hint("e.g. --expires 2026-12-31 or 30d").into()),
        },
    };
    if let Some(Change::Set(ms)) = expires_ms
        && ms <= ctx.now_ms
    {
        return Err(user(format!("--expires `{}` is in the past", s.expires.as_deref().unwrap_or("")))
            .with_hint("give a later date, or a duration such as 30d")
            .into());
    }
    if let Some(Change::Set(a)) = text(&s.allow)
        && crate::tags::TagExpr::parse(&a).is_none()
        && a.starts_with("tag:")
    {
        return Err(bad("allow", &a, "write tag:a,b,!c or a comma-separated list of models"));
    }
    Ok(KeyPatch {
        allow: text(&s.allow),
        rpm: count("rpm", &s.rpm, clearable)?,
        tpm: count("tpm", &s.tpm, clearable)?,
        max_parallel: count("max-parallel", &s.max_parallel, clearable)?,
        budget,
        per: period(&s.per)?,
        expires_ms,
        note: text(&s.note),
    })
}

/// Creates a store key; returns it with its secret (the only time the secret exists outside its user).
pub fn create_key(ctx: &Ctx, name: &str, settings: &KeySettings) -> anyhow::Result<(Access, StoredKey, String)> {
    super::check_name(name).map_err(|m| user(m).with_hint("use letters, digits, `-`, `_`, `.` or `@` (at most 64)"))?;
    ctx.check_not_yaml(name)?;
    let p = patch(ctx, settings, false)?;
    let limits = p.limits(&Limits::default())?;
    let (secret, hash, prefix) = super::generate();
    let row = StoredKey {
        name: name.to_string(),
        hash,
        prefix,
        allow: settings.allow.clone().filter(|s| !s.trim().is_empty()),
        limits,
        expires_ms: match p.expires_ms {
            Some(Change::Set(ms)) => Some(ms),
            _ => None,
        },
        note: settings.note.clone().filter(|s| !s.trim().is_empty()),
        state: State::Active,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
    };
    let access = ctx.access()?;
    let row = access.run(KeysCreate { key: row })?;
    Ok((access, row, secret))
}

/// A key with its new secret as `--json` prints it: the row plus `key`.
pub fn with_secret(row: &StoredKey, secret: &str) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(row)?;
    v["key"] = json!(secret);
    Ok(v)
}

/// Every key (configuration and store) with its limits and spend, or the one named.
pub fn reports(ctx: &Ctx, name: Option<&str>) -> anyhow::Result<Vec<KeyReport>> {
    let q = KeysReport { name: name.map(str::to_string), yaml: ctx.yaml_keys(), timezone: ctx.timezone_name() };
    ctx.access()?.run(q)
}

/// Changes a store key's settings.
pub fn update_key(ctx: &Ctx, name: &str, settings: &KeySettings) -> anyhow::Result<(Access, StoredKey)> {
    ctx.check_not_yaml(name)?;
    let p = patch(ctx, settings, true)?;
    if p.is_empty() {
        return Err(user("nothing to change")
            .with_hint("give at least one of --allow, --rpm, --tpm, --max-parallel, --budget, --per, --expires, --note")
            .into());
    }
    let access = ctx.access()?;
    let row = access.run(KeysUpdate { name: name.to_string(), patch: p, now_ms: ctx.now_ms })?;
    Ok((access, row))
}

/// Disables, enables or revokes a store key.
pub fn set_key_state(ctx: &Ctx, name: &str, state: State) -> anyhow::Result<(Access, StoredKey)> {
    ctx.check_not_yaml(name)?;
    let access = ctx.access()?;
    let row = access.run(KeysSetState { name: name.to_string(), state, now_ms: ctx.now_ms })?;
    Ok((access, row))
}

/// A new secret for a store key; returns the row and the secret.
pub fn rotate_key(ctx: &Ctx, name: &str) -> anyhow::Result<(Access, StoredKey, String)> {
    ctx.check_not_yaml(name)?;
    let (secret, hash, prefix) = super::generate();
    let access = ctx.access()?;
    let row = access.run(KeysRotate { name: name.to_string(), hash, prefix, now_ms: ctx.now_ms })?;
    Ok((access, row, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::limits::Budget;

    #[test]
    fn bad_numbers_are_user_errors() {
        let ctx = Ctx {
            config: None,
            tz: TimeZone::UTC,
            now_ms: crate::usage::now_ms(),
            store: StoreAt::Path(PathBuf::from("unused.redb")),
        };
        for s in [
            KeySettings { rpm: Some("0".into()), ..Default::default() },
            KeySettings { rpm: Some("-5".into()), ..Default::default() },
            KeySettings { tpm: Some("lots".into()), ..Default::default() },
            KeySettings { budget: Some("-1".into()), ..Default::default() },
            KeySettings { per: Some("fortnight".into()), ..Default::default() },
            KeySettings { expires: Some("soon".into()), ..Default::default() },
            KeySettings { expires: Some("2020-01-01".into()), ..Default::default() },
            KeySettings { rpm: Some("none".into()), ..Default::default() },
        ] {
            let e = patch(&ctx, &s, false).unwrap_err();
            assert!(e.downcast_ref::<crate::error::UserError>().is_some(), "{s:?}: {e:#}");
        }
        let p = patch(&ctx, &KeySettings { rpm: Some("none".into()), ..Default::default() }, true).unwrap();
        assert_eq!(p.rpm, Some(Change::Clear));
        let p = patch(
            &ctx,
            &KeySettings { budget: Some("$5".into()), per: Some("week".into()), ..Default::default() },
            false,
        )
        .unwrap();
        assert_eq!(p.limits(&Limits::default()).unwrap().budget, Some(Budget { usd: 5.0, per: Period::Week }));
    }
}
