//! Which URLs a webhook may be sent to: never, unless the configuration allows it, to an address
//! inside the service's own network (loopback, private, link-local, cloud metadata), so that a
//! tenant cannot use webhooks to reach it (SSRF).
//!
//! [`check_target`] runs when a URL is registered; [`GuardedResolver`] runs on every connection,
//! so a name whose DNS answer later turns into `127.0.0.1` is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether private targets are allowed (`webhooks.allow_private_targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// Allow loopback, private and link-local addresses (a lab system on the local network).
    pub allow_private: bool,
}

impl From<&crate::config::WebhooksConfig> for TargetPolicy {
    fn from(config: &crate::config::WebhooksConfig) -> Self {
        Self {
            allow_private: config.allow_private_targets,
        }
    }
}

/// The longest webhook URL a client may give.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL a client gives for webhooks is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("url is longer than {MAX_URL_CHARS} characters.")]
    TooLong,
    #[error("{0}")]
    Target(#[from] TargetRefused),
}

/// Checks a URL a client gives for webhooks (an endpoint's, a job's `webhook_url`): its length,
/// then [`check_target`]. Answers the URL as it will be used.
pub async fn check_webhook_url(url: &str, policy: TargetPolicy) -> Result<String, UrlRefused> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(UrlRefused::TooLong);
    }
    Ok(check_target(url, policy).await?.to_string())
}

/// Why a webhook URL is refused, in words for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetRefused(pub String);

/// Checks a webhook URL: `http` or `https`, a host, and (unless `policy` allows private
/// targets) every address it resolves to is a public one.
pub async fn check_target(url: &str, policy: TargetPolicy) -> Result<Url, TargetRefused> {
    let parsed = parse_url(url)?;
    if policy.allow_private {
        return Ok(parsed);
    }
    if let Some(ip) = literal_ip(&parsed) {
        return refuse_private(&parsed, ip).map(|()| parsed);
    }
    let host = parsed.host_str().unwrap_or_default().to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| TargetRefused(format!("The host {host:?} cannot be resolved: {e}.")))?
        .collect();
    if addrs.is_empty() {
        return Err(TargetRefused(format!("The host {host:?} has no address.")));
    }
    for addr in addrs {
        refuse_private(&parsed, addr.ip())?;
    }
    Ok(parsed)
}

/// Parses and checks the form of a webhook URL, without resolving it.
pub(super) fn parse_url(url: &str) -> Result<Url, TargetRefused> {
    let parsed =
        Url::parse(url).map_err(|e| TargetRefused(format!("{url:?} is not a URL: {e}.")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetRefused(format!(
            "Webhook URLs must be http or https, not {}.",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(TargetRefused(format!("{url:?} has no host.")));
    }
    Ok(parsed)
}

/// The address of a URL whose host is an IP literal (never resolved, so checked directly).
pub(super) fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn refuse_private(url: &Url, ip: IpAddr) -> Result<(), TargetRefused> {
    if is_allowed_address(ip) {
        Ok(())
    } else {
        Err(TargetRefused(format!(
            "{} resolves to {ip}, a loopback, private or link-local address; set \
             webhooks.allow_private_targets = true to allow such targets.",
            url.host_str().unwrap_or_default()
        )))
    }
}

/// True for a public unicast address that is not this machine's own: not loopback, private
/// (RFC 1918, ULA), link-local, site-local, unspecified, CGNAT, multicast, broadcast,
/// documentation or reserved, whatever IPv6 form carries it (IPv4-mapped, IPv4-compatible,
/// NAT64, 6to4, Teredo), and not an address of one of this machine's interfaces (a listener on
/// 0.0.0.0 answers there too).
pub fn is_allowed_address(ip: IpAddr) -> bool {
    let public = match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            let embedded = embedded_v4(v6);
            is_public_v6(v6) && embedded.iter().all(|v4| is_public_v4(*v4))
        }
    };
    public && !is_own_address(ip)
}

/// The IPv4 addresses an IPv6 address carries, in the forms a router or the kernel would
/// deliver to them: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002:AABB:CCDD::/16`, and Teredo `2001::/32`
/// (server and client, the latter stored inverted).
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let mut found = Vec::new();
    if let Some(mapped) = ip.to_ipv4_mapped() {
        found.push(mapped);
    }
    if s[..6] == [0; 6] {
        found.push(v4(s[6], s[7])); // IPv4-compatible (deprecated, still routed by some stacks)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        found.push(v4(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        found.push(v4(s[1], s[2])); // 6to4
    }
    if s[0] == 0x2001 && s[1] == 0 {
        found.push(v4(s[2], s[3])); // Teredo server
        found.push(v4(!s[6], !s[7])); // Teredo client, obfuscated by inversion
    }
    found
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || s[..4] == [0x100, 0, 0, 0]) // discard-only 100::/64
}

/// Whether `ip` belongs to this machine: a socket can be bound to it only then.
fn is_own_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// A DNS resolver that drops the addresses [`is_allowed_address`] refuses, and fails when none
/// is left: the check happens on the address actually connected to.
#[derive(Debug, Clone, Copy)]
pub(super) struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_allowed_address(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, private or link-local addresses, which \
                     webhooks.allow_private_targets does not allow"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(ip: &str) -> bool {
        is_allowed_address(ip.parse().unwrap())
    }

    #[test]
    fn only_public_unicast_addresses_are_allowed() {
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            // IPv4 carried in IPv6: compatible, NAT64 (well-known and local-use), 6to4, Teredo.
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:101::1",
            "2001:0:7f00:1::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo client 127.0.0.1
            // Site-local, documentation, discard, reserved IPv4 ranges.
            "fec0::1",
            "feff::1",
            "2001:db8::1",
            "100::1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
        ] {
            assert!(!allowed(refused), "{refused} must be refused");
        }
        for ok in [
            "93.184.216.34",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo client 8.8.8.8
        ] {
            assert!(allowed(ok), "{ok} must be allowed");
        }
    }

    #[test]
    fn this_machines_own_addresses_are_refused() {
        // The address this machine would send from: one of its interfaces, whatever its
        // range. A UDP "connect" sends nothing, it only picks the route.
        let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let own = match probe.connect("8.8.8.8:53") {
            Ok(()) => probe.local_addr().unwrap().ip(),
            // No route out (a sandbox): loopback is still this machine's own.
            Err(_) => "127.0.0.1".parse().unwrap(),
        };
        assert!(is_own_address(own), "{own}");
        assert!(!is_allowed_address(own), "{own} is this machine");
        assert!(!is_own_address("8.8.8.8".parse().unwrap()));
    }

    #[tokio::test]
    async fn urls_are_checked_for_scheme_host_and_address() {
        let strict = TargetPolicy::default();
        for refused in [
            "ftp://example.com/",
            "not a url",
            "http://127.0.0.1:8080/hook",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::1]/",
            "http://[fec0::1]/",
            "http://localhost/",
        ] {
            assert!(
                check_target(refused, strict).await.is_err(),
                "{refused} must be refused"
            );
        }
        let lab = TargetPolicy {
            allow_private: true,
        };
        assert!(check_target("http://192.168.1.20/lis", lab).await.is_ok());
        assert!(check_target("http://93.184.216.34/", strict).await.is_ok());
        assert!(check_target("file:///etc/passwd", lab).await.is_err());
    }
}
