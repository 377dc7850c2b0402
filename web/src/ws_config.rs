//! How the WebSocket endpoint is configured: which browser origins may connect, how often it
//! pings, how long a lost connection's run waits to be resumed. Apart from `ws.rs` so that the shared state can hold it without depending on the
//! connection code.
use std::time::Duration;

/// How the WebSocket endpoint is configured.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Origins a browser may connect from (`scheme://host[:port]`); empty means the server's
    /// own origin only; `*` means any.
    pub allowed_origins: Vec<String>,
    pub ping_interval: Duration,
    /// How long a run whose connection was lost goes on waiting to be resumed.
    pub resume_grace: Duration,
}

/// The default of [`WsConfig::resume_grace`].
pub const RESUME_GRACE: Duration = Duration::from_secs(60);

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(2),
            resume_grace: RESUME_GRACE,
        }
    }
}

impl WsConfig {
    /// Whether a browser at `origin` may connect to a server reached as `host`.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true; // not a browser: nothing to protect against
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.is_empty() {
            let Some(host) = host else { return false };
            let host = host.to_ascii_lowercase();
            return origin == format!("http://{host}") || origin == format!("https://{host}");
        }
        self.allowed_origins.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(&origin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_only_the_servers_own_origin() {
        let c = WsConfig::default();
        assert!(
            c.origin_allowed(None, Some("127.0.0.1:8080")),
            "not a browser"
        );
        assert!(c.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(c.origin_allowed(Some("HTTP://Example.org"), Some("example.org")));
        assert!(!c.origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080")));
        assert!(!c.origin_allowed(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080")));
        assert!(!c.origin_allowed(Some("http://127.0.0.1:8080"), None));
    }

    #[test]
    fn a_configured_list_replaces_the_default() {
        let c = WsConfig {
            allowed_origins: vec!["https://ide.example.org/".into()],
            ..WsConfig::default()
        };
        assert!(c.origin_allowed(Some("https://ide.example.org"), Some("runner:8080")));
        assert!(!c.origin_allowed(Some("http://runner:8080"), Some("runner:8080")));
        let any = WsConfig {
            allowed_origins: vec!["*".into()],
            ..WsConfig::default()
        };
        assert!(any.origin_allowed(Some("http://anything"), None));
    }
}
