//! `roster dev`: the in-memory API server embedded in the process, with roster running against it.

use crate::args::DevArgs;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("roster dev is not implemented yet")
}
