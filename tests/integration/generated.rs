//! completions/ and man/ are generated from the clap definitions; this fails when the committed copies are stale.

use crate::harness::Cli;

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let out = Cli::new().args(["generate", "--out-dir"]).arg(dir.path()).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for sub in ["completions", "man"] {
        for entry in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let entry = entry.unwrap();
            let committed = root.join(sub).join(entry.file_name());
            let fresh = std::fs::read(entry.path()).unwrap();
            let old = std::fs::read(&committed).unwrap_or_default();
            assert!(
                fresh == old,
                "{} is stale: run `cargo run -- generate --out-dir .` and commit the result",
                committed.display()
            );
            checked += 1;
        }
        // No leftover pages for commands that no longer exist.
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                dir.path().join(sub).join(&name).exists(),
                "{sub}/{} is not generated any more: remove it",
                name.to_string_lossy()
            );
        }
    }
    assert!(checked >= 4);
}
