//! Configuration: finding the file, `${VAR}` interpolation, validation, zero-config autodetection.
//!
//! Owns turning text into a [`Config`] that cannot be wrong: every error names the file, the line, the key and
//! what is wrong, with a hint. Must not open the store, start servers or touch the network (`autodetect` builds
//! zero-config channels from the environment and from local servers someone else found).

pub mod autodetect;
pub mod key_rules;
pub mod schema;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use key_rules::{Budget, Limits, Period};
pub use schema::*;

/// A configuration error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted path of the offending key, e.g. `channels[1].base_url`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl crate::error::Hinted for ConfigError {
    fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

/// A gateway key as the server needs it: a name, the SHA-256 of the key, what it may reach and its limits.
#[derive(Debug, Clone, Default)]
pub struct GatewayKey {
    pub name: String,
    pub hash: [u8; 32],
    pub allow: Option<String>,
    pub limits: Limits,
    /// Unix ms after which the key is refused.
    pub expires_ms: Option<i64>,
}

/// A validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it came from; `None` for zero-config.
    pub path: Option<PathBuf>,
    pub raw: RawConfig,
    pub listen: Option<SocketAddr>,
    pub gateway_keys: Vec<GatewayKey>,
    /// Keys of the admin API (`server.admin_keys`), hashed.
    pub admin_keys: Vec<AdminKey>,
}

/// An admin API key as the server needs it: a name and the SHA-256 of the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminKey {
    pub name: String,
    pub hash: [u8; 32],
}

impl Config {
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| "127.0.0.1:4000".parse().expect("valid default"))
    }
}

/// SHA-256 of a gateway key, as stored and compared.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Where the configuration comes from: `--config`, `ROUTER_CONFIG`, `./router.yaml`, then
/// `~/.config/router/config.yaml`. `None` when none exists (zero-config).
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ROUTER_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("router.yaml");
    if local.is_file() {
        return Some(local);
    }
    let home = dirs_home()?.join(".config/router/config.yaml");
    home.is_file().then_some(home)
}

pub(crate) fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// Reads, interpolates and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read the file: {e}"),
        hint: Some("pass an existing file with --config, or run without one to use zero-config".into()),
    })?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

/// Parses configuration text; `env` looks up variables (injected for tests).
pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let err = |line: Option<usize>, key: &str, message: String, hint: Option<&str>| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
        hint: hint.map(str::to_string),
    };
    // Placeholders stand in for `${...}` so that YAML syntax (e.g. `[${KEY}]`) never depends on them.
    let (protected, exprs) = protect(text);
    // Pass 1: the typed parse of the text as written, so unknown keys and wrong types carry their line.
    if text.trim().is_empty() {
        return validate(path, text, RawConfig::default());
    }
    if let Err(e) = serde_yaml::from_str::<RawConfig>(&protected) {
        let (key, message) = split_yaml_error(&e);
        let hint = if message.contains("unknown field") {
            "see config.example.yaml for every key and where it belongs"
        } else {
            "check the value's type against config.example.yaml"
        };
        return Err(err(e.location().map(|l| l.line()), &key, message, Some(hint)));
    }
    // Pass 2: interpolate every string, then take the typed view of the result.
    let mut value: serde_yaml::Value = serde_yaml::from_str(&protected).map_err(|e| {
        let (key, message) = split_yaml_error(&e);
        err(e.location().map(|l| l.line()), &key, message, None)
    })?;
    interpolate_value(&mut value, &mut String::new(), &|key, s| {
        interpolate(&unprotect(s, &exprs), env).map_err(|var| {
            err(
                locate(text, &format!("${{{var}")),
                key,
                format!("environment variable `{var}` is not set"),
                Some(&format!("export {var}=..., or write ${{{var}:-default}} to give a default")),
            )
        })
    })?;
    let raw: RawConfig = serde_yaml::from_value(value).map_err(|e| {
        let (key, message) = split_yaml_error(&e);
        err(None, &key, message, Some("check the value's type against config.example.yaml"))
    })?;
    validate(path, text, raw)
}

const PLACEHOLDER: &str = "__ROUTER_ENV_";

/// Replaces every `${...}` (not `$${`) by a plain-scalar placeholder, on the same line; returns the expressions.
fn protect(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut exprs = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let escaped = i > 0 && rest.as_bytes()[i - 1] == b'$';
        let close = rest[i..].find('}').filter(|&c| !rest[i..i + c].contains('\n'));
        match close {
            Some(c) if !escaped => {
                out.push_str(&rest[..i]);
                out.push_str(&format!("{PLACEHOLDER}{}__", exprs.len()));
                exprs.push(rest[i..i + c + 1].to_string());
                rest = &rest[i + c + 1..];
            }
            _ => {
                out.push_str(&rest[..i + 2]);
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    (out, exprs)
}

/// Puts the `${...}` expressions back in place of their placeholders.
fn unprotect(s: &str, exprs: &[String]) -> String {
    let mut out = s.to_string();
    for (n, e) in exprs.iter().enumerate().rev() {
        out = out.replace(&format!("{PLACEHOLDER}{n}__"), e);
    }
    out
}

/// serde_yaml says `channels[0].keys: invalid type ... at line 3 column 5`; split off the key path.
fn split_yaml_error(e: &serde_yaml::Error) -> (String, String) {
    let mut msg = e.to_string();
    if let Some(i) = msg.find(" at line ") {
        msg.truncate(i);
    }
    match msg.split_once(": ") {
        Some((key, rest)) if !key.contains(' ') => (key.to_string(), rest.to_string()),
        _ => (String::new(), msg),
    }
}

fn interpolate_value<E>(
    v: &mut serde_yaml::Value,
    path: &mut String,
    f: &dyn Fn(&str, &str) -> Result<String, E>,
) -> Result<(), E> {
    use serde_yaml::Value;
    match v {
        Value::String(s) if s.contains(PLACEHOLDER) || s.contains("${") => *s = f(path, s)?,
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate_value(item, path, f)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                interpolate_value(item, path, f)?;
                path.truncate(len);
            }
        }
        Value::Tagged(t) => interpolate_value(&mut t.value, path, f)?,
        _ => {}
    }
    Ok(())
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`. Returns the missing variable's name.
pub fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let inner = &rest[i + 2..i + end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(name.to_string()),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The 1-based line of the first occurrence of `needle`.
fn locate(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The line of `key: value` for a named channel (used for errors found after parsing).
fn locate_in_channel(text: &str, channel: &str, needle: &str) -> Option<usize> {
    let start = text
        .lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with("name:") && t["name:".len()..].trim().trim_matches(['"', '\'']) == channel
        })
        .unwrap_or(0);
    text.lines().skip(start).position(|l| l.contains(needle)).map(|i| i + start + 1)
}

fn validate(path: &Path, text: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let err = |line, key: String, message: String, hint: &str| ConfigError {
        file: path.to_path_buf(),
        line,
        key,
        message,
        hint: Some(hint.to_string()),
    };
    let listen = raw.server.listen.parse::<SocketAddr>().map_err(|_| {
        err(
            locate(text, "listen:"),
            "server.listen".into(),
            format!("`{}` is not an address", raw.server.listen),
            "write host:port, e.g. 127.0.0.1:4000",
        )
    })?;
    let tz = key_rules::timezone(raw.server.timezone.as_deref()).map_err(|message| {
        err(
            locate(text, "timezone:"),
            "server.timezone".into(),
            message,
            "write an IANA name such as UTC, Europe/Berlin or America/New_York",
        )
    })?;
    if let Some(url) = &raw.shared_state.redis
        && let Err(e) = redis::Client::open(url.as_str())
    {
        // The URL may carry a password: name the field, not the value.
        return Err(err(
            locate(text, "redis:"),
            "shared_state.redis".into(),
            format!("not a Redis URL: {}", e.detail().unwrap_or(e.category())),
            "write redis://host:6379/0 or rediss://host:6379/0 (TLS)",
        ));
    }
    if let Some(url) = &raw.store.postgres {
        let lower = url.trim().to_ascii_lowercase();
        let bad = if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            Some("not a PostgreSQL URL (it must start with postgres:// or postgresql://)".to_string())
        } else {
            url.trim().parse::<postgres::Config>().err().map(|e| format!("not a PostgreSQL URL: {e}"))
        };
        if let Some(message) = bad {
            // The URL may carry a password: name the field, not the value.
            return Err(err(
                locate(text, "postgres:"),
                "store.postgres".into(),
                message,
                "write postgres://user:password@host:5432/database",
            ));
        }
    }
    // A key given in plain text is hashed at load; a `hash` must be `sha256:<hex>`.
    let key_hash = |plain: &Option<Secret>, hash: &Option<String>, name: &str, key: &str| match (plain, hash) {
        (Some(plain), None) if !plain.is_empty() => Ok(hash_key(plain.expose())),
        (None, Some(h)) => key_rules::parse_hash(h).ok_or_else(|| {
            err(
                locate(text, h),
                format!("{key}.hash"),
                "not a `sha256:<64 hex digits>` hash".into(),
                "generate one with `router keys hash`",
            )
        }),
        _ => Err(err(
            locate(text, name),
            key.to_string(),
            "give exactly one of `key` or `hash`, not empty".into(),
            "key: ${ROUTER_KEY} (hashed at load) or hash: sha256:...",
        )),
    };
    if let Some(e) = &raw.telemetry.otlp_endpoint
        && let Err(message) = otlp_traces_url(e)
    {
        return Err(err(
            locate(text, "otlp_endpoint:"),
            "telemetry.otlp_endpoint".into(),
            message,
            "write the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318",
        ));
    }
    let mut admin_keys: Vec<AdminKey> = Vec::new();
    for (i, k) in raw.server.admin_keys.iter().enumerate() {
        let key = format!("server.admin_keys[{i}]");
        if admin_keys.iter().any(|a| a.name == k.name) {
            return Err(err(
                locate(text, &k.name),
                key,
                format!("duplicate admin key name `{}`", k.name),
                "give every key its own name",
            ));
        }
        let hash = key_hash(&k.key, &k.hash, &k.name, &key)?;
        admin_keys.push(AdminKey { name: k.name.clone(), hash });
    }
    if let Some(m) = &raw.server.metrics_listen
        && m.parse::<SocketAddr>().is_err()
    {
        return Err(err(
            locate(text, "metrics_listen:"),
            "server.metrics_listen".into(),
            format!("`{m}` is not an address"),
            "write host:port, e.g. 127.0.0.1:9464",
        ));
    }
    raw.alerts.check().map_err(|(field, message, hint)| {
        err(locate(text, &format!("{field}:")), format!("alerts.{field}"), message, hint)
    })?;
    let mut gateway_keys = Vec::new();
    let mut key_names = HashSet::new();
    for (i, k) in raw.server.keys.iter().enumerate() {
        let key = format!("server.keys[{i}]");
        if !key_names.insert(k.name.as_str()) {
            return Err(err(
                locate(text, &k.name),
                key,
                format!("duplicate gateway key name `{}`", k.name),
                "give every key its own name",
            ));
        }
        let hash = key_hash(&k.key, &k.hash, &k.name, &key)?;
        let (limits, expires_ms) = key_rules::yaml_limits(k, &tz).map_err(|(field, message, hint)| {
            err(locate(text, &format!("{field}:")), format!("{key}.{field}"), message, &hint)
        })?;
        gateway_keys.push(GatewayKey { name: k.name.clone(), hash, allow: k.allow.clone(), limits, expires_ms });
    }
    let mut names = HashSet::new();
    for (i, ch) in raw.channels.iter().enumerate() {
        let at = |field: &str| format!("channels[{i}]{}{field}", if field.is_empty() { "" } else { "." });
        validate_channel(ch, &mut names).map_err(|(field, message, hint)| {
            let needle = if field.is_empty() { format!("name: {}", ch.name) } else { format!("{field}:") };
            let line = if field.is_empty() {
                locate_in_channel(text, &ch.name, "name:")
            } else {
                locate_in_channel(text, &ch.name, &needle)
            };
            err(line, at(&field), message, &hint)
        })?;
    }
    Ok(Config { path: Some(path.to_path_buf()), raw, listen: Some(listen), gateway_keys, admin_keys })
}

/// Checks one channel; on error returns (field, message, hint). `names` collects channel names for uniqueness.
pub fn validate_channel<'a>(
    ch: &'a ChannelConfig,
    names: &mut HashSet<&'a str>,
) -> Result<(), (String, String, String)> {
    let fail = |f: &str, m: String, h: &str| Err((f.to_string(), m, h.to_string()));
    if ch.name.trim().is_empty() || ch.name.contains('/') {
        return fail("name", format!("`{}` is not a valid channel name", ch.name), "use a non-empty name without `/`");
    }
    if !names.insert(ch.name.as_str()) {
        return fail("", format!("duplicate channel name `{}`", ch.name), "channel names must be unique");
    }
    if ch.base_url.is_some() && !ch.endpoints.is_empty() {
        return fail(
            "base_url",
            "a channel has either `base_url` + `keys` or `endpoints`, not both".into(),
            "move base_url and keys into an endpoint",
        );
    }
    if ch.endpoints.is_empty() {
        let url = ch.base_url.as_deref().or(ch.protocol.default_base_url());
        let Some(url) = url else {
            return fail("base_url", "missing; this protocol has no default URL".into(), "add base_url: https://...");
        };
        check_url(url).or_else(|m| fail("base_url", m, "write a full http(s) URL"))?;
        check_keys(&ch.keys, url).or_else(|(f, m, h)| fail(&f, m, &h))?;
    }
    let mut eps = HashSet::new();
    for ep in &ch.endpoints {
        if !eps.insert(ep.name.as_str()) {
            return fail(
                "endpoints",
                format!("duplicate endpoint name `{}`", ep.name),
                "endpoint names must be unique in a channel",
            );
        }
        check_url(&ep.base_url).or_else(|m| fail("base_url", m, "write a full http(s) URL"))?;
        check_keys(&ep.keys, &ep.base_url).or_else(|(f, m, h)| fail(&f, m, &h))?;
    }
    if ch.protocol == ChannelProtocol::Azure && ch.models.is_empty() && ch.aliases.is_empty() {
        return fail(
            "models",
            "an azure channel needs its deployment names in `models`".into(),
            "models: [my-gpt4o-deployment]",
        );
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => Ok(()),
        Ok(u) => Err(format!("`{url}` is not an http(s) URL (scheme `{}`)", u.scheme())),
        Err(e) => Err(format!("`{url}` is not a URL: {e}")),
    }
}

fn check_keys(keys: &[KeyConfig], url: &str) -> Result<(), (String, String, String)> {
    if keys.is_empty() && !is_local_url(url) {
        return Err((
            "keys".into(),
            "no upstream key for a remote endpoint".into(),
            "add keys: [${MY_PROVIDER_KEY}] (keys may be omitted only for local endpoints)".into(),
        ));
    }
    let mut seen = HashSet::new();
    for k in keys {
        if k.secret().is_empty() {
            return Err((
                "keys".into(),
                "a key is empty".into(),
                "check the environment variable it comes from".into(),
            ));
        }
        if let Some(n) = k.name()
            && !seen.insert(n)
        {
            return Err((
                "keys".into(),
                format!("duplicate key name `{n}`"),
                "key names must be unique in an endpoint".into(),
            ));
        }
    }
    Ok(())
}

/// True for loopback hosts: such channels are tagged `local` and may have no key.
pub fn is_local_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else { return false };
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The collector URL: the configured one, with `/v1/traces` when it names no path.
pub fn otlp_traces_url(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint.trim()).map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{endpoint}` is not an http(s) URL"));
    }
    Ok(if url.path() == "/" { format!("{}/v1/traces", endpoint.trim().trim_end_matches('/')) } else { url.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY_A" => Some("sk-aaa".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("cfg.yaml"), text, &env)
    }

    #[test]
    fn interpolation_with_defaults_and_escapes() {
        assert_eq!(interpolate("a${KEY_A}b", &env).unwrap(), "ask-aaab");
        assert_eq!(interpolate("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("$${KEY_A}", &env).unwrap(), "${KEY_A}");
        assert_eq!(interpolate("${NOPE}", &env).unwrap_err(), "NOPE");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e =
            parse_str("channels:\n  - name: a\n    base_url: http://127.0.0.1:1/v1\n    prioirty: 3\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("unknown field `prioirty`"), "{e}");
        assert_eq!(e.key, "channels[0]");
        assert!(e.hint.is_some());
    }

    #[test]
    fn variables_work_inside_flow_sequences_and_quotes() {
        let c = parse_str(
            "channels:\n  - name: a\n    base_url: \"https://x.example/v1\"\n    keys: [${KEY_A}, \"${NOPE:-dflt}\"]\n",
        )
        .unwrap();
        let keys: Vec<&str> = c.raw.channels[0].keys.iter().map(|k| k.secret().expose()).collect();
        assert_eq!(keys, ["sk-aaa", "dflt"]);
    }

    #[test]
    fn wrong_type_is_located() {
        let e = parse_str("routing:\n  max_attempts: lots\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key, "routing.max_attempts");
    }

    #[test]
    fn missing_variable_is_located() {
        let e = parse_str("channels:\n  - name: a\n    keys:\n      - ${MISSING_KEY}\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key, "channels[0].keys[0]");
        assert!(e.message.contains("MISSING_KEY"));
    }

    #[test]
    fn duplicate_channel_names_are_rejected() {
        let text = "channels:\n  - name: a\n    keys: [k1]\n  - name: a\n    keys: [k2]\n";
        let e = parse_str(text).unwrap_err();
        assert!(e.message.contains("duplicate channel name"), "{e}");
    }

    #[test]
    fn bad_url_is_rejected_with_its_line() {
        let text = "channels:\n  - name: a\n    base_url: ftp://x\n    keys: [k]\n";
        let e = parse_str(text).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("not an http(s) URL"), "{e}");
    }

    #[test]
    fn remote_channel_needs_a_key_local_does_not() {
        assert!(parse_str("channels:\n  - name: a\n    base_url: https://x.example/v1\n").is_err());
        assert!(parse_str("channels:\n  - name: a\n    base_url: http://127.0.0.1:11434/v1\n").is_ok());
    }

    #[test]
    fn gateway_keys_are_hashed() {
        let c = parse_str("server:\n  keys:\n    - name: me\n      key: ${KEY_A}\n").unwrap();
        assert_eq!(c.gateway_keys[0].hash, hash_key("sk-aaa"));
    }

    #[test]
    fn admin_keys_are_hashed_and_checked() {
        let hash = crate::keys::hash_line("sk-b");
        let c = parse_str(&format!(
            "server:\n  admin_keys:\n    - {{name: a, key: sk-a}}\n    - {{name: b, hash: \"{hash}\"}}\n"
        ))
        .unwrap();
        assert_eq!(
            c.admin_keys,
            vec![
                AdminKey { name: "a".into(), hash: hash_key("sk-a") },
                AdminKey { name: "b".into(), hash: hash_key("sk-b") }
            ]
        );
        let e = parse_str("server:\n  admin_keys:\n    - {name: a, key: x}\n    - {name: a, key: y}\n").unwrap_err();
        assert!(e.message.contains("duplicate admin key"), "{e}");
        let e = parse_str("server:\n  admin_keys:\n    - {name: a, hash: md5:1}\n").unwrap_err();
        assert_eq!(e.key, "server.admin_keys[0].hash");
        let e = parse_str("server:\n  admin_keys:\n    - {name: a}\n").unwrap_err();
        assert_eq!(e.key, "server.admin_keys[0]");
        let e = parse_str("telemetry:\n  otlp_endpoint: ftp://x\n").unwrap_err();
        assert_eq!(e.key, "telemetry.otlp_endpoint");
    }
}
