use serde_json::json;

use super::*;
use crate::cache::{Interner, PodProjection};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

#[test]
fn ages_read_as_kubectl_prints_them() {
    let now = at("2024-01-02T03:04:05Z");
    let cases = [
        ("2024-01-02T03:04:05Z", "0s"),
        ("2024-01-02T03:03:20Z", "45s"),
        ("2024-01-02T03:01:05Z", "3m"),
        ("2024-01-02T03:00:53Z", "3m12s"),
        ("2024-01-02T01:04:05Z", "2h"),
        ("2024-01-02T00:59:05Z", "2h5m"),
        ("2023-12-30T03:04:05Z", "3d"),
        ("2023-12-29T23:04:05Z", "3d4h"),
        ("2024-01-02T03:05:05Z", "0s"),
    ];
    for (since, want) in cases {
        assert_eq!(age(now, at(since)), want, "{since}");
    }
}

#[test]
fn edit_distance_counts_insertions_deletions_and_substitutions() {
    let cases = [
        ("", "", 0),
        ("web", "web", 0),
        ("web", "", 3),
        ("webserver", "webserer", 1),
        ("webserver", "wbeserver", 2),
        ("kitten", "sitting", 3),
        ("db", "web", 2),
    ];
    for (a, b, want) in cases {
        assert_eq!(edit_distance(a, b), want, "{a} {b}");
        assert_eq!(edit_distance(b, a), want, "{b} {a}");
    }
}

fn pod(name: &str, labels: serde_json::Value, interner: &mut Interner) -> PodRecord {
    let projection: PodProjection =
        serde_json::from_value(json!({"metadata": {"namespace": "shop", "name": name, "labels": labels}}))
            .unwrap();
    PodRecord::from_projection(&projection, interner)
}

fn misses(selector: &str, pods: &[(&str, serde_json::Value)]) -> Vec<(String, String, Option<String>)> {
    let mut interner = Interner::new();
    let selector = Selector::parse(selector, &mut interner).unwrap();
    let pods: Vec<PodRecord> = pods
        .iter()
        .map(|(name, labels)| pod(name, labels.clone(), &mut interner))
        .collect();
    let found = near_misses(&selector, &pods);
    found
        .into_iter()
        .map(|m| (m.name, m.requirement, m.label))
        .collect()
}

fn miss(name: &str, requirement: &str, label: Option<&str>) -> (String, String, Option<String>) {
    (name.into(), requirement.into(), label.map(str::to_owned))
}

#[test]
fn near_misses_fail_exactly_one_requirement() {
    let pods = [
        ("match", json!({"app": "shop", "tier": "web"})),
        ("other-tier", json!({"app": "shop", "tier": "frontend"})),
        ("no-tier", json!({"app": "shop"})),
        ("other-app", json!({"app": "blog", "tier": "web"})),
        ("unrelated", json!({"app": "blog"})),
        ("no-labels", json!({})),
    ];
    let want = vec![
        miss("no-tier", "tier=web", None),
        miss("other-app", "app=shop", Some("app=blog")),
        miss("other-tier", "tier=web", Some("tier=frontend")),
    ];
    assert_eq!(misses("app=shop,tier=web", &pods), want);
    let want = vec![
        miss("no-tier", "tier in (web)", None),
        miss("other-tier", "tier in (web)", Some("tier=frontend")),
    ];
    assert_eq!(misses("app=shop, tier in (web), !canary", &pods[..3]), want);
}

#[test]
fn a_one_label_selector_misses_only_typos() {
    let pods = [
        ("typo", json!({"app": "webserer"})),
        ("case", json!({"app": "WebServer"})),
        ("other", json!({"app": "db"})),
        ("unlabelled", json!({"tier": "webserver"})),
        ("match", json!({"app": "webserver"})),
    ];
    let want = vec![
        miss("case", "app=webserver", Some("app=WebServer")),
        miss("typo", "app=webserver", Some("app=webserer")),
    ];
    assert_eq!(misses("app=webserver", &pods), want);
    assert_eq!(misses("app in (db, webserver)", &pods[..1]).len(), 1);
    assert!(
        misses("app", &pods[3..4]).is_empty(),
        "Exists has no value to mistype"
    );
}
