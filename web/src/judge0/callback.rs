//! `callback_url`: when a submission ends, a PUT of its default fields, base64 encoded, as
//! Judge0's worker sends it (`call_callback`: 5 s timeout, up to 3 tries, another only when a
//! try fails). A callback makes this server send a request where user input says
//! (CVE-2024-29021 was one through Judge0's), so it is off unless the operator names the hosts
//! (`serve --judge0-callback-hosts`), and every address the name resolves to is checked
//! before the connection: a loopback, private, link-local or otherwise internal address is
//! used only when the allowed entry is that address itself, never through a name (DNS
//! rebinding). The connection goes to the address checked, not to a second resolution.
//! Plain `http://` only: https would need a TLS stack this server does not otherwise have.
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Judge0's `CALLBACKS_TIMEOUT` and `CALLBACKS_MAX_TRIES`.
pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const TRIES: usize = 3;

/// The hosts callbacks may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callbacks {
    allowed: Vec<Allowed>,
}

/// One allowed host, and its port if the entry names one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: String,
    port: Option<u16>,
}

/// A callback URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// The path and query, from the first `/` (`/` when there is none).
    pub path: String,
}

impl Callbacks {
    /// No callbacks at all: the default.
    pub fn none() -> Self {
        Callbacks::default()
    }

    /// The allow-list of `--judge0-callback-hosts`: `host` or `host:port`, names or
    /// addresses (`[::1]:8080` for IPv6).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (host, port) = split_host_port(entry)
                .ok_or_else(|| format!("{entry:?} is not a host or host:port"))?;
            allowed.push(Allowed {
                host: host.to_ascii_lowercase(),
                port,
            });
        }
        Ok(Callbacks { allowed })
    }

    pub fn enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    /// Whether a submission may ask for `url`; the message for `callback_url` when not.
    pub fn check(&self, url: &str) -> Result<Target, String> {
        if !self.enabled() {
            return Err("setting callback is not allowed".into());
        }
        let target = parse_url(url)?;
        if !self.allows(&target) {
            return Err(format!(
                "callbacks to {}:{} are not allowed on this server",
                target.host, target.port
            ));
        }
        Ok(target)
    }

    fn allows(&self, target: &Target) -> bool {
        self.allowed
            .iter()
            .any(|a| a.host == target.host && a.port.is_none_or(|p| p == target.port))
    }

    /// The address to connect to: the first the host resolves to that may be used.
    pub async fn address(&self, target: &Target) -> Result<SocketAddr, String> {
        let literal: Option<IpAddr> = target.host.parse().ok();
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
                .collect(),
        };
        addrs
            .into_iter()
            .find(|a| literal.is_some() || !internal(a.ip()))
            .ok_or_else(|| {
                format!(
                    "{} resolves only to internal addresses; allow the address itself to call it",
                    target.host
                )
            })
    }
}

/// An address a callback must not reach through a name: this machine, private networks,
/// link-local (cloud metadata services), shared, unspecified, multicast and broadcast ones.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (text, None),
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    valid.then(|| (host.to_string(), port))
}

/// `http://host[:port][/path]`, without user information.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{scheme}:// callbacks are not supported: use http://"
            ))
        }
        None => return Err("is not a URL".into()),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("a callback URL must not carry user information".into());
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| "is not a URL".to_string())?;
    let path = path.split('#').next().unwrap_or("");
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err("is not a URL".into());
    }
    Ok(Target {
        host: host.to_ascii_lowercase(),
        port: port.unwrap_or(80),
        path,
    })
}

/// PUT `body` to `url` as Judge0 does; failures are logged, not retried past [`TRIES`].
pub async fn deliver(callbacks: &Callbacks, url: &str, body: Bytes) {
    let result = async {
        let target = callbacks.check(url)?;
        let addr = callbacks.address(&target).await?;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let authority = match target.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", target.host, target.port),
            Err(_) => format!("{}:{}", target.host, target.port),
        };
        let uri = format!("http://{addr}{}", target.path);
        let mut last = String::new();
        for _ in 0..TRIES {
            let request = hyper::Request::put(uri.as_str())
                .header("host", authority.as_str())
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {} s", TIMEOUT.as_secs()),
            }
        }
        Err(last)
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, url, "judge0 callback not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_hosts_over_http_are_called() {
        assert_eq!(
            Callbacks::none().check("http://example.com/"),
            Err("setting callback is not allowed".into())
        );
        let c = Callbacks::parse(&["hooks.example.com".into(), "127.0.0.1:9000".into()]).unwrap();
        let t = c.check("http://Hooks.Example.com:8080/a?b=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("hooks.example.com", 8080, "/a?b=1")
        );
        assert_eq!(c.check("http://127.0.0.1:9000").unwrap().path, "/");
        assert!(c.check("http://127.0.0.1:9001/").is_err(), "another port");
        assert!(c.check("https://hooks.example.com/").is_err());
        assert!(c.check("http://user@hooks.example.com/").is_err());
        assert!(c.check("http://evil.com/").is_err());
        assert!(Callbacks::parse(&["a b".into()]).is_err());
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_not_called() {
        let c = Callbacks::parse(&["localhost".into()]).unwrap();
        let t = c.check("http://localhost:1/").unwrap();
        assert!(c.address(&t).await.is_err());
        let c = Callbacks::parse(&["127.0.0.1".into()]).unwrap();
        let t = c.check("http://127.0.0.1:1/").unwrap();
        assert_eq!(c.address(&t).await.unwrap(), "127.0.0.1:1".parse().unwrap());
    }
}
