//! Tags: extraction from model ids and tag expressions (`tag:qwen,free,!local`).
//!
//! Owns the tag vocabulary rules only: lower-casing, the separators, parsing and matching expressions, and
//! suggesting close tags. Pure; no catalogue knowledge.

/// Splits a model id into tags: lower-cased, split on `/ : @ - _ ,` and spaces; empty pieces dropped. A piece
/// that is a family name glued to a version (`qwen3`, `llama3.2`, `gemma3`, `glm4`) also gives the family
/// (`qwen`, `llama`, ...), so `tag:qwen` finds Ollama's `qwen3:8b` as well as `qwen/qwen3-8b`.
pub fn extract(id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |t: &str| {
        if !t.is_empty() && !out.iter().any(|x| x == t) {
            out.push(t.to_string());
        }
    };
    for piece in id.to_ascii_lowercase().split(['/', ':', '@', '-', '_', ',', ' ']) {
        add(piece);
        if let Some(family) = family(piece) {
            add(family);
        }
    }
    out
}

/// `qwen3` -> `qwen`, `llama3.2` -> `llama`: three or more letters followed by a version number. Not `a22b`,
/// `k2`, `v3` or `4o` (too short, or a size).
fn family(piece: &str) -> Option<&str> {
    let letters = piece.find(|c: char| !c.is_ascii_lowercase())?;
    let rest = &piece[letters..];
    (letters >= 3
        && rest.starts_with(|c: char| c.is_ascii_digit())
        && rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    .then(|| &piece[..letters])
}

/// A parsed tag expression: every positive tag present, no negative tag present.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagExpr {
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

impl TagExpr {
    /// Parses `tag:a,b,!c` (the `tag:` prefix is required). `None` when `s` is not a tag expression.
    pub fn parse(s: &str) -> Option<TagExpr> {
        let rest = s.strip_prefix("tag:").or_else(|| s.strip_prefix("tags:"))?;
        Some(Self::parse_list(rest))
    }

    /// Parses a bare list `a,b,!c`.
    pub fn parse_list(list: &str) -> TagExpr {
        let mut e = TagExpr::default();
        for t in list.split([',', '+']).map(str::trim).filter(|t| !t.is_empty()) {
            match t.strip_prefix('!').or_else(|| t.strip_prefix('-')) {
                Some(neg) if !neg.is_empty() => e.negative.push(neg.to_ascii_lowercase()),
                Some(_) => {}
                None => e.positive.push(t.to_ascii_lowercase()),
            }
        }
        e
    }

    /// True when every positive tag is in `tags` and no negative one is.
    pub fn matches<'a>(&self, tags: impl Iterator<Item = &'a str> + Clone) -> bool {
        self.positive.iter().all(|p| tags.clone().any(|t| t == p))
            && !self.negative.iter().any(|n| tags.clone().any(|t| t == n))
    }

    pub fn is_empty(&self) -> bool {
        self.positive.is_empty() && self.negative.is_empty()
    }
}

impl std::fmt::Display for TagExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> =
            self.positive.iter().cloned().chain(self.negative.iter().map(|n| format!("!{n}"))).collect();
        write!(f, "tag:{}", parts.join(","))
    }
}

/// Edit distance, for "did you mean" lists.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Up to `n` names closest to `wanted`: substring matches first, then by edit distance.
pub fn closest<'a>(wanted: &str, names: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let w = wanted.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = names
        .map(|name| {
            let l = name.to_ascii_lowercase();
            let score = if l.contains(&w) || w.contains(&l) { 0 } else { distance(&w, &l) };
            (score, name)
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    let limit = (w.len() / 2).max(3);
    scored.into_iter().filter(|(s, _)| *s <= limit).take(n).map(|(_, s)| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_tags_from_openrouter_ids() {
        assert_eq!(extract("qwen/qwen3-30b-a3b:free"), ["qwen", "qwen3", "30b", "a3b", "free"]);
        assert_eq!(extract("Meta-Llama/Llama-3.1_8B@latest"), ["meta", "llama", "3.1", "8b", "latest"]);
        assert_eq!(extract("qwen3:8b"), ["qwen3", "qwen", "8b"]);
        assert_eq!(extract("llama3.2:3b"), ["llama3.2", "llama", "3b"]);
        assert_eq!(extract("moonshotai/kimi-k2:free"), ["moonshotai", "kimi", "k2", "free"]);
        assert_eq!(extract("gpt-4o"), ["gpt", "4o"]);
    }

    #[test]
    fn expressions_need_all_positive_and_no_negative() {
        let e = TagExpr::parse("tag:qwen,Free,!local").unwrap();
        assert_eq!(e.positive, ["qwen", "free"]);
        assert_eq!(e.negative, ["local"]);
        assert!(e.matches(["qwen", "free", "30b"].into_iter()));
        assert!(!e.matches(["qwen", "free", "local"].into_iter()));
        assert!(!e.matches(["qwen"].into_iter()));
        assert!(TagExpr::parse("qwen").is_none());
    }

    #[test]
    fn closest_prefers_substrings_then_edit_distance() {
        let names = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "deepseek-chat"];
        assert_eq!(closest("gpt-4", names.into_iter(), 2), ["gpt-4o", "gpt-4o-mini"]);
        assert_eq!(closest("deepseek-caht", names.into_iter(), 1), ["deepseek-chat"]);
        assert!(closest("zzzzzzzz", names.into_iter(), 3).is_empty());
    }
}
