//! Gateway keys as a team manages them: the `gateway_keys` table's rows (hash only, never the secret), the key
//! table the server authenticates against (YAML `server.keys` + store rows, swapped whole), and the rules both
//! share — names here; limits, expiry, hash and time zone in `config::key_rules` (re-exported here), because the
//! configuration checks its keys with them.
//!
//! Owns what a key is and whether a presented secret is a usable key now ([`KeyTable::authenticate`]). The
//! store operations behind `router keys` (create, update, state changes, rotate, the spend report) are in
//! [`ops`]; checking what a person asks for and sending it as those operations (the one path of the CLI and
//! the admin API) is [`manage`]; admission counters are live state (`live::limits`). Must not keep or log a
//! secret: a new secret is handed once to whoever asked (the CLI prints it, the admin API answers it); the store
//! and the server see its SHA-256 and a short prefix.

pub mod manage;
pub mod ops;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{GatewayKey, hash_key};
use crate::live::limits::Limits;

/// The rules YAML keys and store keys share (hash, time zone, limits, expiry) are configuration's: it checks
/// YAML keys with them.
pub use crate::config::key_rules::{check_limits, parse_expiry, parse_hash, timezone, yaml_limits};

/// Characters of a secret kept to tell keys apart (`sk-router-` and four hex digits).
const PREFIX_LEN: usize = 14;

/// A new secret: `(secret, "sha256:<hex>", prefix)`. The secret is shown once and never stored.
pub fn generate() -> (String, String, String) {
    let bytes: [u8; 24] = rand::random();
    let secret = format!("sk-router-{}", hex::encode(bytes));
    let hash = hash_line(&secret);
    let prefix = secret[..PREFIX_LEN].to_string();
    (secret, hash, prefix)
}

/// `sha256:<hex>` of a secret, as stored and as `server.keys[].hash` takes it.
pub fn hash_line(secret: &str) -> String {
    format!("sha256:{}", hex::encode(hash_key(secret)))
}

/// A key name: what records, reports and the CLI call it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok { Ok(()) } else { Err(format!("`{name}` is not a valid key name")) }
}

/// Whether a store key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Active,
    /// Refused until enabled again.
    Disabled,
    /// Refused for good; the row stays for its history.
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Disabled => "disabled",
            State::Revoked => "revoked",
        }
    }
}

/// One row of the `gateway_keys` table (key: the name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub name: String,
    /// `sha256:<hex>` of the secret.
    pub hash: String,
    /// The secret's first characters (`sk-router-1a2b`), to tell keys apart in lists.
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub state: State,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Where a key is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `server.keys` in the configuration file (read-only at run time).
    Yaml,
    /// The store (`router keys ...`).
    Store,
}

/// A key the server knows.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Arc<str>,
    pub allow: Option<String>,
    pub limits: Limits,
    pub expires_ms: Option<i64>,
    pub state: State,
    pub origin: Origin,
}

/// Why a presented key is refused (401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
    Disabled,
    Revoked,
    Expired,
}

impl AuthError {
    /// The message the client sees; it names nothing but this key's own state.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::Missing => {
                "missing API key: send it as `Authorization: Bearer <key>`, `x-api-key: <key>` or `x-goog-api-key: <key>`"
            }
            AuthError::Unknown => "invalid API key",
            AuthError::Disabled => "this API key is disabled",
            AuthError::Revoked => "this API key has been revoked",
            AuthError::Expired => "this API key has expired",
        }
    }
}

/// Every key the server accepts, by hash; immutable, swapped whole when the store or the config changes.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: HashMap<[u8; 32], Arc<Entry>, BuildHasherDefault<DigestHasher>>,
}

/// Hashes a SHA-256 digest as its first eight bytes: they are uniform already, so SipHash over all 32 (~250
/// instructions a request) buys nothing. Only digests are hashed with it (the table's keys, and what a
/// presented key hashes to, which nobody can choose).
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }

    /// The slice's length prefix: the same for every digest.
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

impl KeyTable {
    /// The table of YAML keys plus store rows. A name in both is an error (never a silent override); a row
    /// whose hash does not parse is skipped with a warning.
    pub fn build(yaml: &[GatewayKey], rows: &[StoredKey]) -> Result<KeyTable, String> {
        let mut by_hash = HashMap::with_capacity_and_hasher(yaml.len() + rows.len(), Default::default());
        for k in yaml {
            let e = Entry {
                name: Arc::from(k.name.as_str()),
                allow: k.allow.clone(),
                limits: k.limits,
                expires_ms: k.expires_ms,
                state: State::Active,
                origin: Origin::Yaml,
            };
            by_hash.insert(k.hash, Arc::new(e));
        }
        for r in rows {
            if yaml.iter().any(|k| k.name == r.name) {
                return Err(format!("gateway key `{}` is defined both in the configuration and in the store", r.name));
            }
            let Some(hash) = parse_hash(&r.hash) else {
                tracing::warn!("gateway key `{}`: stored hash is unreadable; key ignored", r.name);
                continue;
            };
            let e = Entry {
                name: Arc::from(r.name.as_str()),
                allow: r.allow.clone(),
                limits: r.limits,
                expires_ms: r.expires_ms,
                state: r.state,
                origin: Origin::Store,
            };
            by_hash.insert(hash, Arc::new(e));
        }
        Ok(KeyTable { by_hash })
    }

    /// No keys at all: the server is open (loopback only unless `--allow-open`).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_hash.values()
    }

    /// The key a client presented (`Authorization: Bearer` or `x-api-key`), if usable at `now_ms`.
    /// `Ok(None)`: open mode (no keys).
    pub fn authenticate(&self, presented: Option<&str>, now_ms: i64) -> Result<Option<&Arc<Entry>>, AuthError> {
        if self.by_hash.is_empty() {
            return Ok(None);
        }
        let presented = presented.map(str::trim).filter(|p| !p.is_empty()).ok_or(AuthError::Missing)?;
        let hash = hash_key(presented);
        // The lookup compares digests, not secrets: how long it takes tells at most how much of an unknown
        // secret's SHA-256 matches a stored one, which says nothing about any secret.
        let e = self.by_hash.get(&hash).ok_or(AuthError::Unknown)?;
        match e.state {
            State::Active => {}
            State::Disabled => return Err(AuthError::Disabled),
            State::Revoked => return Err(AuthError::Revoked),
        }
        if e.expires_ms.is_some_and(|x| now_ms >= x) {
            return Err(AuthError::Expired);
        }
        Ok(Some(e))
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;
    use crate::live::limits::{Budget, Period};

    fn row(name: &str, secret: &str, state: State) -> StoredKey {
        StoredKey {
            name: name.into(),
            hash: hash_line(secret),
            prefix: secret[..4].into(),
            allow: None,
            limits: Limits::default(),
            expires_ms: None,
            note: None,
            state,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn generated_secrets_are_stored_as_hash_and_prefix() {
        let (secret, hash, prefix) = generate();
        assert!(secret.starts_with("sk-router-") && secret.len() == 58);
        assert_eq!(parse_hash(&hash), Some(hash_key(&secret)));
        assert!(secret.starts_with(&prefix) && prefix.len() == PREFIX_LEN);
    }

    #[test]
    fn authenticates_yaml_and_store_keys_by_state_and_expiry() {
        let yaml = vec![GatewayKey { name: "y".into(), hash: hash_key("sk-y"), ..Default::default() }];
        let mut exp = row("old", "sk-old", State::Active);
        exp.expires_ms = Some(1_000);
        let rows = vec![
            row("s", "sk-s", State::Active),
            row("d", "sk-d", State::Disabled),
            row("r", "sk-r", State::Revoked),
            exp,
        ];
        let t = KeyTable::build(&yaml, &rows).unwrap();
        assert_eq!(&*t.authenticate(Some("sk-y"), 0).unwrap().unwrap().name, "y");
        let s = t.authenticate(Some(" sk-s "), 0).unwrap().unwrap();
        assert_eq!((&*s.name, s.origin), ("s", Origin::Store));
        assert_eq!(t.authenticate(Some("sk-d"), 0).unwrap_err(), AuthError::Disabled);
        assert_eq!(t.authenticate(Some("sk-r"), 0).unwrap_err(), AuthError::Revoked);
        assert!(t.authenticate(Some("sk-old"), 999).is_ok());
        assert_eq!(t.authenticate(Some("sk-old"), 1_000).unwrap_err(), AuthError::Expired);
        assert_eq!(t.authenticate(Some("nope"), 0).unwrap_err(), AuthError::Unknown);
        assert_eq!(t.authenticate(None, 0).unwrap_err(), AuthError::Missing);
        assert!(KeyTable::default().authenticate(None, 0).unwrap().is_none());
        // A name in both places is an error.
        let e = KeyTable::build(&yaml, &[row("y", "sk-other", State::Active)]).unwrap_err();
        assert!(e.contains("`y`"), "{e}");
    }

    #[test]
    fn expiry_dates_durations_and_never() {
        let utc = TimeZone::UTC;
        let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        assert_eq!(parse_expiry("2026-12-31", 0, &utc, true).unwrap(), Some(ms("2027-01-01T00:00:00Z")));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(parse_expiry("2026-12-31", 0, &berlin, false).unwrap(), Some(ms("2026-12-31T23:00:00Z")));
        assert_eq!(parse_expiry("2026-06-01T12:00:00Z", 0, &utc, false).unwrap(), Some(ms("2026-06-01T12:00:00Z")));
        assert_eq!(parse_expiry("30d", 5, &utc, true).unwrap(), Some(5 + 30 * 86_400_000));
        assert_eq!(parse_expiry("12h", 0, &utc, true).unwrap(), Some(12 * 3_600_000));
        assert_eq!(parse_expiry("never", 0, &utc, true).unwrap(), None);
        for bad in ["30x", "tomorrow", "-5d", "0d", "2026-13-01"] {
            assert!(parse_expiry(bad, 0, &utc, true).is_err(), "{bad}");
        }
        assert!(parse_expiry("30d", 0, &utc, false).is_err());
    }

    #[test]
    fn limits_names_and_zones_are_checked() {
        assert!(check_limits(&Limits { rpm: Some(0), ..Default::default() }).is_err());
        assert!(check_limits(&Limits { max_parallel: Some(0), ..Default::default() }).is_err());
        let b = |usd| Limits { budget: Some(Budget { usd, per: Period::Day }), ..Default::default() };
        assert!(check_limits(&b(-1.0)).is_err() && check_limits(&b(f64::NAN)).is_err());
        assert!(check_limits(&b(0.05)).is_ok());
        assert!(check_name("team-a_1.x").is_ok());
        assert!(check_name("").is_err() && check_name("a b").is_err() && check_name("a/b").is_err());
        assert!(timezone(None).is_ok() && timezone(Some("Asia/Tokyo")).is_ok());
        assert!(timezone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn yaml_keys_take_the_same_limit_fields() {
        let y = |s: &str| -> Result<crate::config::Config, crate::config::ConfigError> {
            crate::config::parse(std::path::Path::new("t.yaml"), s, &|_| None)
        };
        let c = y("server:\n  timezone: Europe/Berlin\n  keys:\n    - name: a\n      key: sk-a\n      rpm: 5\n      tpm: 1000\n      max_parallel: 2\n      budget: 0.5\n      per: day\n      expires: 2030-01-01\n").unwrap();
        let k = &c.gateway_keys[0];
        assert_eq!(k.limits.rpm, Some(5));
        assert_eq!(k.limits.budget, Some(Budget { usd: 0.5, per: Period::Day }));
        assert!(k.expires_ms.is_some());
        let e = y("server:\n  keys:\n    - name: a\n      key: sk-a\n      rpm: 0\n").unwrap_err();
        assert_eq!(e.key, "server.keys[0].rpm");
        let e = y("server:\n  keys:\n    - name: a\n      key: sk-a\n      budget: 5\n").unwrap_err();
        assert!(e.hint.unwrap().contains("per:"));
        let e = y("server:\n  timezone: Nowhere/City\n").unwrap_err();
        assert_eq!(e.key, "server.timezone");
    }
}
