//! `router generate`: shell completions (bash, zsh, fish) and man pages from the clap definitions.
//!
//! The files in `completions/` and `man/` are this command's output; a test regenerates them and fails when the
//! committed copies are stale.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository root: writes completions/ and man/ below it.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for (path, content) in render()? {
        let full = args.out_dir.join(&path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, content)?;
    }
    Ok(())
}

/// Every generated file: (path relative to the repo root, content).
pub fn render() -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for (shell, name) in [(Shell::Bash, "router.bash"), (Shell::Zsh, "_router"), (Shell::Fish, "router.fish")] {
        let mut cmd = crate::cli::Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "router", &mut buf);
        files.push((Path::new("completions").join(name), buf));
    }
    let cmd = crate::cli::Cli::command();
    man_pages(&cmd, "router", &mut files)?;
    Ok(files)
}

fn man_pages(cmd: &clap::Command, name: &str, files: &mut Vec<(PathBuf, Vec<u8>)>) -> anyhow::Result<()> {
    let cmd = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    files.push((Path::new("man").join(format!("{name}.1")), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), files)?;
    }
    Ok(())
}
