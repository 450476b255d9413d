//! URLs a request body makes the agent server call (run and cron `webhook`s), checked before
//! the server sees them.
//!
//! The agent server refuses only loopback webhooks; it will call any private address it can
//! reach: cluster-internal services, the node, a cloud metadata endpoint. graphguard refuses a
//! URL unless its scheme is allowed (`https` by default) and its host is either listed in
//! `settings.webhooks.allowed_hosts` or, when no list is given, public: an IP literal outside
//! every private, loopback, link-local, shared, reserved and documentation range, or a host name
//! whose every address (resolved by the gateway with the pod's own resolver, search domains
//! included) is public.
//!
//! Only URLs in a strict form are read: `scheme://host[:port][/path][?query][#fragment]`, with
//! no user information, no backslash, no percent-encoding or white space in the authority, and
//! a host that is an ASCII name, a bracketed IPv6 address or an IPv4 address in any of the forms
//! `inet_aton` reads (`2130706433`, `0x7f.1`, `0177.0.0.1` are 127.0.0.1 to the server's
//! resolver). Anything else is refused: what graphguard cannot read the way the server's HTTP
//! client reads it is never let through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::policy::config::WebhooksConfig;

/// The compiled `settings.webhooks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Allowed schemes, lower-case.
    schemes: Vec<String>,
    /// `None`: any public host. `Some`: only these (which may be private).
    allowed: Option<Vec<HostPattern>>,
}

/// One entry of `allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A host name, lower-case, without a trailing dot.
    Name(String),
    /// `*.example.com`: any name under `example.com` (not `example.com` itself).
    Suffix(String),
    /// An address or a network.
    Net(IpNet),
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            schemes: vec!["https".into()],
            allowed: None,
        }
    }
}

/// What a URL needs before it may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed as it stands.
    Allowed,
    /// Allowed if every address of this host name is public (the caller resolves it).
    IfPublic(String),
}

impl WebhookPolicy {
    /// Compile the settings; errors name the offending entry.
    pub fn compile(c: &WebhooksConfig) -> Result<WebhookPolicy, String> {
        let mut p = WebhookPolicy::default();
        if let Some(schemes) = &c.schemes {
            p.schemes = Vec::with_capacity(schemes.len());
            for s in schemes {
                let s = s.to_ascii_lowercase();
                if s != "https" && s != "http" {
                    return Err(format!("scheme {s:?}: only https and http are supported"));
                }
                p.schemes.push(s);
            }
        }
        if let Some(hosts) = &c.allowed_hosts {
            let mut out = Vec::with_capacity(hosts.len());
            for h in hosts {
                out.push(HostPattern::parse(h)?);
            }
            p.allowed = Some(out);
        }
        Ok(p)
    }

    /// Check one URL. `Err` is the 403 detail.
    pub fn check(&self, url: &str) -> Result<Verdict, String> {
        let u = StrictUrl::parse(url)?;
        if !self.schemes.contains(&u.scheme) {
            return Err(format!(
                "webhook scheme {:?} is not allowed (allowed: {})",
                u.scheme,
                self.schemes.join(", ")
            ));
        }
        match &self.allowed {
            Some(list) => {
                if list.iter().any(|p| p.matches(&u.host)) {
                    Ok(Verdict::Allowed)
                } else {
                    Err(format!(
                        "webhook host {} is not in settings.webhooks.allowed_hosts",
                        u.host
                    ))
                }
            }
            None => match &u.host {
                Host::Ip(ip) => {
                    if is_public(*ip) {
                        Ok(Verdict::Allowed)
                    } else {
                        Err(format!("webhook address {ip} is not public"))
                    }
                }
                Host::Name(name) => {
                    if is_internal_name(name) {
                        Err(format!("webhook host {name} is an internal name"))
                    } else {
                        Ok(Verdict::IfPublic(name.clone()))
                    }
                }
            },
        }
    }
}

impl HostPattern {
    fn parse(s: &str) -> Result<HostPattern, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(net) = lower.parse::<IpNet>() {
            return Ok(HostPattern::Net(net));
        }
        if let Ok(ip) = lower.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(HostPattern::Net(IpNet::from(ip)));
        }
        let (name, suffix) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        if name.is_empty() || !name.bytes().all(is_name_byte) || name.starts_with('.') {
            return Err(format!(
                "allowed host {s:?}: expected a host name, *.domain, an IP address or a CIDR"
            ));
        }
        Ok(if suffix {
            HostPattern::Suffix(name.to_string())
        } else {
            HostPattern::Name(name.to_string())
        })
    }

    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Suffix(s), Host::Name(h)) => h
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Net(net), Host::Ip(ip)) => net.contains(ip),
            _ => false,
        }
    }
}

/// Whether every address of a resolved host is public (and there is at least one).
pub fn all_public(addrs: &[IpAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| is_public(*a))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A DNS name, lower-case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

struct StrictUrl {
    scheme: String,
    host: Host,
}

impl StrictUrl {
    fn parse(url: &str) -> Result<StrictUrl, String> {
        let bad = |why: &str| Err(format!("webhook URL refused: {why}"));
        if url
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'\\' || !b.is_ascii())
        {
            return bad("it must be ASCII without white space, control characters or backslashes");
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return bad("it must be an absolute URL (scheme://host/...)");
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return bad("invalid scheme");
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = rest.get(..end).unwrap_or_default();
        if authority.contains('@') {
            return bad("user information (@) in the URL is not accepted");
        }
        if authority.contains('%') {
            return bad("percent-encoding in the host is not accepted");
        }
        let Some((host, port)) = split_port(authority) else {
            return bad("invalid or ambiguous host");
        };
        if let Some(port) = port {
            let valid = port.parse::<u16>().is_ok() && port.bytes().all(|b| b.is_ascii_digit());
            if !valid {
                return bad("invalid port");
            }
        }
        Ok(StrictUrl {
            scheme: scheme.to_ascii_lowercase(),
            host,
        })
    }
}

/// `host[:port]` or `[v6][:port]`, the host read.
fn split_port(authority: &str) -> Option<(Host, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        return Some((Host::Ip(IpAddr::V6(v6.parse().ok()?)), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    Some((read_host(host)?, port))
}

/// A host that is not bracketed: a name, or an IPv4 address in an `inet_aton` spelling.
fn read_host(host: &str) -> Option<Host> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(is_name_byte) || name.split('.').any(str::is_empty) {
        return None;
    }
    let numeric = |label: &str| match label.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    };
    if name.rsplit('.').next().is_some_and(numeric) {
        // The resolver reads it as an IPv4 address (inet_aton); so does the gateway. A name
        // that ends in a number but is not an address is ambiguous, hence refused.
        return name
            .split('.')
            .all(numeric)
            .then(|| inet_aton(&name))
            .flatten()
            .map(|v4| Host::Ip(IpAddr::V4(v4)));
    }
    Some(Host::Name(name))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// glibc's `inet_aton`: one to four parts, each decimal, octal (leading `0`) or hex (`0x`);
/// the last part fills the remaining bytes.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for p in &parts {
        let v = if let Some(hex) = p.strip_prefix("0x") {
            if hex.is_empty() {
                0
            } else {
                u32::from_str_radix(hex, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(p, 8).ok()?
        } else {
            p.parse::<u32>().ok()?
        };
        values.push(v);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|v| *v > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 32 && *last >= 1u32 << room {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, v) in head.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(addr | last))
}

/// Names that only mean something inside a cluster, a host or a private network.
fn is_internal_name(name: &str) -> bool {
    const SUFFIXES: [&str; 9] = [
        ".localhost",
        ".local",
        ".localdomain",
        ".internal",
        ".intranet",
        ".lan",
        ".home.arpa",
        ".svc",
        ".cluster.local",
    ];
    !name.contains('.') || name == "localhost" || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const NOT_PUBLIC: [(u32, u8); 16] = [
        (0x0000_0000, 8),  // "this network"
        (0x0a00_0000, 8),  // private
        (0x6440_0000, 10), // shared address space (carrier NAT; cloud metadata on some)
        (0x7f00_0000, 8),  // loopback
        (0xa9fe_0000, 16), // link-local (cloud metadata 169.254.169.254)
        (0xac10_0000, 12), // private
        (0xc000_0000, 24), // IETF protocol assignments
        (0xc000_0200, 24), // documentation
        (0xc058_6300, 24), // 6to4 relay anycast
        (0xc0a8_0000, 16), // private
        (0xc612_0000, 15), // benchmarking
        (0xc633_6400, 24), // documentation
        (0xcb00_7100, 24), // documentation
        (0xe000_0000, 4),  // multicast
        (0xf000_0000, 4),  // reserved, broadcast
        (0xffff_ffff, 32), // broadcast
    ];
    let a = u32::from(ip);
    !NOT_PUBLIC.iter().any(|(net, len)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        a & mask == *net
    })
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: usize| {
        let a = s.get(hi).copied().unwrap_or(0);
        let b = s.get(hi + 1).copied().unwrap_or(0);
        Ipv4Addr::from((u32::from(a) << 16) | u32::from(b))
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    match s {
        [0, 0, 0, 0, 0, 0, _, _] => false, // ::, ::1, IPv4-compatible
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => is_public_v4(embedded_v4(6)), // NAT64
        [0x64, 0xff9b, 1, ..] => false,    // local-use NAT64
        [0x100, 0, 0, 0, ..] => false,     // discard
        [0x2001, 0, ..] => false,          // Teredo
        [0x2001, 0xdb8, ..] => false,      // documentation
        [0x2002, ..] => is_public_v4(embedded_v4(1)), // 6to4
        [first, ..] => {
            first & 0xfe00 != 0xfc00       // unique local (fd00:ec2::254 metadata)
                && first & 0xffc0 != 0xfe80 // link-local
                && first & 0xffc0 != 0xfec0 // site-local
                && first & 0xff00 != 0xff00 // multicast
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> WebhookPolicy {
        let c: WebhooksConfig = serde_yaml_ng::from_str(yaml).unwrap();
        WebhookPolicy::compile(&c).unwrap()
    }

    #[test]
    fn private_and_metadata_addresses_are_refused_by_default() {
        let p = WebhookPolicy::default();
        for url in [
            "https://127.0.0.1/h",
            "https://10.0.0.5/h",
            "https://172.16.3.4:8443/h",
            "https://192.168.1.1/h",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.100.100.200/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[fe80::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[64:ff9b::a00:1]/",
            "https://[2002:a00:1::]/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://0x7f000001/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://kubernetes/",
            "https://redis.default.svc/",
            "https://redis.default.svc.cluster.local./",
            "https://metadata.google.internal/",
            "https://printer.local/",
        ] {
            assert!(p.check(url).is_err(), "{url}");
        }
    }

    #[test]
    fn public_addresses_pass_and_names_need_resolving() {
        let p = WebhookPolicy::default();
        assert_eq!(p.check("https://8.8.8.8/hook"), Ok(Verdict::Allowed));
        assert_eq!(
            p.check("https://[2606:4700::1111]:443/h"),
            Ok(Verdict::Allowed)
        );
        assert_eq!(
            p.check("https://Hooks.Example.com./h?x=1#f"),
            Ok(Verdict::IfPublic("hooks.example.com".into()))
        );
        assert!(all_public(&["8.8.8.8".parse().unwrap()]));
        assert!(!all_public(&[
            "8.8.8.8".parse().unwrap(),
            "10.1.1.1".parse().unwrap()
        ]));
        assert!(!all_public(&[]));
    }

    #[test]
    fn only_allowed_schemes_pass() {
        let p = WebhookPolicy::default();
        let e = p.check("http://8.8.8.8/").unwrap_err();
        assert!(e.contains("scheme \"http\""), "{e}");
        assert!(p.check("ftp://8.8.8.8/").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        assert!(
            p.check("/runs/x").is_err(),
            "relative URLs loop back into the server"
        );
        let p = policy("schemes: [http, https]");
        assert_eq!(p.check("http://8.8.8.8/"), Ok(Verdict::Allowed));
    }

    #[test]
    fn urls_read_differently_by_other_parsers_are_refused() {
        let p = policy("allowed_hosts: [hooks.example.com]");
        for url in [
            "https://hooks.example.com@10.0.0.1/",
            "https://10.0.0.1#@hooks.example.com/",
            "https://10.0.0.1\\@hooks.example.com/",
            "https://hooks.example.com%2f@10.0.0.1/",
            "https://hooks.example.com :443/",
            "https://hooks.example.com\t/",
            "https://hooks.example.cöm/",
            "https://hooks.example.com:99999/",
            "https://hooks.example.com:/",
            "https:/hooks.example.com/",
            "https://[hooks.example.com]/",
            "https://hooks..example.com/",
        ] {
            assert!(p.check(url).is_err(), "{url}");
        }
        assert_eq!(
            p.check("https://hooks.example.com:8443/x"),
            Ok(Verdict::Allowed)
        );
    }

    #[test]
    fn an_allow_list_admits_exactly_its_hosts_even_private_ones() {
        let p = policy(
            "allowed_hosts: [hooks.example.com, '*.corp.example', 10.1.0.0/16, '[fd00::5]']",
        );
        assert_eq!(p.check("https://hooks.example.com/"), Ok(Verdict::Allowed));
        assert_eq!(p.check("https://a.b.corp.example/"), Ok(Verdict::Allowed));
        assert!(p.check("https://corp.example/").is_err());
        assert!(p.check("https://xcorp.example/").is_err());
        assert_eq!(p.check("https://10.1.2.3/"), Ok(Verdict::Allowed));
        assert_eq!(p.check("https://[fd00::5]/"), Ok(Verdict::Allowed));
        assert!(p.check("https://10.2.0.1/").is_err());
        assert!(p.check("https://8.8.8.8/").is_err(), "not listed");
        let none = policy("allowed_hosts: []");
        assert!(none.check("https://8.8.8.8/").is_err());
    }

    #[test]
    fn bad_settings_are_errors() {
        let c: WebhooksConfig = serde_yaml_ng::from_str("schemes: [ftp]").unwrap();
        assert!(WebhookPolicy::compile(&c).is_err());
        let c: WebhooksConfig = serde_yaml_ng::from_str("allowed_hosts: ['a b']").unwrap();
        assert!(WebhookPolicy::compile(&c).is_err());
    }

    #[test]
    fn inet_aton_reads_every_ipv4_spelling() {
        assert_eq!(inet_aton("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("10.0.258"), Some(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(inet_aton("0xa.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("012.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("256.0.0.1"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("1.2.65536"), None);
    }
}
