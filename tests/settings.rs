//! Settings resolve one way for every command (`settings`): the real binary with `ROUTER_CONFIG`, `--config` and
//! `--store` in the combinations where the commands used to disagree.

mod common;

use common::{run_cli, write};

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
