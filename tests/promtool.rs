//! roster's alert rules (charts/roster/prometheus/roster.rules.yaml) through promtool, Debian's `prometheus`
//! package (scripts/test installs it; without it these tests fail, saying so):
//! * `promtool check rules` accepts the file;
//! * `promtool test rules tests/prometheus/roster.rules.test.yaml` passes, and fails on a copy of the rules
//!   without their `for:` clauses (the tests see the difference);
//! * the unit tests fire every alert and leave every alert silent somewhere;
//! * every alert has a severity, a summary, a description and a runbook_url to its paragraph in the chart
//!   README.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn rules_path() -> PathBuf {
    Path::new(REPO).join("charts/roster/prometheus/roster.rules.yaml")
}

fn unit_tests_path() -> PathBuf {
    Path::new(REPO).join("tests/prometheus/roster.rules.test.yaml")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `promtool ARGS`: (success, stdout + stderr). Panics when promtool is not installed.
fn promtool(args: &[&Path]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("promtool is not installed ({err}): apt-get install prometheus (scripts/test does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The alerting rules of a rules file.
fn alerts(rules: &Value) -> Vec<&Value> {
    let groups = rules["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn promtool_check_rules_accepts_the_rules_file() {
    let (ok, out) = promtool(&[Path::new("check"), Path::new("rules"), &rules_path()]);
    assert!(ok, "{out}");
    let count = alerts(&yaml(&rules_path())).len();
    assert!(out.contains("SUCCESS"), "{out}");
    assert!(count >= 15, "{count} alerts");
}

#[test]
fn promtool_unit_tests_pass() {
    let (ok, out) = promtool(&[Path::new("test"), Path::new("rules"), &unit_tests_path()]);
    assert!(ok, "promtool test rules failed:\n{out}");
}

/// The unit tests can fail: without `for:`, the alerts fire at the evaluations that expect them pending.
#[test]
fn promtool_unit_tests_fail_on_changed_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(rules_path()).unwrap();
    let hasty: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with("for:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(hasty, rules);
    std::fs::write(dir.path().join("roster.rules.yaml"), hasty).unwrap();
    let tests = std::fs::read_to_string(unit_tests_path()).unwrap();
    let original = "../../charts/roster/prometheus/roster.rules.yaml";
    assert!(tests.contains(original), "the unit tests load {original}");
    let test_file = dir.path().join("roster.rules.test.yaml");
    std::fs::write(&test_file, tests.replace(original, "roster.rules.yaml")).unwrap();
    let (ok, out) = promtool(&[Path::new("test"), Path::new("rules"), &test_file]);
    assert!(!ok, "the unit tests pass without `for:`:\n{out}");
    assert!(out.contains("RosterNoLeader"), "{out}");
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let tests = yaml(&unit_tests_path());
    let mut fired = std::collections::BTreeSet::new();
    let mut silent = std::collections::BTreeSet::new();
    for group in tests["tests"].as_array().expect("tests") {
        for case in group["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
            match expected {
                0 => silent.insert(name),
                _ => fired.insert(name),
            };
        }
    }
    let rules = yaml(&rules_path());
    let names: std::collections::BTreeSet<String> = alerts(&rules)
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_owned())
        .collect();
    let never_fired: Vec<_> = names.difference(&fired).collect();
    let never_silent: Vec<_> = names.difference(&silent).collect();
    assert!(never_fired.is_empty(), "no unit test fires {never_fired:?}");
    assert!(
        never_silent.is_empty(),
        "no unit test keeps {never_silent:?} silent"
    );
    let unknown: Vec<_> = fired.union(&silent).filter(|n| !names.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "unit tests of alerts that do not exist: {unknown:?}"
    );
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to dashes, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_annotations_and_a_runbook_paragraph() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("charts/roster/README.md")).unwrap();
    let section = readme
        .split("\n## Alerts and runbooks\n")
        .nth(1)
        .expect("the chart README's \"Alerts and runbooks\"")
        .split("\n## ")
        .next()
        .unwrap();
    let paragraphs: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let base = "https://github.com/roster-dev/roster/blob/main/charts/roster/README.md#";
    let rules = yaml(&rules_path());
    let mut linked = Vec::new();
    for alert in alerts(&rules) {
        let name = alert["alert"].as_str().unwrap();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            let text = alert["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 10, "{name}: {key} {text:?}");
        }
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let fragment = url
            .strip_prefix(base)
            .unwrap_or_else(|| panic!("{name}: runbook_url {url}"));
        assert_eq!(
            fragment,
            anchor(name),
            "{name}: the runbook is the paragraph named after it"
        );
        assert!(
            paragraphs.contains(&fragment.to_owned()),
            "{name}: no paragraph #{fragment}"
        );
        linked.push(fragment.to_owned());
    }
    let orphans: Vec<_> = paragraphs.iter().filter(|p| !linked.contains(p)).collect();
    assert!(orphans.is_empty(), "runbook paragraphs of no alert: {orphans:?}");
    assert_eq!(anchor("Alerts and runbooks"), "alerts-and-runbooks");
}
