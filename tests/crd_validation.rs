//! The BackendSet CRD refuses bad specs at admission (issue 23): one case per schema rule, each a good spec
//! with one thing wrong, created against both API server tiers. kube-apiserver 1.20.2 checks every rule the
//! structural schema expresses; the in-memory server checks some keywords only, and the cases of the others
//! are skipped there with a note. The CEL rules (`x-kubernetes-validations`), which 1.20 ignores, are run by
//! kube's client-side CEL evaluator.

#[path = "support/backends.rs"]
mod backends;
mod support;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::cel::{Validator, compile_schema};
use kube::{CustomResourceExt, Resource};
use roster::backendset::BackendSet;
use roster::backendset::spec::{EXEC_NOT_SUPPORTED, ParsedSpec};
use roster_envtest::{TestEnv, Tier};
use serde_json::{Value, json};

/// The schema keyword a case exercises: which tier checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    OneOf,
    Not,
    Pattern,
    Enum,
    Bounds,
    Length,
}

impl Keyword {
    /// Whether the in-memory API server checks this keyword (apiserver/src/schema.rs).
    fn checked_in_memory(self) -> bool {
        matches!(self, Keyword::Enum | Keyword::Bounds | Keyword::Length)
    }
}

/// A spec every rule accepts, using every field a rule constrains.
fn good_spec() -> Value {
    json!({
        "serviceName": "db",
        "backends": [
            {"ip": "198.51.100.10", "ports": {"pg": 5432}, "nodeName": "node-1", "zone": "zone-a"},
            // An empty zone is no zone, as roster has always read it (1.20 checks it as null: it stays nullable).
            {"hostname": "db.example.com", "ports": {"pg": 5433}, "zone": ""}
        ],
        "readinessProbe": {
            "httpGet": {
                "port": "pg",
                "path": "/healthz",
                "scheme": "HTTPS",
                "httpHeaders": [{"name": "X-Probe", "value": "roster"}]
            },
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "successThreshold": 1,
            "failureThreshold": 3,
            "initialDelaySeconds": 0
        }
    })
}

/// `good_spec()` with the value at each JSON pointer replaced (or added).
fn spec_with(changes: &[(&str, Value)]) -> Value {
    let mut spec = good_spec();
    for (pointer, value) in changes {
        let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
        let parent = spec
            .pointer_mut(parent)
            .expect("the parent exists in good_spec()");
        match parent {
            Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value.clone(),
            Value::Object(map) => {
                map.insert(key.to_owned(), value.clone());
            }
            other => panic!("{pointer}: parent {other} is neither object nor array"),
        }
    }
    spec
}

struct Case {
    rule: &'static str,
    keyword: Keyword,
    spec: Value,
    /// What the refusal names, list indices left out (1.20 leaves them out): the field path, and how it failed.
    expect: [&'static str; 2],
}

/// One case per schema rule: (the rule broken, its keyword, where in `good_spec()`, the JSON put there, what
/// the refusal names).
#[rustfmt::skip]
const CASES: [(&str, Keyword, &str, &str, [&str; 2]); 24] = [
    ("a backend with ip and hostname", Keyword::OneOf, "/backends/0",
     r#"{"ip": "198.51.100.10", "hostname": "db.example.com"}"#, ["spec.backends", "oneOf"]),
    ("a backend with neither ip nor hostname", Keyword::OneOf, "/backends/0", r#"{"zone": "zone-a"}"#,
     ["spec.backends", "oneOf"]),
    ("an empty ip", Keyword::Length, "/backends/0", r#"{"ip": ""}"#, ["spec.backends.ip", "at least 1 chars long"]),
    ("a backend port of 0", Keyword::Bounds, "/backends/0/ports/pg", "0",
     ["spec.backends.ports.pg", "greater than or equal to 1"]),
    ("a backend port over 65535", Keyword::Bounds, "/backends/0/ports/pg", "65536",
     ["spec.backends.ports.pg", "less than or equal to 65535"]),
    ("a probe port of 0", Keyword::Bounds, "/readinessProbe/httpGet/port", "0",
     ["spec.readinessProbe.httpGet.port", "greater than or equal to 1"]),
    ("a probe port over 65535", Keyword::Bounds, "/readinessProbe/httpGet/port", "70000",
     ["spec.readinessProbe.httpGet.port", "less than or equal to 65535"]),
    ("a probe port name that is no IANA service name", Keyword::Pattern, "/readinessProbe/httpGet/port",
     r#""Web_Port""#, ["spec.readinessProbe.httpGet.port", "should match"]),
    ("a probe port name over 15 characters", Keyword::Length, "/readinessProbe/httpGet/port",
     r#""postgres-primary""#, ["spec.readinessProbe.httpGet.port", "15"]),
    ("a tcpSocket port over 65535", Keyword::Bounds, "/readinessProbe",
     r#"{"tcpSocket": {"port": 65536}}"#, ["spec.readinessProbe.tcpSocket.port", "less than or equal to 65535"]),
    ("a grpc port of 0", Keyword::Bounds, "/readinessProbe", r#"{"grpc": {"port": 0}}"#,
     ["spec.readinessProbe.grpc.port", "greater than or equal to 1"]),
    ("a scheme other than HTTP and HTTPS", Keyword::Enum, "/readinessProbe/httpGet/scheme", r#""FTP""#,
     ["spec.readinessProbe.httpGet.scheme", r#"supported values: "HTTP", "HTTPS""#]),
    ("an empty header name", Keyword::Length, "/readinessProbe/httpGet/httpHeaders/0/name", r#""""#,
     ["spec.readinessProbe.httpGet.httpHeaders.name", "at least 1 chars long"]),
    ("a negative periodSeconds", Keyword::Bounds, "/readinessProbe/periodSeconds", "-10", [BOUND_PATH, BOUND]),
    ("a periodSeconds of 0", Keyword::Bounds, "/readinessProbe/periodSeconds", "0", [BOUND_PATH, BOUND]),
    ("a timeoutSeconds of 0", Keyword::Bounds, "/readinessProbe/timeoutSeconds", "0", [BOUND_PATH, BOUND]),
    ("a successThreshold of 0", Keyword::Bounds, "/readinessProbe/successThreshold", "0", [BOUND_PATH, BOUND]),
    ("a negative failureThreshold", Keyword::Bounds, "/readinessProbe/failureThreshold", "-3", [BOUND_PATH, BOUND]),
    ("a negative initialDelaySeconds", Keyword::Bounds, "/readinessProbe/initialDelaySeconds", "-1",
     ["spec.readinessProbe.initialDelaySeconds", "greater than or equal to 0"]),
    ("an exec probe beside a handler", Keyword::Not, "/readinessProbe/exec", r#"{"command": ["pg_isready"]}"#,
     ["spec.readinessProbe", "(not)"]),
    ("an exec probe alone", Keyword::Not, "/readinessProbe", r#"{"exec": {"command": ["pg_isready"]}}"#,
     ["spec.readinessProbe", "(not)"]),
    ("a probe without a handler", Keyword::OneOf, "/readinessProbe", r#"{"periodSeconds": 5}"#,
     ["spec.readinessProbe", "oneOf"]),
    ("a probe with two handlers", Keyword::OneOf, "/readinessProbe/tcpSocket", r#"{"port": 5432}"#,
     ["spec.readinessProbe", "oneOf"]),
    ("a serviceName that is no DNS label", Keyword::Pattern, "/serviceName", r#""Primary_DB""#,
     ["spec.serviceName", "should match"]),
];

const BOUND_PATH: &str = "spec.readinessProbe.";
const BOUND: &str = "should be greater than or equal to 1";

fn cases() -> Vec<Case> {
    CASES
        .iter()
        .map(|&(rule, keyword, pointer, value, expect)| Case {
            rule,
            keyword,
            spec: spec_with(&[(pointer, serde_json::from_str(value).expect("a case's JSON"))]),
            expect,
        })
        .collect()
}

/// BackendSets of a fresh namespace on one tier, the CRD registered, as untyped objects (so that a spec
/// the Rust types could not even hold can be sent).
struct BackendSets {
    _env: TestEnv,
    api: Api<DynamicObject>,
    resource: ApiResource,
}

impl BackendSets {
    async fn on(tier: Tier, prefix: &str) -> BackendSets {
        let env = TestEnv::start_tier(tier).await.expect("test environment");
        backends::register_crd(&env).await;
        let ns = env.create_namespace(prefix).await.unwrap();
        let resource = ApiResource::erase::<BackendSet>(&());
        let api = Api::<DynamicObject>::namespaced_with(env.client(), &ns, &resource);
        BackendSets {
            _env: env,
            api,
            resource,
        }
    }

    /// The API server's refusal of `spec`, or `None` when it stored the object.
    async fn refusal(&self, name: &str, spec: Value) -> Option<String> {
        let object = DynamicObject::new(name, &self.resource).data(json!({ "spec": spec }));
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => None,
            Err(kube::Error::Api(status)) => {
                assert_eq!(
                    status.code, 422,
                    "{name}: refused as invalid, not otherwise: {status:?}"
                );
                Some(status.message.clone())
            }
            Err(err) => panic!("{name}: {err}"),
        }
    }
}

async fn each_bad_spec_is_refused(tier: Tier) {
    let sets = BackendSets::on(tier, "crd-validation").await;
    let good = sets.refusal("good", good_spec()).await;
    assert_eq!(good, None, "the good spec is accepted on the {tier} tier");
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        if tier == Tier::Memory && !case.keyword.checked_in_memory() {
            eprintln!(
                "NOTE: the in-memory API server does not check {:?}: skipped {}",
                case.keyword, case.rule
            );
            continue;
        }
        match sets.refusal(&format!("bad-{i}"), case.spec).await {
            None => failures.push(format!("{}: accepted", case.rule)),
            Some(message) if !case.expect.iter().all(|e| without_indices(&message).contains(e)) => failures
                .push(format!(
                    "{}: refused without {:?}: {message}",
                    case.rule, case.expect
                )),
            Some(message) => eprintln!("{tier}: {}: {message}", case.rule),
        }
    }
    assert!(
        failures.is_empty(),
        "on the {tier} tier:\n{}",
        failures.join("\n")
    );
}

/// Every BackendSet the repository shows (examples/*.yaml) is one the schema accepts.
async fn the_examples_are_accepted(tier: Tier) {
    let sets = BackendSets::on(tier, "crd-examples").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut accepted = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for doc in docs.into_iter().filter(|d| d["kind"] == "BackendSet") {
            let name = format!("example-{accepted}");
            let refused = sets.refusal(&name, doc["spec"].clone()).await;
            assert_eq!(refused, None, "{} on the {tier} tier", path.display());
            accepted += 1;
        }
    }
    assert!(accepted >= 2, "the examples hold BackendSets: {accepted}");
}

on_both_tiers!(each_bad_spec_is_refused, the_examples_are_accepted);

/// `message` without list indices: `spec.backends[0].ip` reads `spec.backends.ip`, as 1.20 writes it.
fn without_indices(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('[') {
        let close = rest[open..].find(']').map(|c| open + c);
        match close {
            Some(close) if close > open + 1 && rest[open + 1..close].bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str(&rest[..open]);
                rest = &rest[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn list_indices_are_left_out_of_messages() {
    assert_eq!(
        without_indices("spec.backends[0].ports[12]: [x] in [] a[1b]"),
        "spec.backends.ports: [x] in [] a[1b]"
    );
}

/// The schema's defaults and rules agree with roster's own reading of a spec: the good spec is fully valid.
#[test]
fn the_good_spec_is_valid_for_roster_too() {
    let bs = BackendSet::new("db", serde_json::from_value(good_spec()).unwrap());
    let parsed = ParsedSpec::parse(&bs);
    assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
    assert_eq!(parsed.backends.len(), 2);
    assert!(matches!(parsed.probe, Ok(Some(_))), "{:?}", parsed.probe);
}

/// `status.conditions` is a map keyed by condition type for server-side apply and, on servers from 1.21 on,
/// for status validation. 1.20 accepts the declaration (the CRD is Established in the tests above) but
/// checks neither: its status updates skip list-map validation, and it cannot build the apply schema of a
/// CRD with an int-or-string field (the probe ports), so server-side apply treats every list as atomic
/// there. What is left to check here is the declaration itself.
#[test]
fn status_conditions_are_a_map_keyed_by_their_required_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let required = conditions["items"]["required"].as_array().unwrap();
    assert!(
        required.contains(&json!("type")),
        "a map key must be required: {required:?}"
    );
}

/// The CRD's `openAPIV3Schema`, as the CEL evaluator reads it.
fn schema() -> Value {
    let crd = BackendSet::crd();
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": BackendSet::api_version(&()),
        "kind": BackendSet::kind(&()),
        "metadata": {"name": "db", "namespace": "default"},
        "spec": spec
    })
}

/// The CEL rules compile, pass the good spec, and refuse each cross-field mistake with their message.
#[test]
fn cel_rules_refuse_cross_field_mistakes() {
    let schema = schema();
    let compiled = compile_schema(&schema);
    assert!(!compiled.has_errors(), "{:?}", compiled.compilation_errors());
    let validator = Validator::new();
    let messages = |spec: Value| -> Vec<String> {
        match validator.validate(&schema, &object(spec), None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
        }
    };
    assert_eq!(messages(good_spec()), Vec::<String>::new());
    let both = spec_with(&[("/backends/0/hostname", json!("db.example.com"))]);
    let neither = spec_with(&[("/backends/1", json!({"zone": "zone-a"}))]);
    let two_handlers = spec_with(&[("/readinessProbe/tcpSocket", json!({"port": 5432}))]);
    let no_handler = spec_with(&[("/readinessProbe", json!({"periodSeconds": 5}))]);
    let exec = spec_with(&[("/readinessProbe", json!({"exec": {}, "periodSeconds": 5}))]);
    let one_of_ip = "set exactly one of ip and hostname";
    let one_handler = "set exactly one of tcpSocket, httpGet and grpc";
    assert_eq!(messages(both), [one_of_ip]);
    assert_eq!(messages(neither), [one_of_ip]);
    assert_eq!(messages(two_handlers), [one_handler]);
    assert_eq!(messages(no_handler), [one_handler]);
    assert_eq!(messages(exec), [one_handler, EXEC_NOT_SUPPORTED]);
}
