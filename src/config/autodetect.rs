//! Zero-config: channels from well-known environment variables and local Ollama / LM Studio.
//!
//! Owns the table of known providers and the short local probe. Used only when no config file exists.

use std::time::Duration;

use super::Config;
use super::schema::{ChannelConfig, ChannelProtocol, KeyConfig, RawConfig, Secret};

/// A provider found through its API key variable.
struct Known {
    var: &'static str,
    name: &'static str,
    protocol: ChannelProtocol,
    base_url: &'static str,
    /// The variable the provider's own SDK reads for another base URL, and what to append to its value to get
    /// ours (the Groq SDK's base is the host; ours ends in `/openai/v1`).
    base_var: Option<(&'static str, &'static str)>,
    /// Model patterns used until discovery knows better.
    models: &'static [&'static str],
    tags: &'static [&'static str],
}

const KNOWN: &[Known] = &[
    Known {
        var: "OPENAI_API_KEY",
        name: "openai",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.openai.com/v1",
        base_var: Some(("OPENAI_BASE_URL", "")),
        models: &["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "text-embedding-*", "codex-*"],
        tags: &["openai"],
    },
    Known {
        var: "ANTHROPIC_API_KEY",
        name: "anthropic",
        protocol: ChannelProtocol::Anthropic,
        base_url: "https://api.anthropic.com",
        base_var: Some(("ANTHROPIC_BASE_URL", "")),
        models: &["claude-*"],
        tags: &["anthropic", "claude"],
    },
    Known {
        var: "OPENROUTER_API_KEY",
        name: "openrouter",
        protocol: ChannelProtocol::Openai,
        base_url: "https://openrouter.ai/api/v1",
        base_var: None,
        models: &["*/*"],
        tags: &["openrouter"],
    },
    Known {
        var: "DEEPSEEK_API_KEY",
        name: "deepseek",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.deepseek.com/v1",
        base_var: None,
        models: &["deepseek-*"],
        tags: &["deepseek"],
    },
    Known {
        var: "GROQ_API_KEY",
        name: "groq",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.groq.com/openai/v1",
        base_var: Some(("GROQ_BASE_URL", "/openai/v1")),
        models: &["llama*", "gemma*", "qwen*", "openai/gpt-oss*", "moonshotai/*", "meta-llama/*"],
        tags: &["groq"],
    },
    Known {
        var: "GEMINI_API_KEY",
        name: "gemini",
        protocol: ChannelProtocol::Gemini,
        base_url: "https://generativelanguage.googleapis.com/v1beta/openai",
        base_var: None,
        models: &["gemini-*", "gemma-*"],
        tags: &["gemini", "google"],
    },
    Known {
        var: "SILICONFLOW_API_KEY",
        name: "siliconflow",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.siliconflow.cn/v1",
        base_var: None,
        models: &["*/*"],
        tags: &["siliconflow"],
    },
    Known {
        var: "MOONSHOT_API_KEY",
        name: "moonshot",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.moonshot.cn/v1",
        base_var: None,
        models: &["moonshot-*", "kimi-*"],
        tags: &["moonshot", "kimi"],
    },
    Known {
        var: "MISTRAL_API_KEY",
        name: "mistral",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.mistral.ai/v1",
        base_var: None,
        models: &["mistral-*", "codestral-*", "magistral-*", "devstral-*", "pixtral-*", "ministral-*"],
        tags: &["mistral"],
    },
    Known {
        var: "XAI_API_KEY",
        name: "xai",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.x.ai/v1",
        base_var: None,
        models: &["grok-*"],
        tags: &["xai", "grok"],
    },
    Known {
        var: "TOGETHER_API_KEY",
        name: "together",
        protocol: ChannelProtocol::Openai,
        base_url: "https://api.together.xyz/v1",
        base_var: Some(("TOGETHER_BASE_URL", "")),
        models: &["*/*"],
        tags: &["together"],
    },
];

/// What zero-config found, with a human line per finding.
pub struct Detected {
    pub config: Config,
    pub found: Vec<String>,
}

/// Local servers to probe: (channel name, OpenAI-style base URL).
pub fn local_candidates(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let ollama = env("OLLAMA_HOST")
        .map(|h| {
            let h = if h.starts_with("http") { h } else { format!("http://{h}") };
            format!("{}/v1", h.trim_end_matches('/'))
        })
        .unwrap_or_else(|| "http://127.0.0.1:11434/v1".into());
    let lmstudio = env("LMSTUDIO_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:1234/v1".into());
    vec![("ollama".into(), ollama), ("lmstudio".into(), lmstudio)]
}

/// Builds a configuration from the environment and whatever answers locally.
pub async fn detect(env: &dyn Fn(&str) -> Option<String>, locals: &[(String, String)], timeout: Duration) -> Detected {
    let mut raw = RawConfig::default();
    let mut found = Vec::new();
    for k in KNOWN {
        let Some(key) = env(k.var).filter(|v| !v.trim().is_empty()) else { continue };
        let mut ch = ChannelConfig::new(k.name, k.protocol);
        let custom = k.base_var.and_then(|(var, suffix)| {
            let url = env(var).filter(|v| !v.trim().is_empty())?;
            Some((var, format!("{}{suffix}", url.trim().trim_end_matches('/'))))
        });
        ch.base_url = Some(custom.as_ref().map_or(k.base_url, |(_, u)| u.as_str()).to_string());
        ch.keys = vec![KeyConfig::Named {
            name: Some(k.var.to_ascii_lowercase()),
            key: Secret::new(key.trim()),
            enabled: true,
        }];
        ch.models = k.models.iter().map(|m| m.to_string()).collect();
        ch.tags = k.tags.iter().map(|t| t.to_string()).collect();
        found.push(match &custom {
            Some((var, url)) => format!("{} from ${} at {url} (${var})", k.name, k.var),
            None => format!("{} from ${}", k.name, k.var),
        });
        raw.channels.push(ch);
    }
    let probes = locals.iter().map(|(name, url)| probe_local(name, url, timeout));
    for (name, url, models) in futures_util::future::join_all(probes).await.into_iter().flatten() {
        let mut ch = ChannelConfig::new(name.clone(), ChannelProtocol::Openai);
        ch.base_url = Some(url.clone());
        ch.tags = vec!["local".into(), name.clone()];
        found.push(format!("{name} at {url} ({} models)", models.len()));
        ch.models = models;
        raw.channels.push(ch);
    }
    let config = Config { path: None, raw, listen: None, gateway_keys: Vec::new() };
    Detected { config, found }
}

/// Zero-config channels whose base-URL variable points at `listen` itself (the README exports
/// `ANTHROPIC_BASE_URL=http://127.0.0.1:4000` for Claude Code; the router must not then call itself): their
/// provider's default URL is used instead. Returns a note per channel changed.
pub fn undo_self_loops(config: &mut Config, listen: std::net::SocketAddr) -> Vec<String> {
    let mut notes = Vec::new();
    for ch in &mut config.raw.channels {
        let Some(k) = KNOWN.iter().find(|k| k.name == ch.name) else { continue };
        let (Some((var, _)), Some(url)) = (k.base_var, ch.base_url.as_deref()) else { continue };
        let Ok(u) = reqwest::Url::parse(url) else { continue };
        let port = u.port_or_known_default();
        let local = match u.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified() || listen.ip() == ip,
            Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified() || listen.ip() == ip,
            None => false,
        };
        if local && port == Some(listen.port()) {
            notes.push(format!("{}: ignoring ${var} ({url}): it is this router's own address", ch.name));
            ch.base_url = Some(k.base_url.to_string());
        }
    }
    notes
}

/// GET {url}/models; `Some` with the model ids when something OpenAI-like answers in time.
async fn probe_local(name: &str, url: &str, timeout: Duration) -> Option<(String, String, Vec<String>)> {
    let client = crate::upstream::probe_client(timeout);
    let resp = client.get(format!("{url}/models")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    let models = body["data"].as_array()?.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
    Some((name.to_string(), url.to_string(), models))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn base_url_variables_the_sdks_read_are_honoured_but_never_the_router_itself() {
        let env = |v: &str| match v {
            "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" | "GROQ_API_KEY" => Some("sk-x".to_string()),
            "OPENAI_BASE_URL" => Some("https://proxy.example/v1/".to_string()),
            "GROQ_BASE_URL" => Some("https://groq.example".to_string()),
            "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:4000".to_string()),
            _ => None,
        };
        let mut d = detect(&env, &[], Duration::from_millis(300)).await;
        let url = |d: &Detected, n: &str| {
            d.config.raw.channels.iter().find(|c| c.name == n).and_then(|c| c.base_url.clone()).unwrap()
        };
        assert_eq!(url(&d, "openai"), "https://proxy.example/v1");
        assert_eq!(url(&d, "groq"), "https://groq.example/openai/v1");
        assert!(d.found.iter().any(|l| l.contains("$OPENAI_BASE_URL")), "{:?}", d.found);
        let notes = undo_self_loops(&mut d.config, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(url(&d, "anthropic"), "https://api.anthropic.com");
        assert_eq!(url(&d, "openai"), "https://proxy.example/v1");
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[tokio::test]
    async fn env_keys_become_channels_and_dead_locals_are_skipped() {
        let env = |v: &str| match v {
            "DEEPSEEK_API_KEY" => Some("sk-ds".to_string()),
            "ANTHROPIC_API_KEY" => Some("sk-ant".to_string()),
            _ => None,
        };
        // Port 9 (discard) on loopback is closed on test machines; the probe must fail fast.
        let locals = vec![("ollama".to_string(), "http://127.0.0.1:9/v1".to_string())];
        let d = detect(&env, &locals, Duration::from_millis(300)).await;
        let names: Vec<_> = d.config.raw.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["anthropic", "deepseek"]);
        assert_eq!(d.config.raw.channels[0].protocol, ChannelProtocol::Anthropic);
        assert!(d.found.iter().all(|l| !l.contains("sk-")));
    }
}
