//! Upstream keys encrypted at rest.
//!
//! Owns the master key (32 bytes: `ROUTER_MASTER_KEY` as hex or base64, else the file `<store>.key`, created
//! with mode 0600 from the OS random source on first use) and the sealed form of a key,
//! `enc:v1:<base64(nonce || ciphertext)>` (XChaCha20-Poly1305, random 24-byte nonce). It must not decide *when*
//! to encrypt (the store does) and never puts a key, plaintext or sealed, into an error message.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::config::{ChannelConfig, KeyConfig, Secret};

/// Environment variable that overrides the key file.
pub const ENV: &str = "ROUTER_MASTER_KEY";
/// Prefix of a sealed key, with its format version.
pub const PREFIX: &str = "enc:v1:";
/// Binds ciphertexts to their use: a sealed value from elsewhere does not open here.
const AAD: &[u8] = b"router upstream key v1";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "upstream keys in the store are encrypted, but the master key file `{}` is missing and {ENV} is not set",
        .0.display()
    )]
    MissingKey(PathBuf),
    #[error("the master key in {0} is not 32 bytes of hex or base64")]
    BadMasterKey(String),
    #[error("cannot {action} the master key file `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a stored key is not in a format this version knows (expected `{PREFIX}...`)")]
    UnknownFormat,
    #[error("a stored key cannot be decrypted: wrong master key, or the store was altered")]
    Decrypt,
}

impl CryptoError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            CryptoError::MissingKey(_) => {
                Some("restore the .key file next to the store from a backup, or set ROUTER_MASTER_KEY to its content")
            }
            CryptoError::BadMasterKey(_) => Some("generate one with `openssl rand -hex 32`"),
            CryptoError::Decrypt => Some("check that ROUTER_MASTER_KEY / the .key file belongs to this store"),
            _ => None,
        }
    }
}

/// The 32-byte key that seals upstream keys. `Debug` does not show it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(*****)")
    }
}

/// `<store path>.key`.
pub fn key_path(store_path: &Path) -> PathBuf {
    let mut s = store_path.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

/// True for a value in the sealed format.
pub fn is_sealed(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// True if any key of the channel is sealed.
pub fn channel_is_sealed(c: &ChannelConfig) -> bool {
    all_keys(c).any(|k| is_sealed(k.secret().expose()))
}

fn all_keys(c: &ChannelConfig) -> impl Iterator<Item = &KeyConfig> {
    c.keys.iter().chain(c.endpoints.iter().flat_map(|e| e.keys.iter()))
}

impl MasterKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }

    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        MasterKey(b)
    }

    /// 64 hex digits, or base64 (standard or URL-safe) of 32 bytes; surrounding whitespace ignored.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CryptoError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            STANDARD.decode(t).or_else(|_| URL_SAFE.decode(t)).or_else(|_| URL_SAFE_NO_PAD.decode(t)).ok()
        };
        bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(MasterKey)
            .ok_or_else(|| CryptoError::BadMasterKey(origin.into()))
    }

    /// The key for a store that must already have one (it holds sealed keys): `ROUTER_MASTER_KEY`, else the file.
    pub fn load(store_path: &Path) -> Result<Self, CryptoError> {
        Self::load_with(store_path, std::env::var(ENV).ok())
    }

    /// The key for a store, creating `<store>.key` (mode 0600) when neither it nor `ROUTER_MASTER_KEY` exists.
    pub fn load_or_create(store_path: &Path) -> Result<Self, CryptoError> {
        Self::load_or_create_with(store_path, std::env::var(ENV).ok())
    }

    fn load_with(store_path: &Path, env: Option<String>) -> Result<Self, CryptoError> {
        if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
            return Self::parse(&v, ENV);
        }
        let path = key_path(store_path);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CryptoError::MissingKey(path)),
            Err(source) => Err(CryptoError::Io { action: "read", path, source }),
        }
    }

    fn load_or_create_with(store_path: &Path, env: Option<String>) -> Result<Self, CryptoError> {
        match Self::load_with(store_path, env) {
            Err(CryptoError::MissingKey(path)) => Self::create(&path),
            other => other,
        }
    }

    fn create(path: &Path) -> Result<Self, CryptoError> {
        let io = |action, source| CryptoError::Io { action, path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        let key = Self::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(path) {
            Ok(mut f) => {
                writeln!(f, "{}", hex::encode(key.0)).and_then(|_| f.sync_all()).map_err(|e| io("write", e))?;
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| io("read", e))?;
                Self::parse(&text, &path.display().to_string())
            }
            Err(e) => Err(io("create", e)),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&self.0).expect("32-byte key")
    }

    /// Seals a plaintext: `enc:v1:<base64(nonce || ciphertext)>`. Each call uses a fresh nonce.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = chacha20poly1305::aead::Payload { msg: plaintext.as_bytes(), aad: AAD };
        let ct = self.cipher().encrypt(&XNonce::from(nonce), payload).expect("a key is far below the AEAD size limit");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens a sealed value.
    pub fn decrypt(&self, sealed: &str) -> Result<Secret, CryptoError> {
        let b64 = sealed.strip_prefix(PREFIX).ok_or(CryptoError::UnknownFormat)?;
        let raw = STANDARD.decode(b64.trim()).map_err(|_| CryptoError::Decrypt)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        let payload = chacha20poly1305::aead::Payload { msg: ct, aad: AAD };
        let plain = self.cipher().decrypt(&nonce, payload).map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| CryptoError::Decrypt)
    }

    /// The channel with every key sealed (keys already sealed are kept as they are).
    pub fn seal_channel(&self, c: &ChannelConfig) -> ChannelConfig {
        let mut out = c.clone();
        for_each_key(&mut out, |s| {
            if !is_sealed(s.expose()) {
                *s = Secret::new(self.encrypt(s.expose()));
            }
            Ok(())
        })
        .expect("sealing cannot fail");
        out
    }

    /// The channel with every sealed key opened (plaintext keys, e.g. from an older store, are kept).
    pub fn open_channel(&self, c: &ChannelConfig) -> Result<ChannelConfig, CryptoError> {
        let mut out = c.clone();
        for_each_key(&mut out, |s| {
            if is_sealed(s.expose()) {
                *s = self.decrypt(s.expose())?;
            }
            Ok(())
        })?;
        Ok(out)
    }
}

fn for_each_key(
    c: &mut ChannelConfig,
    mut f: impl FnMut(&mut Secret) -> Result<(), CryptoError>,
) -> Result<(), CryptoError> {
    for k in c.keys.iter_mut().chain(c.endpoints.iter_mut().flat_map(|e| e.keys.iter_mut())) {
        match k {
            KeyConfig::Bare(s) => f(s)?,
            KeyConfig::Named { key, .. } => f(key)?,
        }
    }
    Ok(())
}

/// [`MasterKey::seal_channel`] as a free function.
pub fn seal_channel(key: &MasterKey, c: &ChannelConfig) -> ChannelConfig {
    key.seal_channel(c)
}

/// [`MasterKey::open_channel`] as a free function.
pub fn open_channel(key: &MasterKey, c: &ChannelConfig) -> Result<ChannelConfig, CryptoError> {
    key.open_channel(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelProtocol, EndpointConfig};

    fn channel() -> ChannelConfig {
        let mut c = ChannelConfig::new("c", ChannelProtocol::Openai);
        c.keys = vec![
            KeyConfig::Bare(Secret::new("sk-one")),
            KeyConfig::Named { name: Some("b".into()), key: Secret::new("sk-two"), enabled: false },
        ];
        c.endpoints = vec![EndpointConfig {
            name: "e".into(),
            base_url: "https://x".into(),
            keys: vec![KeyConfig::Bare(Secret::new("sk-three"))],
            priority: 0,
            weight: 1,
            failover_enabled: true,
            headers: Default::default(),
            connect_timeout: None,
            first_byte_timeout: None,
            idle_timeout: None,
            fast_test_path: None,
        }];
        c
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let k = MasterKey::generate();
        let a = k.encrypt("sk-secret");
        let b = k.encrypt("sk-secret");
        assert!(a.starts_with(PREFIX));
        assert_ne!(a, b);
        assert!(!a.contains("sk-secret"));
        assert_eq!(k.decrypt(&a).unwrap().expose(), "sk-secret");
        assert_eq!(k.decrypt(&k.encrypt("")).unwrap().expose(), "");
    }

    #[test]
    fn wrong_key_fails_cleanly() {
        let sealed = MasterKey::generate().encrypt("sk-secret");
        let err = MasterKey::generate().decrypt(&sealed).unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt));
        assert!(!err.to_string().contains("sk-secret"));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let k = MasterKey::generate();
        let sealed = k.encrypt("sk-secret");
        let mut raw = STANDARD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(matches!(k.decrypt(&format!("{PREFIX}{}", STANDARD.encode(&raw))), Err(CryptoError::Decrypt)));
        raw[last] ^= 1;
        raw[NONCE_LEN] ^= 0x80;
        assert!(matches!(k.decrypt(&format!("{PREFIX}{}", STANDARD.encode(&raw))), Err(CryptoError::Decrypt)));
        assert!(matches!(k.decrypt("enc:v1:!!!"), Err(CryptoError::Decrypt)));
        assert!(matches!(k.decrypt("enc:v1:AAAA"), Err(CryptoError::Decrypt)));
        assert!(matches!(k.decrypt("sk-plain"), Err(CryptoError::UnknownFormat)));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("sub/router.redb");
        assert!(matches!(MasterKey::load_with(&store, None), Err(CryptoError::MissingKey(_))));
        let k1 = MasterKey::load_or_create_with(&store, None).unwrap();
        let path = key_path(&store);
        assert_eq!(path, dir.path().join("sub/router.redb.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let k2 = MasterKey::load_or_create_with(&store, None).unwrap();
        let k3 = MasterKey::load_with(&store, None).unwrap();
        let sealed = k1.encrypt("sk-x");
        assert_eq!(k2.decrypt(&sealed).unwrap().expose(), "sk-x");
        assert_eq!(k3.decrypt(&sealed).unwrap().expose(), "sk-x");
    }

    #[test]
    fn missing_key_with_sealed_rows_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("router.redb");
        let k = MasterKey::load_or_create_with(&store, None).unwrap();
        let sealed = k.seal_channel(&channel());
        std::fs::remove_file(key_path(&store)).unwrap();
        let err = MasterKey::load_with(&store, None).unwrap_err();
        assert!(matches!(err, CryptoError::MissingKey(_)));
        assert!(err.to_string().contains("router.redb.key"), "{err}");
        assert!(err.hint().is_some());
        assert!(channel_is_sealed(&sealed));
    }

    #[test]
    fn env_key_wins_in_hex_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("router.redb");
        let bytes = [7u8; 32];
        let from_hex = MasterKey::load_or_create_with(&store, Some(hex::encode(bytes))).unwrap();
        let from_b64 = MasterKey::load_with(&store, Some(STANDARD.encode(bytes))).unwrap();
        assert!(!key_path(&store).exists(), "no file is created when the env var is set");
        assert_eq!(from_b64.decrypt(&from_hex.encrypt("k")).unwrap().expose(), "k");
        assert!(matches!(MasterKey::load_with(&store, Some("short".into())), Err(CryptoError::BadMasterKey(_))));
    }

    #[test]
    fn channels_seal_and_open_every_key() {
        let k = MasterKey::generate();
        let c = channel();
        let sealed = seal_channel(&k, &c);
        assert!(sealed.keys.iter().chain(&sealed.endpoints[0].keys).all(|k| is_sealed(k.secret().expose())));
        assert_eq!(sealed.keys[1].name(), Some("b"));
        assert!(!sealed.keys[1].enabled());
        assert_eq!(k.seal_channel(&sealed), sealed, "sealing twice changes nothing");
        assert_eq!(open_channel(&k, &sealed).unwrap(), c);
        assert!(matches!(MasterKey::generate().open_channel(&sealed), Err(CryptoError::Decrypt)));
    }
}
