//! Black-box conformance suite: the same cases against every available API server tier, so that roster's
//! in-memory server stays honest. A case that passes on `real::` and fails on `memory::` is a bug in the
//! in-memory server; where the real 1.20.2 server differs from the written spec, the case follows the real
//! server (and says so in a comment).
//!
//! Trials are named `<tier>::<case>`. Cases a tier cannot serve (on the real tier streaming lists and
//! in-memory hooks; on the memory tier the facade's own cases) are listed as ignored there, with the reason
//! printed, and the closing summary counts each tier's skips by reason. On the real tier every request goes
//! through the v1 EndpointSlice facade (`ROSTER_FACADE=off` bypasses it, and skips the v1 slice cases). Each case runs on its own tokio
//! runtime in its own namespace; the real tier's server is shared by the whole process.
//!
//! ```text
//! KUBEBUILDER_ASSETS=/root/.cache/roster/envtest/1.20.2 cargo test -p roster-envtest --test conformance
//! ROSTER_TESTENV=memory cargo test -p roster-envtest --test conformance -- watch_
//! ```

#[path = "conformance/support.rs"]
mod support;

#[path = "conformance/crd.rs"]
mod crd;
#[path = "conformance/kubectl.rs"]
mod kubectl;
#[path = "conformance/list.rs"]
mod list;
#[path = "conformance/patch.rs"]
mod patch;
#[path = "conformance/slices.rs"]
mod slices;
#[path = "conformance/streaming.rs"]
mod streaming;
#[path = "conformance/types.rs"]
mod types;
#[path = "conformance/versions.rs"]
mod versions;
#[path = "conformance/watch.rs"]
mod watch;
#[path = "conformance/wire.rs"]
mod wire;
#[path = "conformance/writes.rs"]
mod writes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use roster_envtest::{TestEnv, Tier};

use support::{Case, Ctx};

/// Longest a single case may take, set-up included.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

fn all_cases() -> Vec<Case> {
    [
        wire::cases(),
        versions::cases(),
        list::cases(),
        watch::cases(),
        streaming::cases(),
        writes::cases(),
        patch::cases(),
        types::cases(),
        slices::cases(),
        crd::cases(),
        kubectl::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Per tier: cases that ran, passed, and were skipped (by reason).
#[derive(Default)]
struct Tally {
    run: usize,
    passed: usize,
    skipped: BTreeMap<String, usize>,
}

type Tallies = Arc<Mutex<BTreeMap<String, Tally>>>;

fn main() {
    init_tracing();
    let args = Arguments::from_args();
    let tallies: Tallies = Arc::default();
    let mut trials = Vec::new();
    for tier in Tier::available() {
        tallies.lock().unwrap().entry(tier.to_string()).or_default();
        for case in all_cases() {
            let name = format!("{tier}::{}", case.name);
            if let Some(reason) = case.needs.skip_reason(tier) {
                if selected(&args, &name) {
                    println!("{name} skipped: {reason}");
                    let mut tallies = tallies.lock().unwrap();
                    let tally = tallies.entry(tier.to_string()).or_default();
                    *tally.skipped.entry(reason).or_default() += 1;
                }
                trials.push(Trial::test(name, || Ok(())).with_ignored_flag(true));
                continue;
            }
            let tallies = tallies.clone();
            trials.push(Trial::test(name, move || {
                let outcome = run_case(tier, case);
                let mut tallies = tallies.lock().unwrap();
                let tally = tallies.entry(tier.to_string()).or_default();
                tally.run += 1;
                tally.passed += usize::from(outcome.is_ok());
                outcome
            }));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    for (tier, t) in tallies.lock().unwrap().iter() {
        let failed = t.run - t.passed;
        let skipped: usize = t.skipped.values().sum();
        println!(
            "conformance tier={tier}: {} run ({} passed, {failed} failed), {skipped} skipped",
            t.run, t.passed
        );
        for (reason, count) in &t.skipped {
            println!("conformance tier={tier}:   {count} skipped: {reason}");
        }
    }
    conclusion.exit()
}

/// Whether libtest-mimic's name filter (`-- NAME`, `--exact`, `--skip`) keeps this trial.
fn selected(args: &Arguments, name: &str) -> bool {
    let kept = match &args.filter {
        Some(f) if args.exact => name == f,
        Some(f) => name.contains(f.as_str()),
        None => true,
    };
    kept && !args.skip.iter().any(|s| {
        if args.exact {
            name == s
        } else {
            name.contains(s.as_str())
        }
    })
}

fn run_case(tier: Tier, case: Case) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("tokio runtime: {e}")))?;
    runtime.block_on(async move {
        let run = async {
            let env = TestEnv::start_tier(tier).await?;
            let ns = env.create_namespace("c").await?;
            (case.run)(Ctx { env, ns }).await
        };
        match tokio::time::timeout(CASE_TIMEOUT, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failed::from(format!("{e:#}"))),
            Err(_) => Err(Failed::from(format!("timed out after {CASE_TIMEOUT:?}"))),
        }
    })
}

/// `RUST_LOG=...` shows the tiers' and kube's logs on failures.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
