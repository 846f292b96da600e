//! config.example.yaml is the reference for every key: it must parse, and every key of the schema must be in it.

use std::collections::BTreeSet;

fn keys_of(v: &serde_yaml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().unwrap_or("?");
                let path = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                out.insert(path.clone());
                keys_of(v, &path, out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for i in items {
                keys_of(i, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// `${...}` -> `X`, so plain YAML can read the file.
fn neutralise(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let line_end = rest[i..].find('\n').map(|e| i + e).unwrap_or(rest.len());
        match rest[i..line_end].find('}') {
            Some(e) => {
                out.push_str(&rest[..i]);
                out.push('X');
                rest = &rest[i + e + 1..];
            }
            None => {
                out.push_str(&rest[..i + 2]);
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn example_config_parses_and_documents_every_key() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = router::config::parse(&path, &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.raw.channels.len() >= 4);
    // Every key the schema can serialise (with every optional part filled in) appears in the example.
    let mut full = cfg.raw.clone();
    let ch = &mut full.channels[0];
    ch.api_version = Some("v".into());
    ch.source = None;
    let documented: BTreeSet<String> = {
        let mut s = BTreeSet::new();
        keys_of(&serde_yaml::from_str(&neutralise(&text)).unwrap(), "", &mut s);
        s
    };
    let mut schema = BTreeSet::new();
    keys_of(&serde_yaml::to_value(&full).unwrap(), "", &mut schema);
    let internal = ["channels[].source", "channels[].disabled_reason"];
    let missing: Vec<_> =
        schema.iter().filter(|k| !documented.contains(*k) && !internal.contains(&k.as_str())).collect();
    assert!(missing.is_empty(), "config.example.yaml does not document: {missing:?}");
}
