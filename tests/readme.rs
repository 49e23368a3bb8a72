//! The README cannot rot: its walkthrough's commands run against `roster dev` and must print what the
//! README shows, and the `roster dev --demo` output it shows must appear.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::admin_get;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// (command, expected output lines) for every `$ ` line of every console block.
fn console_steps(text: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_console = false;
    for line in text.lines() {
        match (in_console, line.trim_start()) {
            (false, "```console") => in_console = true,
            (true, "```") => in_console = false,
            (true, l) if l.starts_with("$ ") => steps.push((l[2..].to_string(), Vec::new())),
            (true, l) => steps
                .last_mut()
                .expect("output after a command")
                .1
                .push(l.to_string()),
            _ => {}
        }
    }
    steps
}

/// Whitespace runs collapse; ages (`5s`, `2m3s`) and generated name suffixes (`-6498b`) are masked.
fn normalise(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.split_whitespace().map(mask).collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn mask(token: &str) -> String {
    let is_age = token.len() > 1
        && token.chars().next().is_some_and(|c| c.is_ascii_digit())
        && token.chars().all(|c| c.is_ascii_digit() || "smhd".contains(c))
        && token.chars().last().is_some_and(|c| "smhd".contains(c));
    if is_age {
        return "<age>".into();
    }
    match token.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 5
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) =>
        {
            format!("{base}-<suffix>")
        }
        _ => token.into(),
    }
}

fn run(command: &str, kubeconfig: &Path, admin_port: u16) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(repo())
        .env("PATH", path_with_roster(kubeconfig))
        .env("KUBECONFIG", kubeconfig)
        .env("ROSTER_ADMIN", format!("http://127.0.0.1:{admin_port}"))
        .env("KUBECACHEDIR", roster_envtest::kubectl_cache_dir(kubeconfig))
        .output()
        .expect("sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(str::to_string).collect()
}

/// PATH with the roster binary first, as `roster` and as the kubectl plugin `kubectl-roster` (a link made
/// beside the kubeconfig, in the test's own directory).
fn path_with_roster(kubeconfig: &Path) -> std::ffi::OsString {
    let roster = Path::new(env!("CARGO_BIN_EXE_roster"));
    let plugins = kubeconfig
        .parent()
        .expect("the kubeconfig's directory")
        .join("bin");
    let plugin = plugins.join("kubectl-roster");
    if !plugin.exists() {
        std::fs::create_dir_all(&plugins).expect("a directory for the plugin");
        std::os::unix::fs::symlink(roster, &plugin).expect("the kubectl-roster link");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let first = [
        roster.parent().expect("the binary's directory").to_path_buf(),
        plugins,
    ];
    std::env::join_paths(first.into_iter().chain(std::env::split_paths(&path))).expect("PATH")
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev(dir: &Path, demo: bool) -> (Dev, u16) {
    let port = roster_envtest::real::free_port().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["dev", "--kubeconfig-out"]).arg(dir.join("kubeconfig"));
    cmd.args([
        "--admin-addr",
        &format!("127.0.0.1:{port}"),
        "--log-level",
        "warn",
    ]);
    if demo {
        cmd.arg("--demo");
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("roster dev");
    (Dev(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_commands_print_what_the_readme_shows() {
    let steps = console_steps(&readme());
    assert!(
        steps.len() >= 10,
        "the walkthrough lost its commands ({} found)",
        steps.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let (_dev, port) = start_dev(dir.path(), false);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    support::eventually("roster dev ready", || async {
        admin_get(addr, "/readyz").await.is_some_and(|(c, _)| c == 200)
    })
    .await;
    let kubeconfig = dir.path().join("kubeconfig");
    for (command, expected) in steps {
        let want = normalise(&expected);
        // Reads may need the controller to catch up; anything else runs once.
        let retry = ["kubectl get", "curl", "roster explain", "kubectl roster explain"]
            .iter()
            .any(|read| command.starts_with(read));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = normalise(&run(&command, &kubeconfig, port));
            if got == want {
                break;
            }
            assert!(
                retry && Instant::now() < deadline,
                "README command `{command}`\n  printed {got:#?}\n  README shows {want:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The demo's BackendSet backend listens on this machine's address: shown as `<host>:<port>` in the README.
fn mask_host(line: &str) -> String {
    let Some(host) = host_address() else {
        return line.to_string();
    };
    let needle = format!("{host}:");
    let Some(at) = line.find(&needle) else {
        return line.to_string();
    };
    let rest = &line[at + needle.len()..];
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    format!("{}<host>:<port>{}", &line[..at], &rest[digits..])
}

fn host_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[test]
fn demo_prints_what_the_readme_shows() {
    let text = readme();
    let block = text
        .split("<!-- demo output")
        .nth(1)
        .and_then(|rest| rest.split("```text").nth(1))
        .expect("demo block");
    let expected: Vec<String> = normalise(
        &block
            .split("```")
            .next()
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    assert!(expected.len() >= 5, "demo block too short");
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, _) = start_dev(dir.path(), true);
    let stdout = BufReader::new(dev.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.extend(normalise(&[mask_host(&line)]));
        }
        if expected.iter().all(|e| seen.contains(e)) {
            return;
        }
    }
    let missing: Vec<_> = expected.iter().filter(|e| !seen.contains(e)).collect();
    panic!("roster dev --demo never printed {missing:#?}\nit printed {seen:#?}");
}
