//! Everything the CLI prints goes through here: data to stdout, messages to stderr, tables, JSON.
//!
//! A closed stdout pipe (`router ... | head`) is not an error: writes stop quietly. `NO_COLOR` is respected
//! (tables are plain; nothing here uses colour).

use std::io::{self, Write};

use comfy_table::{ContentArrangement, Table, presets};

/// Prints a line of data to stdout; returns false once stdout is closed.
pub fn line(s: &str) -> bool {
    let mut out = io::stdout().lock();
    writeln!(out, "{s}").and_then(|_| out.flush()).is_ok()
}

/// Prints a message for the user to stderr.
pub fn note(s: &str) {
    let _ = writeln!(io::stderr().lock(), "{s}");
}

/// Prints a value as pretty JSON to stdout.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    line(&text);
    Ok(())
}

/// A table with our house style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    // A fixed width for tests and scripts; otherwise comfy-table follows the terminal.
    if let Some(w) = std::env::var("ROUTER_TABLE_WIDTH").ok().and_then(|w| w.parse().ok()) {
        t.set_width(w);
    }
    t
}

pub fn print_table(t: &Table) {
    line(&t.to_string());
}
