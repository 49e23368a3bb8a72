//! Which addresses roster may probe and publish: the deny list, and the addresses Endpoints reject.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks that probes never reach (`--probe-deny-cidrs`, the built-ins and the Service CIDR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyList {
    nets: Vec<IpNet>,
}

impl DenyList {
    pub fn new(nets: Vec<IpNet>) -> DenyList {
        DenyList { nets }
    }

    /// The first denied network holding `ip` (IPv4-mapped IPv6 addresses are checked as IPv4).
    pub fn denies(&self, ip: IpAddr) -> Option<&IpNet> {
        let ip = ip.to_canonical();
        self.nets.iter().find(|net| net.contains(&ip))
    }

    /// The status message of a denied address, or `None` when `ip` may be probed.
    pub fn check(&self, ip: IpAddr) -> Option<String> {
        self.denies(ip)
            .map(|net| format!("denied: {ip} is in --probe-deny-cidrs {net}"))
    }
}

/// Why the API server would reject `ip` in Endpoints and EndpointSlices (the special ranges that
/// validation refuses), or `None` when it is publishable. The deny list's built-ins already hold most of
/// these; this covers the rest (unspecified IPv6, link-local multicast), whatever the flags.
pub fn unpublishable(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return Some("invalid IP: unspecified address");
    }
    if ip.is_loopback() {
        return Some("invalid IP: loopback address");
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if link_local {
        return Some("invalid IP: link-local address");
    }
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    };
    if link_local_multicast {
        return Some("invalid IP: link-local multicast address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backendset::args::BackendArgs;

    #[test]
    fn default_list_denies_loopback_link_local_and_this_network() {
        let deny = DenyList::new(BackendArgs::default().deny_list());
        let cases = [
            (
                "127.0.0.1",
                Some("denied: 127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8"),
            ),
            (
                "127.9.9.9",
                Some("denied: 127.9.9.9 is in --probe-deny-cidrs 127.0.0.0/8"),
            ),
            ("::1", Some("denied: ::1 is in --probe-deny-cidrs ::1/128")),
            (
                "::ffff:127.0.0.1",
                Some("denied: ::ffff:127.0.0.1 is in --probe-deny-cidrs 127.0.0.0/8"),
            ),
            (
                "169.254.169.254",
                Some("denied: 169.254.169.254 is in --probe-deny-cidrs 169.254.0.0/16"),
            ),
            (
                "fe80::1",
                Some("denied: fe80::1 is in --probe-deny-cidrs fe80::/10"),
            ),
            (
                "0.0.0.0",
                Some("denied: 0.0.0.0 is in --probe-deny-cidrs 0.0.0.0/8"),
            ),
            ("198.51.100.10", None),
            ("10.0.0.1", None),
            ("2001:db8::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(deny.check(ip.parse().unwrap()).as_deref(), want, "{ip}");
        }
    }

    #[test]
    fn flags_extend_the_list() {
        let args = BackendArgs {
            probe_deny_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            service_cidr: vec!["fd00:96::/108".parse().unwrap()],
            ..BackendArgs::default()
        };
        let deny = DenyList::new(args.deny_list());
        assert_eq!(
            deny.denies("10.1.2.3".parse().unwrap())
                .map(|n| n.to_string())
                .as_deref(),
            Some("10.0.0.0/8")
        );
        assert_eq!(
            deny.denies("fd00:96::a".parse().unwrap())
                .map(|n| n.to_string())
                .as_deref(),
            Some("fd00:96::/108")
        );
        assert_eq!(deny.denies("11.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn special_addresses_are_not_publishable() {
        let cases = [
            ("0.0.0.0", Some("invalid IP: unspecified address")),
            ("::", Some("invalid IP: unspecified address")),
            ("127.0.0.1", Some("invalid IP: loopback address")),
            ("169.254.1.1", Some("invalid IP: link-local address")),
            ("fe80::1", Some("invalid IP: link-local address")),
            ("224.0.0.251", Some("invalid IP: link-local multicast address")),
            ("ff02::1", Some("invalid IP: link-local multicast address")),
            ("224.0.1.1", None),
            ("198.51.100.10", None),
            ("2001:db8::10", None),
        ];
        for (ip, want) in cases {
            assert_eq!(unpublishable(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
