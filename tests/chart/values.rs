//! Render tests of the chart's values (issue 23): each value renders what it promises, offline, as
//! `helm template` does. Skipped (reason printed) without helm-python-sdk; failed instead in CI.

use serde_json::{Value, json};

use crate::process::run_flags;
use crate::render::*;

const NS: &str = "roster-system";

/// The default values with `overrides` (`--set-json KEY=JSON`), rendered for release `release`.
fn render_as(release: &str, overrides: &[(&str, Value)]) -> Result<Vec<Value>, String> {
    let out = tempfile::tempdir().unwrap();
    let render = overrides
        .iter()
        .fold(Render::new("default", release, NS), |r, (key, value)| {
            r.with(key, value.clone())
        });
    render.try_run(out.path())
}

fn render(overrides: &[(&str, Value)]) -> Vec<Value> {
    render_as("roster", overrides).unwrap_or_else(|err| panic!("{overrides:?}: {err}"))
}

fn render_all_on() -> Vec<Value> {
    let out = tempfile::tempdir().unwrap();
    Render::new("all-on", "roster", NS).run(out.path())
}

fn named<'d>(docs: &'d [Value], k: &str, name: &str) -> &'d Value {
    docs.iter()
        .find(|d| kind(d) == k && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {k} {name} among {:?}", names(docs)))
}

fn names(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                kind(d),
                d["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// The chart's container args as `roster run` reads them.
fn parsed_run(args: Vec<String>) -> roster::args::RunArgs {
    use clap::Parser;
    let argv = std::iter::once("roster".to_string()).chain(args);
    match roster::args::Cli::try_parse_from(argv).unwrap().command {
        roster::args::Command::Run(run) => run,
        #[allow(unreachable_patterns)]
        _ => panic!("roster run"),
    }
}

fn pod_spec(docs: &[Value]) -> &Value {
    &of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
}

fn container(docs: &[Value]) -> &Value {
    &pod_spec(docs)["containers"][0]
}

#[test]
fn global_values_are_allowed_and_other_unknown_keys_are_not() {
    if !tools_available(false) {
        return;
    }
    render(&[(
        "global",
        json!({"imageRegistry": "registry.example.com", "storageClass": "fast"}),
    )]);
    let err = render_as("roster", &[("globals", json!({}))]).unwrap_err();
    assert!(
        err.contains("additional properties 'globals' not allowed"),
        "{err}"
    );
}

#[test]
fn name_overrides_rename_every_object() {
    if !tools_available(false) {
        return;
    }
    let docs = render(&[("nameOverride", json!("endpoints"))]);
    named(&docs, "Deployment", "roster-endpoints");
    named(&docs, "Service", "roster-endpoints-metrics");
    let labels = &of_kind(&docs, "Deployment")[0]["spec"]["selector"]["matchLabels"];
    assert_eq!(labels["app.kubernetes.io/name"], "endpoints");

    let docs = render(&[("fullnameOverride", json!("edge-endpoints"))]);
    for (k, name) in [
        ("Deployment", "edge-endpoints"),
        ("ServiceAccount", "edge-endpoints"),
        ("ClusterRole", "edge-endpoints"),
        ("Role", "edge-endpoints-lease"),
        ("Service", "edge-endpoints-metrics"),
        ("PodDisruptionBudget", "edge-endpoints"),
    ] {
        named(&docs, k, name);
    }
    assert!(container_args(&docs).contains(&"--lease-name=edge-endpoints".to_string()));
}

/// Helm accepts release names of up to 53 characters; with the chart's suffixes (`-metrics`,
/// `-backendset-view`, ...) and overrides every name and label value must still fit in 63.
#[test]
fn every_name_fits_in_63_characters_for_every_release_name() {
    if !tools_available(false) {
        return;
    }
    let long = "a".repeat(53);
    let with_chart_name = format!("{}-roster", "b".repeat(46));
    let long_override = "c".repeat(63);
    let runs: Vec<(&str, Vec<(&str, Value)>)> = vec![
        (&long, vec![]),
        (&with_chart_name, vec![]),
        ("r", vec![("nameOverride", json!(long_override))]),
        (&long, vec![("fullnameOverride", json!(long_override))]),
        (
            &long,
            vec![
                ("metrics.serviceMonitor.enabled", json!(true)),
                ("metrics.grafanaDashboard.enabled", json!(true)),
                ("controller.namespace", json!("apps")),
            ],
        ),
    ];
    for (release, overrides) in runs {
        let docs = render_as(release, &overrides).unwrap_or_else(|e| panic!("{release}: {e}"));
        let mut too_long = Vec::new();
        for doc in docs.iter().filter(|d| kind(d) != "CustomResourceDefinition") {
            let name = doc["metadata"]["name"].as_str().unwrap();
            if name.len() > 63 || name.ends_with('-') {
                too_long.push(format!("{} {name} ({})", kind(doc), name.len()));
            }
            for (key, value) in doc["metadata"]["labels"].as_object().into_iter().flatten() {
                let value = value.as_str().unwrap_or_default();
                if value.len() > 63 {
                    too_long.push(format!(
                        "{} {name}: label {key}={value} ({})",
                        kind(doc),
                        value.len()
                    ));
                }
            }
        }
        assert!(
            too_long.is_empty(),
            "release {release} {overrides:?}:\n{}",
            too_long.join("\n")
        );
    }
    // The check can fail: a 53-character release name alone makes names that reach the limit.
    let docs = render_as(&long, &[]).unwrap();
    let longest = names(&docs)
        .iter()
        .map(|n| n.split_once('/').unwrap().1.len())
        .max();
    assert_eq!(longest, Some(63), "{:?}", names(&docs));
}

#[test]
fn extra_args_come_last_and_win_and_extra_env_is_added() {
    if !tools_available(false) {
        return;
    }
    let docs = render(&[
        ("extraArgs", json!(["--workers=9", "--dns-server=10.96.0.10"])),
        ("extraEnv", json!([{"name": "RUST_BACKTRACE", "value": "1"}])),
    ]);
    let args = container_args(&docs);
    assert_eq!(args[args.len() - 2..], ["--workers=9", "--dns-server=10.96.0.10"]);
    let run = parsed_run(args);
    assert_eq!(
        run.controller.workers, 9,
        "extraArgs override the chart's --workers=5"
    );
    assert_eq!(run.backends.dns_server, Some("10.96.0.10:53".parse().unwrap()));
    let env = container(&docs)["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "RUST_BACKTRACE", "value": "1"})),
        "{env:?}"
    );
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAME"),
        "the chart's own env stays: {env:?}"
    );
    let err = render_as("roster", &[("extraArgs", json!(["workers=9"]))]).unwrap_err();
    assert!(
        err.contains("/extraArgs/0"),
        "a flag without -- is refused: {err}"
    );
}

#[test]
fn topology_spread_constraints_get_the_pods_labels() {
    if !tools_available(false) {
        return;
    }
    assert_eq!(pod_spec(&render(&[]))["topologySpreadConstraints"], Value::Null);
    let given = json!({"app": "other"});
    let docs = render(&[(
        "topologySpreadConstraints",
        json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": given}}
        ]),
    )]);
    let constraints = pod_spec(&docs)["topologySpreadConstraints"].as_array().unwrap();
    let own = json!({"app.kubernetes.io/name": "roster", "app.kubernetes.io/instance": "roster"});
    assert_eq!(constraints[0]["labelSelector"]["matchLabels"], own);
    assert_eq!(constraints[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(constraints[1]["labelSelector"]["matchLabels"], given);
}

#[test]
fn security_contexts_default_to_the_hardened_ones_and_can_be_replaced() {
    if !tools_available(false) {
        return;
    }
    let docs = render(&[]);
    assert_eq!(
        pod_spec(&docs)["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        container(&docs)["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}})
    );
    let pod = json!({"runAsNonRoot": true, "runAsUser": 1001, "fsGroup": 1001});
    let own = json!({"allowPrivilegeEscalation": false, "privileged": false});
    let docs = render(&[
        ("podSecurityContext", pod.clone()),
        ("securityContext", own.clone()),
    ]);
    // Helm merges user values into the defaults; `null` removes a default key.
    let merged = &pod_spec(&docs)["securityContext"];
    assert_eq!(merged["runAsUser"], 1001);
    assert_eq!(merged["fsGroup"], 1001);
    assert_eq!(container(&docs)["securityContext"]["privileged"], false);
    let docs = render(&[(
        "podSecurityContext",
        json!({"runAsUser": null, "runAsGroup": null}),
    )]);
    assert_eq!(pod_spec(&docs)["securityContext"].get("runAsUser"), None);
}

#[test]
fn an_image_digest_pins_the_image() {
    if !tools_available(false) {
        return;
    }
    let image = |docs: &[Value]| container(docs)["image"].as_str().unwrap().to_string();
    assert_eq!(image(&render(&[])), "ghcr.io/roster-dev/roster:0.1.0");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = render(&[("image.tag", json!("0.1.0")), ("image.digest", json!(digest))]);
    assert_eq!(image(&docs), format!("ghcr.io/roster-dev/roster@{digest}"));
    let err = render_as("roster", &[("image.digest", json!("latest"))]).unwrap_err();
    assert!(err.contains("/image/digest"), "{err}");
}

/// Flags the chart has no value for, and why.
const NO_VALUE: [(&str, &str); 3] = [
    (
        "kubeconfig",
        "in a pod roster uses its ServiceAccount (the in-cluster config)",
    ),
    (
        "identity",
        "each replica's identity is its pod name (POD_NAME), which no value can give",
    ),
    ("help", "not a setting"),
];

#[test]
fn every_roster_run_flag_has_a_value() {
    if !tools_available(false) {
        return;
    }
    let args = container_args(&render_all_on());
    let rendered: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap())
        .collect();
    let missing: Vec<String> = run_flags()
        .into_iter()
        .filter(|flag| !rendered.contains(&flag.as_str()))
        .filter(|flag| !NO_VALUE.iter().any(|(f, _)| f == flag))
        .collect();
    assert!(
        missing.is_empty(),
        "`roster run` flags the chart cannot set: {missing:?}\n{args:?}"
    );
    // And each reaches roster with the value of ci/all-on-values.yaml.
    let run = parsed_run(args);
    let b = &run.backends;
    assert_eq!(b.probe_concurrency, 32);
    assert_eq!(b.dns_server, Some("10.96.0.10:53".parse().unwrap()));
    assert_eq!(
        b.ttl_bounds(),
        (
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(90)
        )
    );
    assert_eq!(b.dns_failure_grace, std::time::Duration::from_secs(5400));
    assert!(run.controller.backendsets);
    assert_eq!(
        run.controller.workers, 12,
        "extraArgs' --workers=12 over controller.workers 8"
    );
}

#[test]
fn service_and_pod_cidrs_join_the_deny_list() {
    if !tools_available(false) {
        return;
    }
    let docs = render(&[
        (
            "controller.serviceCIDRs",
            json!(["10.96.0.0/12", "fd00:10:96::/112"]),
        ),
        ("controller.podCIDRs", json!(["10.244.0.0/16"])),
    ]);
    let args = container_args(&docs);
    for arg in [
        "--service-cidr=10.96.0.0/12",
        "--service-cidr=fd00:10:96::/112",
        "--pod-cidr=10.244.0.0/16",
    ] {
        assert!(args.contains(&arg.to_string()), "{arg} in {args:?}");
    }
    let run = parsed_run(args);
    let deny = roster::backendset::deny::DenyList::new(run.backends.deny_list());
    for ip in ["10.96.0.1", "fd00:10:96::a", "10.244.7.3"] {
        assert!(deny.denies(ip.parse().unwrap()).is_some(), "{ip} denied");
    }
    assert_eq!(deny.denies("10.245.0.1".parse().unwrap()), None);
    let default_args = container_args(&render(&[]));
    assert!(
        !default_args
            .iter()
            .any(|a| a.starts_with("--service-cidr") || a.starts_with("--pod-cidr"))
    );
}

#[test]
fn the_service_monitor_is_complete_and_needs_the_metrics_service() {
    if !tools_available(false) {
        return;
    }
    let docs = render_all_on();
    let sm = of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([NS]));
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "node");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    let service = of_kind(&docs, "Service")[0];
    let selected = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (key, value) in selected {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor selects the Service"
        );
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");

    let on = ("metrics.serviceMonitor.enabled", json!(true));
    let docs = render(std::slice::from_ref(&on));
    assert_eq!(of_kind(&docs, "ServiceMonitor")[0]["metadata"]["namespace"], NS);
    let docs = render(&[on, ("metrics.service.enabled", json!(false))]);
    assert!(of_kind(&docs, "ServiceMonitor").is_empty(), "{:?}", names(&docs));
    assert!(of_kind(&docs, "Service").is_empty());
}

#[test]
fn backendset_roles_aggregate_view_but_not_edit_by_default() {
    if !tools_available(false) {
        return;
    }
    let view_label = "rbac.authorization.k8s.io/aggregate-to-view";
    let edit_labels = [
        "rbac.authorization.k8s.io/aggregate-to-edit",
        "rbac.authorization.k8s.io/aggregate-to-admin",
    ];
    let docs = render(&[]);
    let view = named(&docs, "ClusterRole", "roster-backendset-view");
    let edit = named(&docs, "ClusterRole", "roster-backendset-edit");
    assert_eq!(view["metadata"]["labels"][view_label], "true");
    for label in edit_labels {
        assert_eq!(edit["metadata"]["labels"].get(label), None, "{label} by default");
    }
    let writes = |role: &Value| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"].as_array().unwrap().contains(&json!("backendsets"))
                && r["verbs"].as_array().unwrap().contains(&json!("create"))
        })
    };
    assert!(!writes(view) && writes(edit));

    let docs = render(&[("rbac.backendSetRoles.aggregateEditToBuiltin", json!(true))]);
    let edit = named(&docs, "ClusterRole", "roster-backendset-edit");
    for label in edit_labels {
        assert_eq!(edit["metadata"]["labels"][label], "true", "{label} when asked");
    }
    let docs = render(&[("rbac.backendSetRoles.create", json!(false))]);
    assert!(
        !names(&docs).iter().any(|n| n.contains("backendset-")),
        "{:?}",
        names(&docs)
    );
}

#[test]
fn the_lease_role_names_its_lease() {
    if !tools_available(false) {
        return;
    }
    let docs = render(&[]);
    let role = named(&docs, "Role", "roster-lease");
    let rules = role["rules"].as_array().unwrap();
    let by_name: Vec<&Value> = rules
        .iter()
        .filter(|r| r.get("resourceNames").is_some())
        .collect();
    assert_eq!(by_name.len(), 1, "{rules:?}");
    assert_eq!(by_name[0]["resourceNames"], json!(["roster"]));
    assert_eq!(by_name[0]["verbs"], json!(["get", "list", "watch", "patch"]));
    let unnamed: Vec<&Value> = rules
        .iter()
        .filter(|r| r.get("resourceNames").is_none())
        .collect();
    assert_eq!(unnamed.len(), 1);
    assert_eq!(
        unnamed[0]["verbs"],
        json!(["create"]),
        "only create, which RBAC cannot limit by name"
    );
    assert!(container_args(&docs).contains(&"--lease-name=roster".to_string()));
}

/// prometheus/roster.rules.yaml, the plain rules file, parsed.
fn rules_file() -> Value {
    let path = std::path::Path::new(REPO).join("charts/roster/prometheus/roster.rules.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).expect("the rules file is YAML")
}

/// Every rule of a `groups:` document, in order.
fn rules_of(groups: &Value) -> Vec<&Value> {
    let groups = groups.as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

#[test]
fn the_prometheus_rule_is_the_plain_rules_file() {
    if !tools_available(false) {
        return;
    }
    assert!(
        of_kind(&render(&[]), "PrometheusRule").is_empty(),
        "rendered only when enabled"
    );
    let docs = render(&[("metrics.prometheusRule.enabled", json!(true))]);
    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1, "{:?}", names(&docs));
    assert_eq!(rule[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule[0]["metadata"]["namespace"], NS);
    let file = rules_file();
    assert!(rules_of(&file["groups"]).len() > 10, "{file}");
    assert_eq!(
        rule[0]["spec"]["groups"], file["groups"],
        "the defaults render the rules file unchanged"
    );
}

#[test]
fn prometheus_rule_values_set_the_slo_add_labels_and_leave_alerts_out() {
    if !tools_available(false) {
        return;
    }
    let docs = render_all_on();
    let rule = of_kind(&docs, "PrometheusRule")[0];
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let file = rules_file();
    let (want, got) = (rules_of(&file["groups"]), rules_of(&rule["spec"]["groups"]));
    let alert_names = |rules: &[&Value]| -> Vec<String> {
        rules
            .iter()
            .filter_map(|r| r["alert"].as_str().map(str::to_owned))
            .collect()
    };
    let mut expected = alert_names(&want);
    expected.retain(|a| a != "RosterDNSLookupsFailing");
    assert_eq!(
        alert_names(&got),
        expected,
        "disabledAlerts leaves only its alert out"
    );
    for (rule, original) in got
        .iter()
        .zip(want.iter().filter(|r| r["alert"] != "RosterDNSLookupsFailing"))
    {
        if rule["record"] == "roster:propagation_latency_slo_seconds" {
            assert_eq!(rule["expr"], "vector(2.5)", "propagationLatencySLO");
            continue;
        }
        assert_eq!(rule["expr"], original["expr"]);
        assert_eq!(rule["for"], original["for"]);
        assert_eq!(rule["annotations"], original["annotations"]);
        assert_eq!(
            rule["labels"]["team"], "networking",
            "alertLabels on {}",
            rule["alert"]
        );
        assert_eq!(rule["labels"]["severity"], original["labels"]["severity"]);
    }

    // What the Prometheus Operator hands Prometheus: the spec's groups, as a rules file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.rules.yaml");
    let groups = json!({"groups": rule["spec"]["groups"]});
    std::fs::write(&file, serde_json::to_string(&groups).unwrap()).unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (apt-get install prometheus; scripts/test does)");
    let out = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "promtool check rules, rendered:\n{out}");

    let typo = (
        "metrics.prometheusRule.disabledAlerts",
        json!(["RosterNoLeaders"]),
    );
    let err = render_as("roster", &[("metrics.prometheusRule.enabled", json!(true)), typo]).unwrap_err();
    assert!(err.contains("roster has no alert RosterNoLeaders"), "{err}");
}
