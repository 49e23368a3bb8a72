//! IP parsing and address families.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// An IP family as named by `spec.ipFamilies` and EndpointSlice `addressType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// Parses a `spec.ipFamilies` entry (`IPv4` / `IPv6`).
    pub fn from_service_family(value: &str) -> Option<Self> {
        match value {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        }
    }

    /// Parses an EndpointSlice `addressType`; `FQDN` and unknown types give `None`.
    pub fn from_address_type(value: &str) -> Option<Self> {
        Self::from_service_family(value)
    }

    /// The EndpointSlice `addressType` (and `spec.ipFamilies` entry) for this family.
    pub fn address_type(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.address_type())
    }
}

/// Parses an IP address the way Kubernetes accepts legacy input: IPv4 octets may carry leading zeros
/// (read as decimal), and IPv4-mapped IPv6 addresses are reduced to IPv4. Formatting the result gives the
/// normalised text roster publishes.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(parse_ipv4_with_leading_zeros(text)?),
    };
    Some(ip.to_canonical())
}

fn parse_ipv4_with_leading_zeros(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// A sort key that orders addresses by their 16-byte form (IPv4 as IPv4-mapped IPv6).
pub fn ip_sort_key(ip: &IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_parsing_normalises_legacy_forms() {
        let cases = [
            ("10.0.0.1", Some("10.0.0.1")),
            ("010.000.000.001", Some("10.0.0.1")),
            ("::ffff:10.1.2.3", Some("10.1.2.3")),
            ("FD00:0:0::1", Some("fd00::1")),
            ("10.0.0", None),
            ("10.0.0.256", None),
            ("not-an-ip", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_ip(input).map(|ip| ip.to_string()).as_deref(),
                want,
                "input {input:?}"
            );
        }
    }
}
