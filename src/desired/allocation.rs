//! The allocation of `topology-mode: Auto`: zones get endpoints in proportion to the allocatable CPU of
//! their ready worker Nodes.
//!
//! Of `n` ready endpoints, a zone's share is its fraction of the CPU times `n`, and its minimum that share
//! divided by 1 + [`OVERLOAD_THRESHOLD`], rounded up: with fewer, its endpoints would carry more than 20 %
//! over their fair load. Each ready endpoint starts hinted for its own zone; then, as upstream does, one
//! endpoint at a time moves from the zone furthest above its target (the share, or the minimum when that is
//! more) to the zone furthest below it, while both are at least half an endpoint away and one of them a
//! whole one. Upstream stops there, even when the rounding leaves a zone below its minimum; roster then
//! moves one more endpoint to it from the zone furthest above its own minimum, and sets no hint at all when
//! no zone can spare one.
//!
//! Which endpoints a zone gives away: first those already hinted for a zone that still receives (so a sync
//! changes as few hints as it can), then the others in endpoint order.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::Endpoint;

use super::hints::{HintsDisabled, OVERLOAD_THRESHOLD, ZoneCapacity, is_ready, zone_hint};

type ZoneCounts = BTreeMap<Arc<str>, usize>;

/// Every ready endpoint hinted (not-ready ones are left without hints), or the reason none is.
pub fn allocate(
    capacity: &ZoneCapacity,
    endpoints: &mut [&mut Endpoint],
    previous: &dyn Fn(&Endpoint) -> Option<Arc<str>>,
) -> Result<(), HintsDisabled> {
    let ZoneCapacity::Known(zones) = capacity else {
        return Err(HintsDisabled::InsufficientNodeInfo);
    };
    if zones.len() < 2 {
        return Err(HintsDisabled::NodesInOneZone);
    }
    let ready: Vec<usize> = (0..endpoints.len()).filter(|i| is_ready(endpoints[*i])).collect();
    let overloaded = HintsDisabled::Overloaded {
        endpoints: ready.len(),
        zones: zones.len(),
    };
    if zones.len() > ready.len() {
        return Err(HintsDisabled::TooFewEndpoints {
            endpoints: ready.len(),
            zones: zones.len(),
        });
    }
    let shares = shares(zones, ready.len()).ok_or(overloaded.clone())?;
    let by_zone = ready_by_zone(endpoints, &ready)?;
    if let Some(zone) = zones.keys().find(|z| !by_zone.contains_key(*z)) {
        return Err(HintsDisabled::ZoneWithoutEndpoints(zone.clone()));
    }
    let counts: ZoneCounts = by_zone.iter().map(|(z, e)| (z.clone(), e.len())).collect();
    let flows = Flows::between(&shares, &counts).ok_or(overloaded)?;
    let was_for = |i: usize| previous(endpoints[i]);
    let donated = flows.donations(&by_zone, &was_for);
    for (zone, members) in &by_zone {
        for i in members {
            endpoints[*i].hints = zone_hint(donated.get(i).unwrap_or(zone));
        }
    }
    Ok(())
}

/// The ready endpoints (indices) of each zone, or the reason when one has no zone.
fn ready_by_zone(
    endpoints: &[&mut Endpoint],
    ready: &[usize],
) -> Result<BTreeMap<Arc<str>, Vec<usize>>, HintsDisabled> {
    let mut by_zone: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
    for i in ready {
        let zone = endpoints[*i].zone.as_deref().filter(|z| !z.is_empty());
        let zone = zone.ok_or(HintsDisabled::EndpointWithoutZone)?;
        by_zone.entry(Arc::from(zone)).or_default().push(*i);
    }
    Ok(by_zone)
}

/// What a zone should receive of the ready endpoints.
#[derive(Clone, Copy, Debug)]
struct Share {
    /// Its CPU share, or its minimum when that is more.
    target: f64,
    /// Fewer would overload its endpoints past the threshold.
    minimum: usize,
}

/// Each zone's share of `n` endpoints; `None` when the minimums alone need more than `n`.
fn shares(zones: &BTreeMap<Arc<str>, u64>, n: usize) -> Option<BTreeMap<Arc<str>, Share>> {
    let total: u64 = zones.values().sum();
    let mut minimums = 0;
    let mut shares = BTreeMap::new();
    for (zone, cpu) in zones {
        let share = *cpu as f64 / total as f64 * n as f64;
        let minimum = (share * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil() as usize;
        minimums += minimum;
        if minimums > n {
            return None;
        }
        let target = share.max(minimum as f64);
        shares.insert(zone.clone(), Share { target, minimum });
    }
    Some(shares)
}

/// How many endpoints each zone gives away and receives; no zone does both.
#[derive(Debug, Default)]
struct Flows {
    give: ZoneCounts,
    receive: ZoneCounts,
}

impl Flows {
    /// The flows that bring zones from their own endpoints (`counts`) to their shares; `None` when a zone
    /// stays below its minimum.
    fn between(shares: &BTreeMap<Arc<str>, Share>, counts: &ZoneCounts) -> Option<Flows> {
        let mut flows = Flows::default();
        flows.balance(shares, counts);
        flows.top_up(shares, counts)?;
        flows.net();
        Some(flows)
    }

    fn move_one(&mut self, from: &Arc<str>, to: &Arc<str>) {
        *self.give.entry(from.clone()).or_default() += 1;
        *self.receive.entry(to.clone()).or_default() += 1;
    }

    /// Endpoints hinted for `zone` after the flows.
    fn after(&self, zone: &Arc<str>, counts: &ZoneCounts) -> usize {
        let get = |map: &ZoneCounts| map.get(zone).copied().unwrap_or(0);
        get(counts) + get(&self.receive) - get(&self.give)
    }

    /// Upstream's moves towards the targets (see the module doc).
    fn balance(&mut self, shares: &BTreeMap<Arc<str>, Share>, counts: &ZoneCounts) {
        let mut surplus = BTreeMap::new();
        let mut deficit = BTreeMap::new();
        for (zone, share) in shares {
            let have = counts.get(zone).copied().unwrap_or(0) as f64;
            if have > share.target {
                surplus.insert(zone.clone(), have - share.target);
            } else if have < share.target {
                deficit.insert(zone.clone(), share.target - have);
            }
        }
        while let (Some((from, giving)), Some((to, taking))) = (largest(&surplus), largest(&deficit)) {
            if (giving < 1.0 && taking < 1.0) || giving < 0.5 || taking < 0.5 {
                break;
            }
            self.move_one(&from, &to);
            *surplus.get_mut(&from).expect("listed") -= 1.0;
            *deficit.get_mut(&to).expect("listed") -= 1.0;
        }
    }

    /// One more endpoint for each zone still below its minimum, from the zone furthest above its own that
    /// still has endpoints of its own to give.
    fn top_up(&mut self, shares: &BTreeMap<Arc<str>, Share>, counts: &ZoneCounts) -> Option<()> {
        loop {
            let short = shares.iter().find(|(z, s)| self.after(z, counts) < s.minimum);
            let Some((short, _)) = short else { return Some(()) };
            let spare = |(z, s): &(&Arc<str>, &Share)| {
                let own_left = counts.get(*z).copied().unwrap_or(0) > self.give.get(*z).copied().unwrap_or(0);
                let above = self.after(z, counts).saturating_sub(s.minimum);
                (own_left && above > 0).then_some(above)
            };
            let donor = shares
                .iter()
                .filter_map(|entry| Some((entry.0, spare(&entry)?)))
                .min_by_key(|(_, above)| Reverse(*above));
            let (donor, _) = donor?;
            let (donor, short) = (donor.clone(), short.clone());
            self.move_one(&donor, &short);
        }
    }

    /// A zone that both gives and receives does only the difference.
    fn net(&mut self) {
        for (zone, given) in self.give.iter_mut() {
            if let Some(received) = self.receive.get_mut(zone) {
                let both = (*given).min(*received);
                *given -= both;
                *received -= both;
            }
        }
        self.give.retain(|_, n| *n > 0);
        self.receive.retain(|_, n| *n > 0);
    }

    /// Which endpoints the giving zones hand to which receiving zones (see the module doc).
    fn donations(
        mut self,
        by_zone: &BTreeMap<Arc<str>, Vec<usize>>,
        was_for: &dyn Fn(usize) -> Option<Arc<str>>,
    ) -> BTreeMap<usize, Arc<str>> {
        let mut donated = BTreeMap::new();
        for (from, quota) in self.give.iter_mut() {
            for i in &by_zone[from] {
                let to = was_for(*i).filter(|to| self.receive.get(to).is_some_and(|n| *n > 0));
                let Some(to) = to.filter(|_| *quota > 0) else {
                    continue;
                };
                *quota -= 1;
                *self.receive.get_mut(&to).expect("receiving") -= 1;
                donated.insert(*i, to);
            }
        }
        for (to, need) in self.receive {
            for _ in 0..need {
                let Some((from, quota)) = self.give.iter_mut().find(|(_, q)| **q > 0) else {
                    break;
                };
                let Some(donor) = by_zone[from].iter().find(|i| !donated.contains_key(*i)) else {
                    break;
                };
                *quota -= 1;
                donated.insert(*donor, to.clone());
            }
        }
        donated
    }
}

/// The zone with the largest positive value (the first by name among equals).
fn largest(values: &BTreeMap<Arc<str>, f64>) -> Option<(Arc<str>, f64)> {
    let mut best: Option<(&Arc<str>, f64)> = None;
    for (zone, value) in values {
        if *value > best.map_or(0.0, |(_, b)| b) {
            best = Some((zone, *value));
        }
    }
    best.map(|(zone, value)| (zone.clone(), value))
}
