//! The write operation on store-held channels (`channels` table, key = channel name, value = `ChannelConfig`).
//!
//! Owns [`ChannelsApply`]: every change to store channels (import, add, enable, disable, remove) is one of these,
//! applied in one write transaction, in this process or in the server that holds the store (which then rebuilds
//! its routing snapshot). Keys arrive sealed (the client seals them with the store's master key); this module
//! refuses a plaintext key rather than store it, and never sees or needs the master key itself.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{KvTable, Op, Store, StoreError};
use crate::config::ChannelConfig;
use crate::error::user;

/// Creates, replaces and removes store channels, all or nothing.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChannelsApply {
    /// Channels written under their name (replacing a row of that name). Every key must be sealed.
    #[serde(default)]
    pub upserts: Vec<ChannelConfig>,
    /// Names deleted before the upserts are written (a rename removes the old name).
    #[serde(default)]
    pub removes: Vec<String>,
    /// Names that must not exist in the store yet (new channels); checked inside the transaction.
    #[serde(default)]
    pub create: Vec<String>,
}

impl ChannelsApply {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty()
    }
}

impl Op for ChannelsApply {
    const NAME: &'static str = "channels_apply";
    const WRITES: bool = true;
    type Reply = ();

    fn run(self, store: &Store) -> anyhow::Result<()> {
        let mut names = HashSet::new();
        let mut puts = Vec::with_capacity(self.upserts.len());
        for c in &self.upserts {
            if c.name.trim().is_empty() || c.name.contains('/') {
                return Err(user(format!("`{}` is not a valid channel name", c.name))
                    .with_hint("use a non-empty name without `/`")
                    .into());
            }
            if !names.insert(c.name.as_str()) {
                return Err(user(format!("channel `{}` appears twice in one change", c.name))
                    .with_hint("channel names must be unique; use --prefix or rename one of them")
                    .into());
            }
            if !all_sealed(c) {
                // Never name or show the key: only the channel.
                anyhow::bail!("channel `{}` has a key that is not encrypted; refusing to store it", c.name);
            }
            let bytes =
                serde_json::to_vec(c).map_err(|e| StoreError::Encode { table: "channels", message: e.to_string() })?;
            puts.push((c.name.clone(), bytes));
        }
        let absent: Vec<String> = self.create.iter().filter(|n| !self.removes.contains(n)).cloned().collect();
        match store.apply_kv(KvTable::Channels, &absent, &self.removes, &puts) {
            Ok(()) => Ok(()),
            Err(StoreError::Exists { key, .. }) => Err(user(format!("a store channel named `{key}` already exists"))
                .with_hint(format!("pick another name, or `router channels remove {key}` first"))
                .into()),
            Err(e) => Err(e.into()),
        }
    }
}

fn all_sealed(c: &ChannelConfig) -> bool {
    c.keys
        .iter()
        .chain(c.endpoints.iter().flat_map(|e| e.keys.iter()))
        .all(|k| crate::crypto::is_sealed(k.secret().expose()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelProtocol, KeyConfig, Secret};
    use crate::crypto::MasterKey;

    fn ch(name: &str, key: &str) -> ChannelConfig {
        let mut c = ChannelConfig::new(name, ChannelProtocol::Openai);
        c.keys = vec![KeyConfig::Bare(Secret::new(key))];
        c
    }

    fn names(s: &Store) -> Vec<String> {
        s.list_raw(KvTable::Channels).unwrap().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn applies_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let k = MasterKey::generate();
        let op = ChannelsApply {
            upserts: vec![k.seal_channel(&ch("a", "sk-a")), k.seal_channel(&ch("b", "sk-b"))],
            create: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        op.run(&s).unwrap();
        assert_eq!(names(&s), ["a", "b"]);
        // Creating an existing name fails, and the other changes of that operation are not applied.
        let op = ChannelsApply {
            upserts: vec![k.seal_channel(&ch("c", "sk-c")), k.seal_channel(&ch("a", "sk-a2"))],
            removes: vec!["b".into()],
            create: vec!["c".into(), "a".into()],
        };
        let e = op.run(&s).unwrap_err();
        assert!(e.downcast_ref::<crate::error::UserError>().is_some(), "{e:#}");
        assert_eq!(names(&s), ["a", "b"]);
        // A plaintext key is refused without being named.
        let e = ChannelsApply { upserts: vec![ch("d", "sk-plain-d")], ..Default::default() }.run(&s).unwrap_err();
        assert!(!format!("{e:#}").contains("sk-plain-d"));
        assert_eq!(names(&s), ["a", "b"]);
        // Rename: remove the old name and write the new one.
        ChannelsApply {
            upserts: vec![k.seal_channel(&ch("b2", "sk-b"))],
            removes: vec!["b".into()],
            ..Default::default()
        }
        .run(&s)
        .unwrap();
        assert_eq!(names(&s), ["a", "b2"]);
    }
}
