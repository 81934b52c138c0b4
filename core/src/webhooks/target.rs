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

/// True for a public unicast address: not loopback, private (RFC 1918, ULA), link-local,
/// unspecified, CGNAT, multicast, broadcast or reserved, nor an IPv4-mapped IPv6 one of those.
pub fn is_allowed_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80) // link-local fe80::/10
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
        ] {
            assert!(allowed(ok), "{ok} must be allowed");
        }
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
