//! Settings resolve one way for every command (`settings`): the real binary with `ROUTER_CONFIG`, `--config` and
//! `--store` in the combinations where the commands used to disagree.

use crate::harness::{run_cli, write};

/// `ROUTER_CONFIG` naming a missing file is an error naming it, for `channels` and `import` as for `serve`,
/// `config check` and `tags` (they used to fall back silently to "no YAML channels").
#[test]
fn a_missing_router_config_file_is_an_error_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.yaml");
    let store = dir.path().join("s.redb");
    let env = [("ROUTER_CONFIG", missing.to_str().unwrap())];
    for args in [
        vec!["channels", "list"],
        vec!["config", "check"],
        vec!["tags", "list"],
        vec!["channels", "add", "--name", "x", "--protocol", "openai", "--key", "sk-x"],
    ] {
        let mut args = args.clone();
        args.extend(["--store", store.to_str().unwrap()]);
        let (code, out, err) = run_cli(&args, &env);
        assert_eq!(code, 1, "{args:?}\nstdout: {out}\nstderr: {err}");
        assert!(err.contains("gone.yaml") && err.contains("cannot read the file"), "{args:?}: {err}");
    }
    assert!(!store.exists(), "nothing was written");
}

/// With `--store` given, commands that need only the store do not read the configuration: a broken file does not
/// stop them (the answer is about the store).
#[test]
fn store_only_commands_do_not_read_the_config_when_the_store_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    write(&broken, "routing:\n  max_attempts: lots\n");
    let store = dir.path().join("none.redb");
    for cmd in ["usage", "requests"] {
        let (code, _, err) =
            run_cli(&[cmd, "--config", broken.to_str().unwrap(), "--store", store.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("no store at"), "{cmd}: {err}");
        assert!(!err.contains("max_attempts"), "{cmd}: {err}");
    }
    // Without --store the configuration says where the store is, so a broken one is reported.
    let (code, _, err) = run_cli(&["usage", "--config", broken.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("broken.yaml:2") && err.contains("routing.max_attempts"), "{err}");
}

/// `store.path` of the configuration is where every command looks, unless `--store` says otherwise.
#[test]
fn store_path_from_the_config_is_used_by_store_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("from-config.redb");
    let cfg = dir.path().join("router.yaml");
    write(&cfg, &format!("store:\n  path: {}\n", store.display()));
    let (code, _, err) = run_cli(&["requests", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no store at {}", store.display())), "{err}");
    let (code, out, err) = run_cli(
        &[
            "channels",
            "add",
            "--name",
            "x",
            "--protocol",
            "openai",
            "--key-env",
            "K",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[("K", "sk-test-123"), ("ROUTER_MASTER_KEY", "")],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(store.exists(), "channels add wrote the store named by store.path");
}

/// `crate::X` paths (grouped ones too) outside comments and test modules, per top-level module of `src/`.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().to_string();
            let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            if module == "main" || module == "lib" || !rel.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            // Comments out, lines joined, so a grouped `use crate::{a, b::c};` across lines counts too.
            let code: Vec<&str> = code.lines().map(|l| l.split("//").next().unwrap()).collect();
            let code = code.join(" ");
            let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect() };
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + 7..];
                let names: Vec<String> = match rest.strip_prefix('{') {
                    // The first segment of each item at the group's top level.
                    Some(group) => {
                        let (mut depth, mut names, mut item_start) = (0, Vec::new(), true);
                        for (j, c) in group.char_indices() {
                            match c {
                                '{' => depth += 1,
                                '}' if depth == 0 => break,
                                '}' => depth -= 1,
                                ',' if depth == 0 => item_start = true,
                                c if item_start && !c.is_whitespace() => {
                                    names.push(ident(&group[j..]));
                                    item_start = false;
                                }
                                _ => {}
                            }
                        }
                        names
                    }
                    None => vec![ident(rest)],
                };
                for name in names {
                    if !name.is_empty() && name != module {
                        edges.entry(module.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    edges
}

/// Only `cli` (and `main.rs`) know the command line.
#[test]
fn the_library_does_not_import_cli() {
    let edges = module_graph();
    let importers: Vec<&String> =
        edges.iter().filter(|(m, to)| *m != "cli" && to.contains("cli")).map(|e| e.0).collect();
    assert!(importers.is_empty(), "modules importing crate::cli: {importers:?}");
}

/// The library's modules import each other without circles.
#[test]
fn the_module_graph_has_no_circles() {
    use std::collections::{BTreeMap, BTreeSet};
    let edges = module_graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            return Some(path[i..].iter().map(|s| s.to_string()).chain([m.to_string()]).collect());
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for to in edges.get(m).into_iter().flatten() {
            if let Some(circle) = visit(to, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(circle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}
