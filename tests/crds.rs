//! Generated files must match the Rust types: crds/ and the chart's copy.

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
