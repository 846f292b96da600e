//! `router usage`: token and cost totals from the store, grouped and filtered; a table, JSON or CSV.
//!
//! Reaches the store directly or through a running server's control socket (same query, same output).

use super::args::{RecordFilter, TimeRange};
use super::output;
use crate::report::{self, GroupBy, SortBy, Source, UsageQuery, UsageReport};
use crate::settings::Settings;
use crate::store::Access;
use crate::store::tables::Counters;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: TimeRange,
    /// Group rows by these (repeatable, in order). `token` groups by key fingerprint and lists its names.
    #[arg(long, value_enum, value_name = "BY")]
    pub group_by: Vec<GroupBy>,
    #[command(flatten)]
    pub filter: RecordFilter,
    /// Only the first N rows, largest first (by tokens unless `--sort` says otherwise), e.g.
    /// `--group-by session --top 10`.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// Order rows largest first by this.
    #[arg(long, value_enum, value_name = "BY")]
    pub sort: Option<SortBy>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let (since_ms, until_ms) = args.range.resolve(crate::usage::now_ms())?;
    let mut group_by = Vec::new();
    for g in args.group_by {
        if !group_by.contains(&g) {
            group_by.push(g);
        }
    }
    let query = UsageQuery {
        since_ms,
        until_ms,
        group_by,
        filters: args.filter.into(),
        utc: args.range.utc,
        top: args.top,
        sort: args.sort,
    };
    let access = Access::open_existing(&settings.store_path()?)?;
    let report = access.run(query)?;
    if report.source == Source::Daily {
        output::note("note: the range reaches past store.retention_days; totals come from daily rollups (UTC days)");
    }
    if args.json {
        output::json(&report::usage_json(&report))
    } else if args.csv {
        print_csv(&report);
        Ok(())
    } else {
        print_table(&report);
        Ok(())
    }
}

fn hit_rate_cell(c: &Counters) -> String {
    report::hit_rate(c).map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "-".into())
}

fn group_headers(r: &UsageReport) -> Vec<String> {
    let mut h: Vec<String> = Vec::new();
    for g in &r.group_by {
        h.push(g.as_str().into());
        if *g == GroupBy::Token {
            h.push("names".into());
        }
    }
    h
}

fn group_cells(r: &UsageReport, row: &report::UsageRow) -> Vec<String> {
    let mut cells = Vec::new();
    for (g, v) in r.group_by.iter().zip(&row.group) {
        cells.push(v.clone());
        if *g == GroupBy::Token {
            cells.push(if row.token_keys.is_empty() { "-".into() } else { row.token_keys.join(", ") });
        }
    }
    cells
}

fn print_table(r: &UsageReport) {
    let show_write = r.totals.cache_write > 0;
    // Without grouping there is only the totals row; it still needs a label column.
    let mut header = if r.group_by.is_empty() { vec![String::new()] } else { group_headers(r) };
    let label_cols = header.len();
    header.extend(["requests", "errors", "input", "cached"].map(String::from));
    if show_write {
        header.push("cache write".into());
    }
    header.extend(["hit rate", "output", "cost $"].map(String::from));
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = output::table(&refs);
    let numbers = |c: &Counters| {
        let mut v = vec![c.requests.to_string(), c.errors.to_string(), c.input.to_string(), c.cache_read.to_string()];
        if show_write {
            v.push(c.cache_write.to_string());
        }
        v.push(hit_rate_cell(c));
        v.push(c.output.to_string());
        v.push(report::format_cost(c));
        v
    };
    if !r.group_by.is_empty() {
        for row in &r.rows {
            let mut cells = group_cells(r, row);
            cells.extend(numbers(&row.counters));
            t.add_row(cells);
        }
    }
    let mut total = vec![String::new(); label_cols];
    total[0] = "total".into();
    total.extend(numbers(&r.totals));
    t.add_row(total);
    for i in label_cols..header.len() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    output::print_table(&t);
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn print_csv(r: &UsageReport) {
    let mut header = group_headers(r);
    header.extend(
        [
            "requests",
            "errors",
            "input",
            "cache_read",
            "cache_write",
            "cache_hit_rate",
            "output",
            "reasoning",
            "cost_usd",
            "unknown_cost_requests",
        ]
        .map(String::from),
    );
    output::line(&header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","));
    for row in &r.rows {
        let mut cells = group_cells(r, row);
        let c = &row.counters;
        cells.extend([
            c.requests.to_string(),
            c.errors.to_string(),
            c.input.to_string(),
            c.cache_read.to_string(),
            c.cache_write.to_string(),
            report::hit_rate(c).map(|r| format!("{r:.4}")).unwrap_or_default(),
            c.output.to_string(),
            c.reasoning.to_string(),
            report::cost_json(c).map(|v| v.to_string()).unwrap_or_default(),
            c.unknown_cost.to_string(),
        ]);
        if !output::line(&cells.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",")) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("a"), "a");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
