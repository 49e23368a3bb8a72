//! The BackendSet flags, flattened into `roster run`'s flags by the lead; each also from the environment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::args::parse_duration;

/// Networks probes never reach, whatever `--probe-deny-cidrs` says: loopback, link-local (which holds the
/// cloud metadata address 169.254.169.254) and "this network".
pub const ALWAYS_DENIED: [&str; 5] = [
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/8",
];

#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Networks BackendSet probes never reach; their backends are reported in status and not published.
    /// Loopback, link-local and 0.0.0.0/8 are always included.
    #[arg(long, env = "ROSTER_PROBE_DENY_CIDRS", value_delimiter = ',', value_parser = parse_cidr)]
    pub probe_deny_cidrs: Vec<IpNet>,
    /// The cluster's Service CIDR, added to the probe deny list.
    #[arg(long, env = "ROSTER_SERVICE_CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub service_cidr: Vec<IpNet>,
    /// The cluster's pod CIDR, added to the probe deny list: a BackendSet must not publish pods behind a
    /// Service whose selector does not choose them, nor probe them from roster's network position.
    #[arg(long, env = "ROSTER_POD_CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub pod_cidr: Vec<IpNet>,
    /// BackendSet probes in flight at once, over all BackendSets.
    #[arg(long, env = "ROSTER_PROBE_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub probe_concurrency: u32,
    /// DNS server (ip:port) for BackendSet hostnames (default: the system's resolv.conf).
    #[arg(long, env = "ROSTER_DNS_SERVER", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,
    /// Shortest time a DNS answer is used before resolving again (lower TTLs are raised to it).
    #[arg(long, env = "ROSTER_DNS_MIN_TTL", default_value = "5s", value_parser = parse_duration)]
    pub dns_min_ttl: Duration,
    /// Longest time a DNS answer is used before resolving again (higher TTLs are cut to it).
    #[arg(long, env = "ROSTER_DNS_MAX_TTL", default_value = "300s", value_parser = parse_duration)]
    pub dns_max_ttl: Duration,
    /// How long a name whose lookups fail keeps its last known addresses (marked stale in status).
    #[arg(long, env = "ROSTER_DNS_FAILURE_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub dns_failure_grace: Duration,
}

impl Default for BackendArgs {
    fn default() -> Self {
        BackendArgs {
            probe_deny_cidrs: Vec::new(),
            service_cidr: Vec::new(),
            pod_cidr: Vec::new(),
            probe_concurrency: 64,
            dns_server: None,
            dns_min_ttl: Duration::from_secs(5),
            dns_max_ttl: Duration::from_secs(300),
            dns_failure_grace: Duration::from_secs(300),
        }
    }
}

impl BackendArgs {
    /// The complete deny list: the built-in networks, `--probe-deny-cidrs`, `--service-cidr`, then
    /// `--pod-cidr`.
    pub fn deny_list(&self) -> Vec<IpNet> {
        let mut nets: Vec<IpNet> = ALWAYS_DENIED
            .iter()
            .map(|cidr| cidr.parse().expect("static CIDR"))
            .collect();
        let flags = self
            .probe_deny_cidrs
            .iter()
            .chain(&self.service_cidr)
            .chain(&self.pod_cidr);
        for net in flags {
            if !nets.contains(net) {
                nets.push(*net);
            }
        }
        nets
    }

    /// `[min, max]` of DNS re-resolution, `max` raised to `min` when given the other way round.
    pub fn ttl_bounds(&self) -> (Duration, Duration) {
        (self.dns_min_ttl, self.dns_max_ttl.max(self.dns_min_ttl))
    }
}

/// A CIDR (`10.96.0.0/12`); a bare IP is a single-address network.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid CIDR '{text}': expected e.g. 10.96.0.0/12 or fd00::/108"))
}

/// `ip:port`, or a bare IP for port 53.
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid DNS server '{text}': expected ip:port, e.g. 10.96.0.10:53"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        backends: BackendArgs,
    }

    fn parse(args: &[&str]) -> Result<BackendArgs, clap::Error> {
        let argv = std::iter::once("roster").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.backends)
    }

    #[test]
    fn defaults_match_the_documentation() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.probe_concurrency, 64);
        assert_eq!(args.dns_server, None);
        assert_eq!(args.dns_min_ttl, Duration::from_secs(5));
        assert_eq!(args.dns_max_ttl, Duration::from_secs(300));
        assert_eq!(args.dns_failure_grace, Duration::from_secs(300));
        let deny: Vec<String> = args.deny_list().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            deny,
            [
                "127.0.0.0/8",
                "::1/128",
                "169.254.0.0/16",
                "fe80::/10",
                "0.0.0.0/8"
            ]
        );
        let default = BackendArgs::default();
        assert_eq!(
            (
                default.probe_concurrency,
                default.dns_min_ttl,
                default.dns_max_ttl,
                default.dns_failure_grace
            ),
            (
                args.probe_concurrency,
                args.dns_min_ttl,
                args.dns_max_ttl,
                args.dns_failure_grace
            )
        );
    }

    #[test]
    fn deny_list_adds_flags_and_the_service_cidr() {
        let args = parse(&[
            "--probe-deny-cidrs",
            "10.0.0.0/8,192.168.1.7",
            "--probe-deny-cidrs",
            "fd00::/8",
            "--service-cidr",
            "10.96.0.1/12",
        ])
        .unwrap();
        let deny: Vec<String> = args.deny_list().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            deny[5..],
            ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "10.96.0.0/12"],
            "flags after the built-ins, host bits cleared"
        );
    }

    #[test]
    fn the_pod_cidr_joins_the_deny_list() {
        let args = parse(&[
            "--service-cidr",
            "10.96.0.0/12",
            "--pod-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--pod-cidr",
            "10.96.0.0/12",
        ])
        .unwrap();
        let deny: Vec<String> = args.deny_list().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            deny[5..],
            ["10.96.0.0/12", "10.244.0.0/16", "fd00:10:244::/56"],
            "after the Service CIDR, each network once"
        );
        let list = super::super::deny::DenyList::new(args.deny_list());
        assert!(list.denies("10.244.3.7".parse().unwrap()).is_some());
        assert!(list.denies("fd00:10:244::5".parse().unwrap()).is_some());
        assert_eq!(list.denies("10.245.0.1".parse().unwrap()), None);
        assert!(parse(&["--pod-cidr", "10.244.0.0/33"]).is_err());
    }

    #[test]
    fn flags_are_validated() {
        let cases: [(&[&str], bool); 8] = [
            (&["--probe-deny-cidrs", "10.0.0.0/33"], false),
            (&["--probe-deny-cidrs", "nope"], false),
            (&["--dns-server", "10.96.0.10:5353"], true),
            (&["--dns-server", "10.96.0.10"], true),
            (&["--dns-server", "dns.example.com:53"], false),
            (&["--probe-concurrency", "0"], false),
            (&["--dns-min-ttl", "1m", "--dns-max-ttl", "10s"], true),
            (&["--dns-failure-grace", "soon"], false),
        ];
        for (args, ok) in cases {
            assert_eq!(parse(args).is_ok(), ok, "{args:?}");
        }
        let args = parse(&[
            "--dns-server",
            "10.96.0.10",
            "--dns-min-ttl",
            "1m",
            "--dns-max-ttl",
            "10s",
        ])
        .unwrap();
        assert_eq!(args.dns_server, Some("10.96.0.10:53".parse().unwrap()));
        assert_eq!(
            args.ttl_bounds(),
            (Duration::from_secs(60), Duration::from_secs(60)),
            "max is never below min"
        );
    }
}
