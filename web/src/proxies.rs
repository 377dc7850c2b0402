//! Trusted reverse proxies (`serve --trusted-proxies CIDR,...`): behind one, every connection
//! comes from the proxy, and the client's own address is in `X-Forwarded-For`. Anyone can send
//! that header, so it is read only when the connection comes from a trusted proxy, and then
//! only as far as trusted proxies wrote it: each proxy appends the address it got the request
//! from, so the client is the rightmost address that is not itself a trusted proxy. Whatever
//! a client wrote to the left of that is ignored.
//!
//! The per-address connection cap of the accept loop stays on the TCP peer (the proxy).
use std::net::IpAddr;
use std::str::FromStr;

/// Most `X-Forwarded-For` entries read, from the right.
const MAX_HOPS: usize = 32;

/// An address range: `10.0.0.0/8`, `fd00::/8`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, canonical(addr)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// What tells clients apart by address: a v4 address, or the /64 network of a v6 one (the
/// least a subscriber is given: one attacker has 2^64 addresses in it, but only one /64).
pub fn network(addr: IpAddr) -> IpAddr {
    match canonical(addr) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & mask_v6(64)).into()),
        v4 => v4,
    }
}

/// A v4 address written as v6 (`::ffff:10.0.0.1`, how a dual-stack listener sees v4 peers) is
/// the v4 address.
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: not an address or a CIDR range"))?;
        let network = canonical(network);
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

/// The trusted proxies; none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parse `--trusted-proxies`' list; the error names the entry.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        let ranges = list
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies(ranges))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(addr))
    }

    /// The client's address for a request that came from `peer` with these `X-Forwarded-For`
    /// values (in the order the header lines came): `peer` itself unless it is a trusted
    /// proxy; else the rightmost entry that is not a trusted proxy. If every entry is trusted,
    /// the leftmost one; an entry that is no address ends the walk at the last good one.
    pub fn client_address<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let entries = forwarded_for.rev().flat_map(|line| line.rsplit(','));
        for entry in entries.take(MAX_HOPS) {
            let Some(addr) = parse_entry(entry) else {
                break;
            };
            client = addr;
            if !self.trusts(addr) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let addr = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })?;
    Some(canonical(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(net.contains(ip("::ffff:10.1.0.1")), "v4-mapped");
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("::1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(TrustedProxies::parse(&["10.0.0.0/8", " ::1 "]).is_ok());
        let err = TrustedProxies::parse(&["10.0.0.0/8", "bogus"]).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn v6_clients_are_told_apart_by_their_64() {
        assert_eq!(network(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(network(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(network(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(network(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(network(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let none = TrustedProxies::default();
        let spoofed = ["203.0.113.66"];
        assert_eq!(
            none.client_address(ip("198.51.100.1"), spoofed.into_iter()),
            ip("198.51.100.1")
        );
        let proxies = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(
            proxies.client_address(ip("198.51.100.1"), spoofed.into_iter()),
            ip("198.51.100.1"),
            "a client that is no proxy cannot name another address"
        );
    }

    #[test]
    fn from_a_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
        let from =
            |peer: &str, lines: &[&str]| proxies.client_address(ip(peer), lines.iter().copied());
        assert_eq!(from("10.0.0.1", &["198.51.100.7"]), ip("198.51.100.7"));
        // The client wrote an entry of its own; the proxy appended the real address.
        assert_eq!(
            from("10.0.0.1", &["6.6.6.6, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Two proxies, and the lines of a repeated header taken in order.
        assert_eq!(
            from("10.0.0.1", &["6.6.6.6, 198.51.100.7", "10.0.0.2"]),
            ip("198.51.100.7")
        );
        assert_eq!(from("::1", &["[2001:db8::5]:4711"]), ip("2001:db8::5"));
        assert_eq!(
            from("::ffff:10.0.0.1", &["198.51.100.7:80"]),
            ip("198.51.100.7")
        );
        // No header: the proxy itself. Every entry trusted: the leftmost.
        assert_eq!(from("10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(from("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), ip("10.0.0.3"));
        // Garbage ends the walk at the last address a trusted proxy wrote.
        assert_eq!(
            from("10.0.0.1", &["198.51.100.7, unknown, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(from("10.0.0.1", &["unknown"]), ip("10.0.0.1"));
    }
}
