//! ClusterIP and NodePort allocation for Services.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Sequential allocation from the service CIDR, skipping the network address.
pub(crate) struct ClusterIps {
    base: u32,
    size: u32,
    next: u32,
    used: BTreeSet<u32>,
}

impl ClusterIps {
    /// `cidr` like `10.96.0.0/12`; a malformed one falls back to the default range.
    pub fn new(cidr: &str) -> ClusterIps {
        let parsed = cidr.split_once('/').and_then(|(ip, bits)| {
            Some((
                ip.parse::<Ipv4Addr>().ok()?,
                bits.parse::<u32>().ok().filter(|b| (8..=30).contains(b))?,
            ))
        });
        let (ip, bits) = parsed.unwrap_or((Ipv4Addr::new(10, 96, 0, 0), 12));
        let size = 1u32 << (32 - bits);
        ClusterIps {
            base: u32::from(ip) & !(size - 1),
            size,
            next: 1,
            used: BTreeSet::new(),
        }
    }

    /// The range as CIDR text.
    pub fn range(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.base),
            32 - self.size.trailing_zeros()
        )
    }

    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|a| (u32::from(a) & !(self.size - 1)) == self.base)
    }

    pub fn allocate(&mut self) -> Option<String> {
        for _ in 1..self.size - 1 {
            let offset = self.next;
            self.next = if self.next + 2 >= self.size {
                1
            } else {
                self.next + 1
            };
            if self.used.insert(offset) {
                return Some(Ipv4Addr::from(self.base + offset).to_string());
            }
        }
        None
    }

    /// Claims a specific address; false when it is outside the range or taken.
    pub fn claim(&mut self, ip: &str) -> bool {
        match ip.parse::<Ipv4Addr>() {
            Ok(a) if self.contains(ip) => self.used.insert(u32::from(a) - self.base),
            _ => false,
        }
    }

    pub fn release(&mut self, ip: &str) {
        if let Ok(a) = ip.parse::<Ipv4Addr>()
            && self.contains(ip)
        {
            self.used.remove(&(u32::from(a) - self.base));
        }
    }
}

/// NodePorts from 30000-32767.
#[derive(Default)]
pub(crate) struct NodePorts {
    used: BTreeSet<u16>,
}

impl NodePorts {
    pub fn allocate(&mut self) -> Option<u16> {
        let port = (30000..=32767).find(|p| !self.used.contains(p))?;
        self.used.insert(port);
        Some(port)
    }

    pub fn claim(&mut self, port: u16) -> bool {
        self.used.insert(port)
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_sequentially_and_reuses() {
        let mut ips = ClusterIps::new("10.96.0.0/12");
        assert_eq!(ips.allocate().as_deref(), Some("10.96.0.1"));
        assert_eq!(ips.allocate().as_deref(), Some("10.96.0.2"));
        assert!(ips.claim("10.96.0.3"));
        assert!(!ips.claim("10.96.0.3"));
        assert!(!ips.claim("192.168.0.1"));
        assert_eq!(ips.allocate().as_deref(), Some("10.96.0.4"));
        ips.release("10.96.0.1");
        assert!(ips.claim("10.96.0.1"));
    }
}
