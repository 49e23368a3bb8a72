//! Writes crds/*.yaml from the Rust types: `cargo run --bin crdgen` (a test fails when they drift).

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "crds".into());
    for (file, yaml) in roster::backendset::crd_files()? {
        let path = std::path::Path::new(&dir).join(file);
        std::fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
