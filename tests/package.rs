//! The Debian package, for real: built once by scripts/package.sh (one release build; or the
//! package `STAP_SERVER_DEB` names), installed with dpkg, checked (files, metadata, manual
//! page against --help, units), used (a server the stock client compiles through; log
//! rotation with the shipped rule while clients compile), then removed and purged. One test,
//! because its steps share the one installed package and follow each other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Env, headers_release, require, text};

const BIN: &str = "/usr/bin/stap-server";
const MAN: &str = "/usr/share/man/man8/stap-server.8.gz";
const UNITS: [&str; 2] = [
    "/lib/systemd/system/stap-server.service",
    "/lib/systemd/system/stap-server-announce.service",
];
const ROTATE_RULE: &str = "/etc/logrotate.d/stap-server";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package's state in dpkg's database ("" when unknown).
fn dpkg_status(package: &str) -> String {
    let out = run("dpkg-query", &["-W", "-f", "${Status}", package]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether dpkg knows the package at all (installed, or its configuration left).
fn known(package: &str) -> bool {
    let status = dpkg_status(package);
    !status.is_empty() && !status.ends_with("not-installed")
}

/// Purges the package when the test ends, passed or failed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if known("stap-server") {
            let _ = run("dpkg", &["--purge", "stap-server"]);
        }
    }
}

fn build() -> PathBuf {
    if let Some(deb) = std::env::var_os("STAP_SERVER_DEB") {
        return deb.into();
    }
    let t = Instant::now();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh");
    let out = Command::new(&script)
        .output()
        .expect("run scripts/package.sh");
    assert!(out.status.success(), "package.sh: {}", text(&out));
    eprintln!("package built in {:.1} s", t.elapsed().as_secs_f64());
    PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
}

/// Options (`-x`, `--long`) at the start of the lines of `text` indented by `indent`: the
/// first word, and the second when the first ends with a comma (`-o, --output`).
fn options_at(text: &str, indent: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&" ".repeat(indent)) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        while let Some(word) = words.next().filter(|w| w.starts_with('-')) {
            let name = word.trim_end_matches(",").trim_end_matches("...");
            found.insert(name.split(['=', '<', '[']).next().unwrap().to_string());
            if !word.ends_with(',') {
                break;
            }
        }
    }
    found
}

/// Every option `--help` lists, over the top level and each command.
fn help_options() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for command in [
        &[][..],
        &["start"],
        &["status"],
        &["announce"],
        &["image", "build"],
        &["compose"],
        &["log", "hold"],
        &["log", "release"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = ok(BIN, &args);
        all.extend(options_at(&help, 2).into_iter().chain(options_at(&help, 6)));
    }
    all
}

/// Every option the manual page's OPTIONS section describes (up to the next section).
fn man_options(page: &str) -> BTreeSet<String> {
    let section: Vec<&str> = page
        .lines()
        .skip_while(|l| *l != "OPTIONS")
        .skip(1)
        .take_while(|l| !l.starts_with(|c: char| c.is_ascii_uppercase()))
        .collect();
    assert!(!section.is_empty(), "an OPTIONS section in:\n{page}");
    options_at(&section.join("\n"), 7)
}

fn man_render(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("man");
    cmd.args(["--warnings", "-l", MAN])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "200");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run man")
}

/// The installed binary with a test's configuration.
fn installed(env: &Env, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(&env.config)
        .env(
            "STAP_SERVER_GLOBAL_CONFIG",
            "/nonexistent/stap-server-global",
        )
        .output()
        .expect("run the installed stap-server")
}

fn lines_of(path: &Path) -> Vec<String> {
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        run("gzip", &["-dc", path.to_str().unwrap()]).stdout
    } else {
        std::fs::read(path).unwrap()
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(String::from)
        .collect()
}

/// The manager's own lines (`%b %e %T: `); the servers' start with a weekday.
fn manager_line(line: &str) -> bool {
    let months = [
        "Jan ", "Feb ", "Mar ", "Apr ", "May ", "Jun ", "Jul ", "Aug ", "Sep ", "Oct ", "Nov ",
        "Dec ",
    ];
    months.iter().any(|m| line.starts_with(m)) && line.get(15..17) == Some(": ")
}

fn count(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

#[test]
fn the_package_installs_serves_rotates_and_removes() {
    for (program, why) in [
        ("dpkg-deb", "dpkg"),
        ("man", "man-db, to render the manual page"),
        ("systemd-analyze", "systemd, to verify the units"),
        ("logrotate", "logrotate, to rotate with the shipped rule"),
        ("gzip", "gzip, to read rotated logs"),
        ("stap", "the systemtap client (apt-get install systemtap)"),
    ] {
        require(program, why);
    }
    let uid = ok("id", &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "missing prerequisite: root (to install packages)"
    );
    assert!(
        !known("systemtap-server"),
        "Debian's systemtap-server is on this machine: it conflicts with this package (both ship \
         /usr/bin/stap-server); remove it first (apt-get remove systemtap-server)"
    );
    assert!(
        !known("stap-server"),
        "the stap-server package is already on this machine; this test installs and purges \
         its own: dpkg --purge stap-server first"
    );

    let deb = build();
    let deb_str = deb.to_str().unwrap();
    let size = std::fs::metadata(&deb).unwrap().len();
    let installed_size = ok("dpkg-deb", &["-f", deb_str, "Installed-Size"]);
    eprintln!(
        "package {}: {size} bytes, Installed-Size {} KiB",
        deb.display(),
        installed_size.trim()
    );
    let fields = ok(
        "dpkg-deb",
        &[
            "-f",
            deb_str,
            "Depends",
            "Recommends",
            "Conflicts",
            "Replaces",
        ],
    );
    for want in [
        "docker.io | docker-ce",
        "Recommends: avahi-daemon, systemtap-client",
        "Conflicts: systemtap-server",
        "Replaces: systemtap-server",
    ] {
        assert!(fields.contains(want), "{want} in:\n{fields}");
    }

    let _purge = Purge;
    let t = Instant::now();
    ok("dpkg", &["-i", deb_str]);
    eprintln!("dpkg -i took {:.2} s", t.elapsed().as_secs_f64());

    let listed = ok("dpkg", &["-L", "stap-server"]);
    for path in [
        BIN,
        MAN,
        "/usr/share/bash-completion/completions/stap-server",
        "/usr/share/zsh/vendor-completions/_stap-server",
        UNITS[0],
        UNITS[1],
        "/etc/sysconfig/stap-server",
        ROTATE_RULE,
        "/etc/stap-server/conf.d",
        "/var/log/stap-server",
    ] {
        assert!(
            listed.lines().any(|l| l == path),
            "dpkg -L lists {path}:\n{listed}"
        );
    }
    assert!(
        ok("getent", &["passwd", "stap-server"]).starts_with("stap-server:"),
        "the package makes the servers' user"
    );

    // The manual page renders without a warning, and describes exactly the options of --help.
    let page = man_render(&[]);
    assert!(
        page.status.success() && page.stderr.is_empty(),
        "man --warnings: {}",
        String::from_utf8_lossy(&page.stderr)
    );
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    assert_eq!(man_options(&page), help_options(), "manual page vs --help");
    let bash =
        std::fs::read_to_string("/usr/share/bash-completion/completions/stap-server").unwrap();
    assert!(bash.contains("--max-compressed-request") && bash.contains("force-reload"));

    let verify = run("systemd-analyze", &["verify", UNITS[0], UNITS[1]]);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    let complaints: Vec<&str> = std::str::from_utf8(&verify.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.contains("stap-server"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );

    // The shipped global file (every variable commented) is a valid configuration.
    let env = Env::new("pkg");
    let probe = Command::new(BIN)
        .args(["status", "--json", "--tenant", &env.tenant])
        .output()
        .unwrap();
    assert_eq!(probe.status.code(), Some(3), "{}", text(&probe));
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "[]");

    // The installed binary starts a server that the stock client compiles through.
    let release = headers_release();
    let start = installed(&env, &["start", "-r", &release]);
    assert!(start.status.success(), "start: {}", text(&start));
    let status = installed(&env, &["status"]);
    assert!(status.status.success(), "status: {}", text(&status));
    let port = env.port_of(&String::from_utf8_lossy(&status.stdout));
    let client = env.path("client");
    common::compile(&client, port, &release);
    let container = env.containers().pop().expect("the server's container");

    rotation_under_load(&env, &client, port, &release, &container);

    // dpkg -r leaves the running server and the configuration; purge removes the latter.
    ok("dpkg", &["-r", "stap-server"]);
    assert!(!Path::new(BIN).exists());
    assert!(dpkg_status("stap-server").contains("config-files"));
    for kept in [
        "/etc/sysconfig/stap-server",
        ROTATE_RULE,
        "/etc/stap-server/conf.d",
    ] {
        assert!(Path::new(kept).exists(), "dpkg -r left {kept}");
    }
    let running = |c: &str| {
        String::from_utf8_lossy(&common::docker(&["inspect", "-f", "{{.State.Status}}", c]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        running(&container),
        "running",
        "dpkg -r leaves servers running"
    );
    assert!(common::accepts(port));
    ok("dpkg", &["--purge", "stap-server"]);
    assert!(
        dpkg_status("stap-server").is_empty()
            || dpkg_status("stap-server").contains("not-installed")
    );
    for gone in [
        "/etc/sysconfig/stap-server",
        ROTATE_RULE,
        "/etc/stap-server",
    ] {
        assert!(!Path::new(gone).exists(), "purge removed {gone}");
    }
    assert_eq!(
        running(&container),
        "running",
        "purge leaves servers running"
    );
}

/// Clients compile in a loop while logrotate, with the shipped rule pointed at the server's
/// log, rotates it several times: every line the server wrote (what the engine kept of its
/// output) is in exactly one of the files, and the newest lines are in the new file.
fn rotation_under_load(env: &Env, client: &Path, port: u16, release: &str, container: &str) {
    const ROTATIONS: usize = 4;
    let log = env.path("log/log");
    let rule = std::fs::read_to_string(ROTATE_RULE)
        .unwrap()
        .replace("/var/log/stap-server/log", log.to_str().unwrap());
    let rule_file = env.path("rotate.conf");
    std::fs::write(&rule_file, rule).unwrap();
    let state = env.path("rotate.state");

    let stop = Arc::new(AtomicBool::new(false));
    let compiled = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|n| {
            let (stop, compiled) = (stop.clone(), compiled.clone());
            let (client, release) = (client.to_path_buf(), release.to_string());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let out = common::stap(
                        &client,
                        port,
                        &[
                            "-r",
                            &release,
                            "-p4",
                            "-m",
                            &format!("load{n}_{i}"),
                            "-e",
                            &format!("probe begin {{ printf(\"{n} {i}\\n\") exit() }}"),
                        ],
                    );
                    assert!(
                        out.status.success(),
                        "compile under rotation: {}",
                        text(&out)
                    );
                    compiled.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    let grows = |since: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) <= since {
            assert!(Instant::now() < deadline, "the server's log does not grow");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Until `n` more compiles have finished (each makes the server log) since `from`.
    let compiles = |from: usize, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while compiled.load(Ordering::SeqCst) < from + n {
            assert!(Instant::now() < deadline, "the clients do not compile");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for _ in 0..ROTATIONS {
        compiles(compiled.load(Ordering::SeqCst), 1);
        grows(0);
        let t = Instant::now();
        ok(
            "logrotate",
            &[
                "-f",
                "-s",
                state.to_str().unwrap(),
                rule_file.to_str().unwrap(),
            ],
        );
        eprintln!("logrotate -f took {:.3} s", t.elapsed().as_secs_f64());
        let paused = common::docker(&["inspect", "-f", "{{.State.Paused}}", container]);
        assert_eq!(String::from_utf8_lossy(&paused.stdout).trim(), "false");
        let holds = std::fs::read_dir("/run/stap-server/log-hold")
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(holds, 0, "the hold is released");
    }
    // New lines go to the new file, none to the rotated one.
    let rotated = env.path("log/log.1");
    let rotated_len = std::fs::metadata(&rotated).unwrap().len();
    compiles(compiled.load(Ordering::SeqCst), 1);
    grows(0);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("a client failed");
    }
    assert_eq!(std::fs::metadata(&rotated).unwrap().len(), rotated_len);
    // Quiet: the server has written all it will (the engine keeps the same output).
    std::thread::sleep(Duration::from_millis(500));

    let mut files: Vec<PathBuf> = std::fs::read_dir(env.path("log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), ROTATIONS + 1, "{files:?}");
    let mut in_files = Vec::new();
    for f in &files {
        let lines = lines_of(f);
        assert!(!lines.is_empty(), "{} is empty", f.display());
        eprintln!("{}: {} lines", f.display(), lines.len());
        in_files.extend(lines);
    }
    let (manager, server): (Vec<String>, Vec<String>) =
        in_files.into_iter().partition(|l| manager_line(l));
    let logs = common::docker(&["logs", container]);
    let written: Vec<String> = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .map(String::from)
        .collect();
    eprintln!(
        "{} compiles; the server wrote {} lines, the files hold {} of its and {} of the manager's",
        compiled.load(Ordering::SeqCst),
        written.len(),
        server.len(),
        manager.len()
    );
    assert!(written.len() > 20, "too few lines to tell: {written:?}");
    let (wanted, got) = (count(written), count(server));
    for (line, n) in &wanted {
        assert_eq!(got.get(line), Some(n), "times in the files: {line}");
    }
    assert_eq!(wanted, got, "every line the server wrote, once");
    for said in ["Starting stap-server", "Pass: stap-server"] {
        let n = manager.iter().filter(|l| l.contains(said)).count();
        assert_eq!(n, 1, "{said} once: {manager:?}");
    }
}
