//! Generated files must match the Rust types: crds/ and the chart's copy.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

#[test]
fn crds_match_the_rust_types() {
    for (file, yaml) in roster::backendset::crd_files().unwrap() {
        for dir in ["crds", "charts/roster/crds"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join(file);
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "{} is out of date with src/backendset/crd.rs: run `cargo run --bin crdgen -- {dir}`",
                path.display()
            );
        }
    }
}

/// The YAML writer loses nothing: what a YAML reader (kubectl, Helm) gets back is the CRD of the Rust types.
#[test]
fn the_crd_yaml_reads_back_as_the_rust_types() {
    let files = roster::backendset::crd_files().unwrap();
    let (_, yaml) = files
        .iter()
        .find(|(file, _)| *file == "backendsets.roster.dev.yaml")
        .expect("the BackendSet CRD file");
    let read: CustomResourceDefinition = serde_saphyr::from_str(yaml).expect("CRD YAML");
    assert_eq!(read, roster::backendset::BackendSet::crd());
}
