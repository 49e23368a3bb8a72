//! The PromQL that the chart's Grafana dashboard and alert rules run, and the series selectors in it.

use std::path::Path;

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Every `expr` of the dashboard's panels.
pub fn dashboard_exprs() -> Vec<String> {
    let path = Path::new(REPO).join("charts/roster/dashboards/roster.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    let targets = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten());
    targets
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// Every `expr` of the alert rules (recording rules too).
pub fn rule_exprs() -> Vec<String> {
    let path = Path::new(REPO).join("charts/roster/prometheus/roster.rules.yaml");
    let rules: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let groups = rules["groups"].as_array().expect("groups");
    let all = groups.iter().flat_map(|g| g["rules"].as_array().expect("rules"));
    all.map(|r| r["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// The selectors of roster's metrics (`roster_*`, and the `process_*` it exports) in `expr`, each with the
/// label matchers that follow it: `roster_api_writes_total{outcome="conflict"}`, `roster_leader`.
pub fn selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !name_char(bytes[i - 1]))
            && (expr[i..].starts_with("roster_") || expr[i..].starts_with("process_"));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < bytes.len() && name_char(bytes[end]) {
            end += 1;
        }
        if bytes.get(end) == Some(&b'{') {
            end += expr[end..].find('}').expect("a closed label matcher") + 1;
        }
        out.push(expr[i..end].to_owned());
        i = end;
    }
    out
}

#[test]
fn selectors_come_out_of_promql() {
    let expr = r#"sum(rate(roster_api_writes_total{outcome!~"a|b"}[5m])) / x_roster_no and on (job) roster_build_info > roster:slo"#;
    assert_eq!(
        selectors(expr),
        [r#"roster_api_writes_total{outcome!~"a|b"}"#, "roster_build_info"]
    );
    assert_eq!(
        selectors("rate(process_cpu_seconds_total[5m])"),
        ["process_cpu_seconds_total"]
    );
}
