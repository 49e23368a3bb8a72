//! The roster binary's command line (issue 23): bad numbers, durations and log filters stop roster at
//! start with a clear message and a non-zero exit; RUST_LOG is honoured when ROSTER_LOG and --log-level
//! are not given; an admin port that cannot be bound stops `run` and `dev`, and `dev` takes a free one by
//! default.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use roster_envtest::{MemoryOptions, TestEnv};
use support::{admin_get, eventually};

/// `roster ARGS` with `env`, to its exit: (exit code, stderr).
fn roster(args: &[&str], env: Vars) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ROSTER_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running the roster binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Environment variables for one run.
type Vars<'a> = &'a [(&'a str, &'a str)];

/// A kubeconfig that does not exist: `roster run` gets no further than reading it, so a test of what
/// comes before (flags, logging) never reaches a cluster.
const NO_CLUSTER: &str = "--kubeconfig=/nonexistent/roster-cli-test.kubeconfig";

/// Exit codes: clap's for a flag value it refuses, roster's for an error after parsing.
const USAGE: Option<i32> = Some(2);
const FAILED: Option<i32> = Some(1);

/// (args after `run`, environment, exit code, what stderr must say)
#[rustfmt::skip]
const BAD_VALUES: [(&[&str], Vars, Option<i32>, &str); 11] = [
    (&["--write-qps=0"], &[], USAGE, r#"invalid rate "0": must be a number above 0"#),
    (&["--write-qps=-5"], &[], USAGE, r#"invalid rate "-5": must be a number above 0"#),
    (&["--write-qps=NaN"], &[], USAGE, r#"invalid rate "NaN": must be a number above 0"#),
    (&[], &[("ROSTER_WRITE_QPS", "0")], USAGE, r#"invalid rate "0": must be a number above 0"#),
    (&["--write-burst=0"], &[], USAGE, "--write-burst"),
    (&["--batch-window=-1s"], &[], USAGE, r#"invalid duration "-1s": must not be negative"#),
    (&["--lease-duration=0s"], &[], USAGE, r#"invalid duration "0s": must be more than 0"#),
    (&["--dns-failure-grace=5 minutes please"], &[], USAGE, "expected e.g. 250ms, 30s, 1m30s, 1.5h"),
    (&["--log-level=roster=loud"], &[], FAILED,
     r#"invalid log filter "roster=loud" from --log-level or ROSTER_LOG"#),
    (&[], &[("ROSTER_LOG", "info,roster=[")], FAILED,
     r#"invalid log filter "info,roster=[" from --log-level or ROSTER_LOG"#),
    (&[], &[("RUST_LOG", "roster=loud")], FAILED, r#"invalid log filter "roster=loud" from RUST_LOG"#),
];

#[test]
fn bad_values_stop_roster_with_a_clear_message() {
    let mut failures = Vec::new();
    for (args, env, code, says) in BAD_VALUES {
        let argv: Vec<&str> = ["run", NO_CLUSTER].iter().chain(args).copied().collect();
        let (got, stderr) = roster(&argv, env);
        if got != code || !stderr.contains(says) {
            failures.push(format!("{args:?} {env:?}: exit {got:?}, stderr:\n{stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// The same command lines with good values get past flags and logging, to the kubeconfig (the check
/// above can fail: it is the bad value, not the missing cluster, that stops roster).
#[test]
fn good_values_get_as_far_as_the_kubeconfig() {
    let runs: [(&[&str], Vars); 4] = [
        (
            &[
                "--write-qps=0.5",
                "--batch-window=1m30s",
                "--lease-duration=1h2m3.5s",
            ],
            &[],
        ),
        (&["--dns-failure-grace=1.5h", "--dns-min-ttl=250ms"], &[]),
        (&[], &[("RUST_LOG", "info,roster=debug")]),
        (&[], &[("ROSTER_LOG", "warn"), ("RUST_LOG", "roster=loud")]),
    ];
    for (args, env) in runs {
        let argv: Vec<&str> = ["run", NO_CLUSTER].iter().chain(args).copied().collect();
        let (code, stderr) = roster(&argv, env);
        assert_eq!(code, FAILED, "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains("roster-cli-test.kubeconfig"),
            "{args:?} {env:?}: {stderr}"
        );
        assert!(!stderr.contains("invalid"), "{args:?} {env:?}: {stderr}");
    }
}

/// roster run against an in-memory API server with its stderr in a file; killed on drop.
struct LoggedRoster {
    child: Child,
    admin: SocketAddr,
}

impl LoggedRoster {
    async fn start(env: &TestEnv, ns: &str, log: &Path, vars: Vars<'_>) -> LoggedRoster {
        let port = roster_envtest::real::free_port().expect("free port");
        let admin: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(env.kubeconfig())
            .args(["--leader-elect=false", "--log-format=json", "--namespace", ns])
            .arg(format!("--admin-addr={admin}"))
            .env_remove("RUST_LOG")
            .env_remove("ROSTER_LOG")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("starting the roster binary");
        let roster = LoggedRoster { child, admin };
        eventually("roster ready", || async {
            admin_get(roster.admin, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
        })
        .await;
        roster
    }

    /// SIGTERM, and the exit once roster has shut down.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        self.child.wait().expect("roster exits")
    }
}

impl Drop for LoggedRoster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The levels of the JSON log lines roster wrote.
fn levels(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("roster's log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["level"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_is_honoured_when_roster_log_is_unset() {
    let env = TestEnv::memory(MemoryOptions::default()).await.unwrap();
    let ns = env.create_namespace("cli-log").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runs: [(&str, Vars, bool); 3] = [
        ("default", &[], true),
        ("rust-log-warn", &[("RUST_LOG", "warn")], false),
        (
            "roster-log-wins",
            &[("RUST_LOG", "warn"), ("ROSTER_LOG", "info")],
            true,
        ),
    ];
    for (name, vars, info_expected) in runs {
        let log = dir.path().join(format!("{name}.log"));
        let roster = LoggedRoster::start(&env, &ns, &log, vars).await;
        let status = roster.terminate();
        assert!(status.success(), "{name}: roster exited with {status}");
        let levels = levels(&log);
        let has_info = levels.iter().any(|l| l == "INFO");
        assert_eq!(
            has_info, info_expected,
            "{name} ({vars:?}): logged levels {levels:?}"
        );
    }
}

/// README's flag table names every `roster run` flag (and no flag roster does not have).
#[test]
fn the_readme_flag_table_lists_every_flag() {
    use clap::CommandFactory;
    let cli = roster::args::Cli::command();
    let run = cli.find_subcommand("run").expect("roster run");
    let flags: std::collections::BTreeSet<String> = run
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|f| *f != "help")
        .map(|f| format!("--{f}"))
        .collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: std::collections::BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap_or_default()
                .split('`')
                .map(str::to_owned)
        })
        .filter(|token| token.starts_with("--"))
        .collect();
    let missing: Vec<&String> = flags.difference(&table).collect();
    let unknown: Vec<&String> = table.difference(&flags).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "not in README: {missing:?}; not flags: {unknown:?}"
    );
}

/// A kubeconfig naming a server nobody serves: roster reads it, binds its admin port, and only then talks
/// to the API server.
fn unserved_kubeconfig(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("unserved.kubeconfig");
    let yaml = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
                users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
                current-context: x\n";
    std::fs::write(&path, yaml).expect("kubeconfig");
    path
}

#[test]
fn an_admin_port_in_use_stops_run_and_dev_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = unserved_kubeconfig(dir.path());
    let admin = format!("--admin-addr={addr}");
    let out = dir.path().join("dev.kubeconfig");
    let runs: [Vec<String>; 2] = [
        vec![
            "run".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            admin.clone(),
        ],
        vec![
            "dev".into(),
            "--kubeconfig-out".into(),
            out.display().to_string(),
            admin,
        ],
    ];
    for args in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = roster(&args, &[]);
        assert_eq!(code, FAILED, "{args:?}: {stderr}");
        let said = format!("binding the admin server to {addr}");
        assert!(stderr.contains(&said), "{args:?} must say {said:?}: {stderr}");
    }
}

/// A child process killed when the test ends, also when it fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn roster_dev_takes_a_free_admin_port_while_9090_is_taken() {
    use std::io::BufRead;
    // Held here, or already held by another process: either way 9090 is taken while dev starts.
    let _held = std::net::TcpListener::bind("127.0.0.1:9090");
    assert!(
        std::net::TcpListener::bind("127.0.0.1:9090").is_err(),
        "9090 is taken"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Killed(
        Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["dev", "--kubeconfig-out"])
            .arg(dir.path().join("dev.kubeconfig"))
            .env_remove("ROSTER_DEV_ADMIN_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting roster dev"),
    );
    let stdout = std::io::BufReader::new(dev.0.stdout.take().expect("dev's stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    let line = std::iter::from_fn(|| rx.recv_timeout(std::time::Duration::from_secs(120)).ok())
        .find(|l| l.contains("admin server"))
        .expect("roster dev names its admin server");
    let addr: SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("an address in {line:?}"));
    assert_ne!(addr.port(), 9090, "{line}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(eventually("roster dev ready", || async {
        admin_get(addr, "/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
    }));
}
