//! DNS names of BackendSets: lookups through hickory (a configurable server, TTLs clamped to bounds), and
//! the state of each name — its addresses, kept for a grace period when lookups start failing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use jiff::{SignedDuration, Timestamp};

use super::view::Resolution;
use crate::cache::ip_sort_key;

/// The state of one DNS name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsState {
    addresses: Vec<IpAddr>,
    looked_up: bool,
    failing_since: Option<Timestamp>,
    error: Option<String>,
}

impl DnsState {
    /// Before the first lookup, with the addresses a previous roster published (from status), so that a
    /// restart does not empty the Service while the name is looked up again.
    pub fn seeded(mut addresses: Vec<IpAddr>) -> DnsState {
        addresses.sort_by_key(ip_sort_key);
        addresses.dedup();
        DnsState {
            addresses,
            ..DnsState::default()
        }
    }

    pub fn succeeded(&mut self, mut addresses: Vec<IpAddr>) {
        addresses.sort_by_key(ip_sort_key);
        addresses.dedup();
        *self = DnsState {
            addresses,
            looked_up: true,
            failing_since: None,
            error: None,
        };
    }

    /// A failed lookup: the last known addresses stay until the grace period after the first failure ends.
    pub fn failed(&mut self, error: String, now: Timestamp) {
        self.looked_up = true;
        self.failing_since.get_or_insert(now);
        self.error = Some(error);
    }

    /// When the kept addresses are dropped, while lookups fail.
    pub fn grace_ends(&self, grace: Duration) -> Option<Timestamp> {
        let since = self.failing_since?;
        Some(
            since
                .saturating_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX))
                .unwrap_or(since),
        )
    }

    /// The addresses the name has now: none once lookups have failed for longer than `grace`.
    pub fn addresses(&self, now: Timestamp, grace: Duration) -> &[IpAddr] {
        match self.grace_ends(grace) {
            Some(end) if now >= end => &[],
            _ => &self.addresses,
        }
    }

    pub fn resolution(&self, now: Timestamp, grace: Duration) -> Resolution {
        let error = || self.error.clone().unwrap_or_default();
        match (self.looked_up, self.failing_since, self.grace_ends(grace)) {
            (false, _, _) => Resolution::Pending,
            (true, None, _) => Resolution::Resolved,
            (true, Some(since), Some(until)) if now < until && !self.addresses.is_empty() => {
                Resolution::Stale {
                    error: error(),
                    since,
                    until,
                }
            }
            (true, Some(_), _) => Resolution::Failed { error: error() },
        }
    }
}

/// When to look a name up again: after its TTL clamped to `[min, max]`, or after `min` when it failed.
pub fn next_lookup(ttl: Option<Duration>, (min, max): (Duration, Duration)) -> Duration {
    ttl.map_or(min, |ttl| ttl.clamp(min, max.max(min)))
}

/// DNS lookups: A and AAAA, through `--dns-server` or the system's resolv.conf; names are absolute (no
/// search domains), no hosts file and no cache (roster schedules lookups by TTL itself).
#[derive(Clone)]
pub struct Dns {
    resolver: Result<Arc<TokioResolver>, String>,
}

impl Dns {
    pub fn new(server: Option<SocketAddr>) -> Dns {
        let resolver = build_resolver(server)
            .map(Arc::new)
            .map_err(|err| format!("no DNS configuration: {err}"));
        if let Err(err) = &resolver {
            tracing::warn!(%err, "BackendSet hostnames cannot be resolved (set --dns-server)");
        }
        Dns { resolver }
    }

    /// The addresses of `name` and the lowest TTL of the answer.
    pub async fn lookup(&self, name: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
        let absolute = format!("{}.", name.trim_end_matches('.'));
        let lookup = resolver.lookup_ip(absolute.as_str()).await.map_err(describe)?;
        let ttl = lookup
            .as_lookup()
            .answers()
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0);
        let addresses: Vec<IpAddr> = lookup.iter().map(|ip| ip.to_canonical()).collect();
        if addresses.is_empty() {
            return Err("no A or AAAA records".to_owned());
        }
        Ok((addresses, Duration::from_secs(u64::from(ttl))))
    }
}

fn build_resolver(server: Option<SocketAddr>) -> Result<TokioResolver, NetError> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut ns.connections {
                connection.port = addr.port();
            }
            let config = ResolverConfig::from_name_servers(vec![ns]);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder_tokio()?,
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Never;
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build()
}

/// A short message for status.
fn describe(err: NetError) -> String {
    if let NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(no)) = &err {
        return match no.response_code {
            ResponseCode::NXDomain => "NXDOMAIN: the name does not exist".to_owned(),
            ResponseCode::NoError => "no A or AAAA records".to_owned(),
            code => format!("the DNS server answered {code}"),
        };
    }
    if let NetError::Dns(hickory_resolver::net::DnsError::ResponseCode(code)) = &err {
        return format!("the DNS server answered {code}");
    }
    err.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn failures_keep_the_last_addresses_for_the_grace_period() {
        let mut dns = DnsState::default();
        assert_eq!(dns.resolution(at(0), GRACE), Resolution::Pending);
        dns.succeeded(ips(&["198.51.100.20", "198.51.100.10", "198.51.100.20"]));
        assert_eq!(
            dns.addresses(at(1), GRACE),
            ips(&["198.51.100.10", "198.51.100.20"])
        );
        assert_eq!(dns.resolution(at(1), GRACE), Resolution::Resolved);

        dns.failed("request timed out".into(), at(10));
        dns.failed("request timed out".into(), at(20));
        assert_eq!(
            dns.addresses(at(309), GRACE).len(),
            2,
            "kept within the grace period"
        );
        assert_eq!(
            dns.resolution(at(309), GRACE),
            Resolution::Stale {
                error: "request timed out".into(),
                since: at(10),
                until: at(310)
            },
            "the grace period runs from the first failure"
        );
        assert!(dns.addresses(at(310), GRACE).is_empty());
        assert_eq!(
            dns.resolution(at(310), GRACE),
            Resolution::Failed {
                error: "request timed out".into()
            }
        );

        dns.succeeded(ips(&["198.51.100.30"]));
        assert_eq!(dns.resolution(at(311), GRACE), Resolution::Resolved);
        assert_eq!(dns.grace_ends(GRACE), None);
    }

    #[test]
    fn a_name_that_never_resolved_fails_at_once() {
        let mut dns = DnsState::default();
        dns.failed("NXDOMAIN: the name does not exist".into(), at(0));
        assert!(dns.addresses(at(0), GRACE).is_empty());
        assert_eq!(
            dns.resolution(at(0), GRACE),
            Resolution::Failed {
                error: "NXDOMAIN: the name does not exist".into()
            }
        );
    }

    #[test]
    fn seeded_addresses_survive_until_the_first_answer() {
        let mut dns = DnsState::seeded(ips(&["198.51.100.10"]));
        assert_eq!(dns.resolution(at(0), GRACE), Resolution::Pending);
        assert_eq!(dns.addresses(at(0), GRACE), ips(&["198.51.100.10"]));
        dns.failed("timed out".into(), at(5));
        assert!(matches!(dns.resolution(at(6), GRACE), Resolution::Stale { .. }));
    }

    #[test]
    fn ttls_are_clamped() {
        let bounds = (Duration::from_secs(5), Duration::from_secs(300));
        let cases = [
            (Some(0), 5),
            (Some(1), 5),
            (Some(60), 60),
            (Some(86_400), 300),
            (None, 5),
        ];
        for (ttl, want) in cases {
            assert_eq!(
                next_lookup(ttl.map(Duration::from_secs), bounds),
                Duration::from_secs(want),
                "{ttl:?}"
            );
        }
    }
}
