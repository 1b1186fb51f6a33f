//! The conformance suite: systemtap's own example scripts (the `systemtap-doc` of the image's
//! systemtap version, which scripts/test-prerequisites.sh fetches), each compiled as its
//! `.meta` file's `test_check:` line says, twice:
//!  - reference: the image's own stap as a local translator, in a container that sees the
//!    host's kernel trees and debuginfo whole (`/lib/modules`, `/usr/src`,
//!    `/usr/lib/linux-kbuild-*`, `/usr/lib/debug`), under the classic service's request
//!    limits and no other (as a classic server on the host would run it);
//!  - candidate: the stock client on the host through a server `stap-server start` made,
//!    with host paths over the image's own files in its options (`common::view`), whose view
//!    of the kernel is checked first.
//!
//! Every example that compiles in the reference must compile through the server. The test
//! prints a table, the counts and the compile times of both. `STAP_CONFORMANCE=all` tries
//! every example with a test_check line (scripts/conformance.sh); the default set covers
//! each category in CI time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Env, TRANSLATOR, docker, foreign_tree, free_port, headers_release, require, require_debuginfo,
    text, trust, view,
};

/// The default set: timers, tracepoints, DWARF probes (kernel.function and statements, with
/// $variables), syscalls, networking, block I/O, memory, processes, profiling, guru mode, a
/// script with its own tapset directory.
const DEFAULT_SET: &[&str] = &[
    "general/helloworld",
    "general/ansi_colors",
    "general/graphs",
    "general/regex",
    "general/stopwatches",
    "general/sizeof",
    "general/para-callgraph",
    "general/whythefail",
    "general/watchdog",
    "interrupt/scf",
    "interrupt/interrupts-by-dev",
    "io/disktop",
    "io/iotop",
    "io/iostats",
    "io/ioblktime",
    "io/switchfile",
    "io/traceio",
    "memory/cachestat",
    "memory/overcommit",
    "memory/mmanonpage",
    "memory/mmreclaim",
    "memory/pfaults",
    "memory/vm.tracepoints",
    "network/nettop",
    "network/dropwatch",
    "network/tcp_connections",
    "network/tcp_retransmission",
    "network/tcp_trace",
    "network/tcpipstat",
    "network/socket-trace",
    "network/connect_stat",
    "process/errsnoop",
    "process/forktracker",
    "process/schedtimes",
    "process/sigkill",
    "process/sigmon",
    "process/sleepingBeauties",
    "process/strace",
    "process/syscalls_by_proc",
    "process/wait4time",
    "profiling/latencytap",
    "profiling/sched_switch",
    "profiling/pf2",
    "profiling/thread-times",
    "profiling/timeout",
    "profiling/linetimes",
    "profiling/topsys",
    "lwtools/execsnoop-nd",
    "lwtools/opensnoop-nd",
    "stapgames/block",
    "security-band-aids/cve-2016-5195",
];

/// Examples that systemtap's own client and server compile differently from a local
/// translator, whatever runs the server, with the reason. They are tried and shown, not held
/// against the server.
const CLIENT_SERVER_DIFFERENCES: &[(&str, &str)] = &[(
    "stapgames/",
    "-Itapset/ reaches the server's translator as tapset/PATH, without the trailing slash \
         that keeps a local translator's duplicate-name elimination (PR12443) from dropping the \
         game's input.stp for the builtin one",
)];

/// Why `name` may compile locally but not through any server, if it is one of those.
fn known_difference(name: &str) -> Option<&'static str> {
    CLIENT_SERVER_DIFFERENCES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, why)| *why)
}

/// Where scripts/test-prerequisites.sh keeps the examples.
fn examples_dir() -> PathBuf {
    common::prerequisite_dir("examples", "systemtap's example scripts")
}

/// One example: its directory under the examples, and its test_check command's arguments
/// after `stap`.
struct Example {
    name: String,
    dir: String,
    args: Vec<String>,
}

/// The `test_check:` line of `meta`, as arguments after `stap`; `None` for lines that are not
/// a plain stap command (a shell pipeline, a command substitution, another program).
fn test_check(meta: &str) -> Option<Vec<String>> {
    let line = meta
        .lines()
        .find_map(|l| l.strip_prefix("test_check:"))?
        .trim();
    if line.contains(['`', '|', ';', '&', '<', '>']) || line.contains("$$") || line.contains("$(") {
        return None;
    }
    let words = shell_words(line)?;
    let (first, rest) = words.split_first()?;
    (first == "stap" && !rest.iter().any(|w| w == "-c" || w == "-x")).then(|| rest.to_vec())
}

/// Splits a command line as a POSIX shell would for words, single and double quotes; `None`
/// for more than a simple command (a pipe, a redirection, a substitution, `$$`).
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        '`' | '$' => return None,
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            '`' | '$' | '|' | ';' | '&' | '<' | '>' | '(' | ')' => return None,
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// The examples to try: the default set, or every one (`STAP_CONFORMANCE=all`).
fn examples(root: &Path, set: &[&str]) -> Vec<Example> {
    let all = std::env::var("STAP_CONFORMANCE").as_deref() == Ok("all");
    let mut metas: Vec<PathBuf> = Vec::new();
    if all {
        for category in std::fs::read_dir(root).unwrap().flatten() {
            if let Ok(entries) = std::fs::read_dir(category.path()) {
                metas.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "meta")),
                );
            }
        }
        metas.sort();
    } else {
        for name in set {
            let meta = root.join(format!("{name}.meta"));
            assert!(meta.is_file(), "{} is not in systemtap-doc", meta.display());
            metas.push(meta);
        }
    }
    metas
        .iter()
        .filter_map(|meta| {
            let args = test_check(&std::fs::read_to_string(meta).ok()?)?;
            let rel = meta.strip_prefix(root).unwrap();
            Some(Example {
                name: rel.with_extension("").display().to_string(),
                dir: rel.parent().unwrap().display().to_string(),
                args,
            })
        })
        .collect()
}

/// The outcome of one compile: success, seconds, first error line.
struct Outcome {
    ok: bool,
    secs: f64,
    error: String,
}

fn outcome(out: std::io::Result<Output>, started: Instant) -> Outcome {
    let secs = started.elapsed().as_secs_f64();
    match out {
        Ok(out) => {
            let said = text(&out);
            Outcome {
                ok: out.status.success(),
                secs,
                error: said
                    .lines()
                    .find(|l| l.contains("error") || l.contains("ERROR") || l.contains("failed"))
                    .or_else(|| said.lines().last())
                    .unwrap_or("")
                    .to_string(),
            }
        }
        Err(e) => Outcome {
            ok: false,
            secs,
            error: e.to_string(),
        },
    }
}

/// Copies the examples into `to` (each compile writes its module beside its script).
fn copy_examples(from: &Path, to: &Path) {
    let cp = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(cp.status.success(), "cp: {}", text(&cp));
}

/// One compile of an example, reference or server.
type Compile<'a> = &'a (dyn Fn(&Example) -> std::io::Result<Output> + Sync);

/// The reference's translator on `example`, in `reference`'s copy of the examples, with
/// `options` before the example's own.
fn in_reference(reference: &str, options: &[&str], example: &Example) -> std::io::Result<Output> {
    Command::new("docker")
        .args(["exec", "-w", &format!("/work/{}", example.dir), reference])
        .arg(TRANSLATOR)
        .args(options)
        .args(&example.args)
        .output()
}

/// The stock client on `example` through the server at `port`, trusted in `client`, in
/// `work`'s copy of the examples, with `options` before the example's own.
fn through_server(
    port: u16,
    client: &Path,
    work: &Path,
    options: &[&str],
    example: &Example,
) -> std::io::Result<Output> {
    Command::new("stap")
        .arg(format!("--use-server=127.0.0.1:{port}"))
        .env("SYSTEMTAP_DIR", client.join(".systemtap"))
        .args(options)
        .args(&example.args)
        .current_dir(work.join(&example.dir))
        .output()
}

/// Every example compiled by the reference and through the server, two compiles at a time
/// (the machine's cores; `STAP_CONFORMANCE_JOBS` says otherwise): each example's two
/// compiles are separate jobs, so the two kinds share the machine alike. Returns each
/// example's [reference, server] outcomes.
fn compile_all(examples: &[Example], reference: Compile, server: Compile) -> Vec<[Outcome; 2]> {
    let jobs: Vec<(usize, bool)> = (0..examples.len())
        .flat_map(|i| [(i, true), (i, false)])
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<[Option<Outcome>; 2]>> =
        Mutex::new((0..examples.len()).map(|_| [None, None]).collect());
    let workers: usize = std::env::var("STAP_CONFORMANCE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(&(i, is_ref)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let ex = &examples[i];
                    let started = Instant::now();
                    let out = if is_ref { reference(ex) } else { server(ex) };
                    let o = outcome(out, started);
                    println!(
                        "{:<40} {:<9} {:>6.1} s {}",
                        ex.name,
                        if is_ref { "reference" } else { "server" },
                        o.secs,
                        if o.ok { "ok" } else { "FAILED" }
                    );
                    results.lock().unwrap()[i][usize::from(!is_ref)] = Some(o);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|[r, s]| [r.unwrap(), s.unwrap()])
        .collect()
}

/// What the examples' compiles add up to.
#[derive(Default)]
struct Tally {
    /// The table, one line per example, then the reasons of what failed.
    table: String,
    ref_ok: usize,
    server_ok: usize,
    /// Compile time of the examples both compiled.
    ref_secs: f64,
    server_secs: f64,
    /// Examples the reference compiled and the server did not, with no known reason.
    failures: Vec<String>,
}

impl Tally {
    fn line(&mut self, l: String) {
        println!("{l}");
        self.table.push_str(&l);
        self.table.push('\n');
    }

    fn of(examples: &[Example], results: &[[Outcome; 2]]) -> Tally {
        let mut t = Tally::default();
        t.line(format!(
            "{:<40} {:>14} {:>14}",
            "example", "reference", "server"
        ));
        for (ex, [r, s]) in examples.iter().zip(results) {
            let word =
                |o: &Outcome| format!("{} {:>6.1}s", if o.ok { "ok" } else { "FAIL" }, o.secs);
            t.line(format!("{:<40} {:>14} {:>14}", ex.name, word(r), word(s)));
            if r.ok {
                t.ref_ok += 1;
                if s.ok {
                    t.server_ok += 1;
                    t.ref_secs += r.secs;
                    t.server_secs += s.secs;
                } else if let Some(why) = known_difference(&ex.name) {
                    t.line(format!(
                        "    server: {} (systemtap's client and server: {why})",
                        s.error
                    ));
                } else {
                    t.failures.push(format!("{}: {}", ex.name, s.error));
                }
            } else {
                t.line(format!("    reference: {}", r.error));
                if s.ok {
                    t.server_ok += 1;
                }
            }
        }
        t
    }

    /// Prints the counts and `firsts` (the first tracepoint compiles), writes the table to
    /// `report` under the test's target directory (read it after a passing run), and fails
    /// on any example the reference compiled and the server did not.
    fn finish(mut self, tried: usize, firsts: String, after: Vec<String>, report: &str) -> Tally {
        self.line(format!(
            "tried {tried}, reference ok {}, server ok {}; compile time of the examples both \
             compiled: reference {:.1} s, server {:.1} s, ratio {:.2}; first tracepoint \
             compiles: {firsts}",
            self.ref_ok,
            self.server_ok,
            self.ref_secs,
            self.server_secs,
            self.server_secs / self.ref_secs.max(f64::EPSILON)
        ));
        for l in after {
            self.line(l);
        }
        let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join(report);
        std::fs::write(&report, &self.table).unwrap();
        println!("written to {}", report.display());
        assert!(
            self.failures.is_empty(),
            "{} examples compile in the reference but not through the server:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        self
    }
}

/// Every example through `reference` and `server` ([`compile_all`]), tallied: the table and
/// counts printed and written to `report`, with `firsts` (the server's and the reference's
/// first tracepoint compiles) and the lines `after` gives once the examples are done; fails
/// on an example the reference compiled and the server did not.
fn compare(
    examples: &[Example],
    reference: Compile,
    server: Compile,
    firsts: (Duration, Duration),
    after: &dyn Fn() -> Vec<String>,
    report: &str,
) -> Tally {
    let results = compile_all(examples, reference, server);
    Tally::of(examples, &results).finish(
        examples.len(),
        format!("server {:.1?}, reference {:.1?}", firsts.0, firsts.1),
        after(),
        report,
    )
}

/// The server container's id and one of its limits (`HostConfig.FIELD`).
fn server_limit(env: &Env, field: &str) -> (String, String) {
    let server = env
        .containers()
        .into_iter()
        .find(|n| !n.ends_with("-reference"))
        .expect("the server's container");
    let format = format!("{{{{.Id}}}} {{{{.HostConfig.{field}}}}}");
    let inspect = text(&docker(&["inspect", "-f", &format, &server]));
    let (id, limit) = inspect.trim().split_once(' ').unwrap();
    (id.to_string(), limit.to_string())
}

/// The server container's peak memory use (its cgroup's, page cache included, which the
/// kernel reclaims before the limit refuses memory) against its limit, in words.
fn memory_peak(env: &Env) -> String {
    let (id, limit) = server_limit(env, "Memory");
    let mib = |bytes: u64| bytes >> 20;
    let peak = [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    match peak {
        Some(peak) => format!(
            "server's memory peak across the examples: {} MiB (limit {} MiB)",
            mib(peak),
            mib(limit.parse().unwrap_or(0))
        ),
        None => "server's memory peak: no cgroup of the container found here".into(),
    }
}

/// The server container's task count, sampled while the examples compile: the peak seen, and
/// how many times the kernel refused a fork for the pids limit (its cgroup's `pids.events`),
/// which must stay 0: a default that makes a real script fail is a bug.
struct Pids {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
    dir: PathBuf,
    limit: String,
}

impl Pids {
    fn watch(env: &Env) -> Pids {
        let (id, limit) = server_limit(env, "PidsLimit");
        let dir = [
            format!("/sys/fs/cgroup/pids/docker/{id}"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"),
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("pids.current").is_file())
        .unwrap_or_else(|| panic!("no pids cgroup of container {id} found here"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let (stop, current) = (stop.clone(), dir.join("pids.current"));
            move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = std::fs::read_to_string(&current)
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                    {
                        peak = peak.max(n);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            }
        });
        Pids {
            stop,
            sampler,
            dir,
            limit,
        }
    }

    /// The figures in words; fails if a fork was refused.
    fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.sampler.join().unwrap();
        let events = std::fs::read_to_string(self.dir.join("pids.events")).unwrap_or_default();
        let refused: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("max "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert_eq!(
            refused, 0,
            "the server's pids limit ({}) refused {refused} forks during the examples",
            self.limit
        );
        format!(
            "server's task count across the examples: peak {peak} sampled every 20 ms (limit {}), \
             forks refused by the limit: {refused}",
            self.limit
        )
    }
}

/// A tracepoint compile: the first one of a translator fills its tracepoint cache.
const TRACEPOINT: &str =
    "probe kernel.trace(\"sched:sched_switch\") { printf(\"%s\\n\", $next->comm$); exit() }";

#[test]
fn systemtap_examples_compile_through_the_server_as_in_the_reference() {
    require("stap", "the systemtap client (apt-get install systemtap)");
    let root = examples_dir();
    let release = headers_release();
    require_debuginfo(&release);
    let examples = examples(&root, DEFAULT_SET);
    assert!(
        std::env::var("STAP_CONFORMANCE").is_ok() || examples.len() >= 40,
        "only {} examples have a plain stap test_check line",
        examples.len()
    );

    let env = Env::new("conform");
    let (ref_work, server_work) = (env.path("reference"), env.path("server"));
    copy_examples(&root, &ref_work);
    copy_examples(&root, &server_work);
    let server = view::start(&env, &release);
    let server_first = view::check(&env, &server, &release);
    let (port, client) = (server.port, server.client.clone());
    let reference = common::reference(
        &env,
        &common::image(),
        Path::new("/lib/modules"),
        &[format!("{}:/work", ref_work.display())],
    );
    // The reference's first tracepoint compile, as the server's above: both caches warm
    // before the examples.
    let started = Instant::now();
    let warm = docker(&[
        "exec", "-w", "/tmp", &reference, TRANSLATOR, "-r", &release, "-p4", "-e", TRACEPOINT,
    ]);
    assert!(warm.status.success(), "reference: {}", text(&warm));
    let ref_first = started.elapsed();

    let options = ["-r", release.as_str()];
    let pids = Mutex::new(Some(Pids::watch(&env)));
    let tally = compare(
        &examples,
        &|ex| in_reference(&reference, &options, ex),
        &|ex| through_server(port, &client, &server_work, &options, ex),
        (server_first, ref_first),
        &|| {
            let pids = pids.lock().unwrap().take().expect("once");
            vec![memory_peak(&env), pids.finish()]
        },
        "conformance.txt",
    );
    if std::env::var("STAP_CONFORMANCE").is_err() {
        assert!(
            tally.ref_ok >= 40,
            "only {} of the default examples compile in the reference: is the host view \
             (headers, debuginfo) complete?",
            tally.ref_ok
        );
    }
    env.expect(&["stop"], 0);
}

/// The same examples for arm64: an arm64 server of the arm64 headers of the installed
/// kernel's version (scripts/test-prerequisites.sh unpacks them to /usr/src), asked with
/// `-a arm64` by the stock client, against the arm64 image's own stap cross-compiling for
/// that tree. No arm64 debuginfo is fetched: examples that need DWARF fail in both and are
/// shown, not counted.
#[test]
fn systemtap_examples_compile_for_arm64_as_in_the_reference() {
    require("stap", "the systemtap client (apt-get install systemtap)");
    let root = examples_dir();
    let (tree, kernel_release) = foreign_tree("arm64");
    let tree = tree.to_str().unwrap();
    let examples = examples(&root, common::NO_DEBUGINFO_EXAMPLES);

    let env = Env::new("conform-arm64");
    let (ref_work, server_work) = (env.path("reference"), env.path("server"));
    copy_examples(&root, &ref_work);
    copy_examples(&root, &server_work);
    let port = free_port();
    env.expect(
        &[
            "start",
            "-a",
            "arm64",
            "-r",
            tree,
            "--port",
            &port.to_string(),
        ],
        0,
    );
    let client = env.path("client");
    trust(&client, port);
    // The reference sees the tree as an arm64 host with these headers installed would: its
    // /lib/modules/RELEASE holds the package's build and source links (the source tree has
    // the tracepoints' headers).
    let modules = env.path("modules");
    let release = tree.rsplit_once("linux-headers-").unwrap().1;
    let common = tree.replace("-arm64", "-common");
    std::fs::create_dir_all(modules.join(release)).unwrap();
    std::os::unix::fs::symlink(tree, modules.join(release).join("build")).unwrap();
    std::os::unix::fs::symlink(&common, modules.join(release).join("source")).unwrap();
    let image = stap_server::arch::cross_image(&common::image(), "arm64");
    let reference = common::reference(
        &env,
        &image,
        &modules,
        &[format!("{}:/work", ref_work.display())],
    );
    let cross = stap_server::arch::target("arm64").unwrap().cross_compile();
    let ref_options = ["-a", "arm64", "-r", release, "-B", cross.as_str()];
    let server_options = ["-a", "arm64", "-r", kernel_release.as_str()];

    // Both first tracepoint compiles, at once.
    let first = |compile: &(dyn Fn() -> std::io::Result<Output> + Sync)| {
        let started = Instant::now();
        let out = compile().expect("run a compile");
        assert!(
            out.status.success(),
            "first tracepoint compile: {}",
            text(&out)
        );
        started.elapsed()
    };
    let (ref_first, server_first) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            first(&|| {
                Command::new("docker")
                    .args(["exec", "-w", "/tmp", &reference, TRANSLATOR])
                    .args(ref_options)
                    .args(["-p4", "-e", TRACEPOINT])
                    .output()
            })
        });
        let c = first(&|| {
            Command::new("stap")
                .arg(format!("--use-server=127.0.0.1:{port}"))
                .env("SYSTEMTAP_DIR", client.join(".systemtap"))
                .args(server_options)
                .args(["-p4", "-m", "first", "-e", TRACEPOINT])
                .current_dir(&client)
                .output()
        });
        (r.join().unwrap(), c)
    });

    let tally = compare(
        &examples,
        &|ex| in_reference(&reference, &ref_options, ex),
        &|ex| through_server(port, &client, &server_work, &server_options, ex),
        (server_first, ref_first),
        &Vec::new,
        "conformance-arm64.txt",
    );
    if std::env::var("STAP_CONFORMANCE").is_err() {
        assert_eq!(
            tally.ref_ok,
            examples.len(),
            "not every example of the arm64 set compiles in the reference: are the arm64 \
             headers whole?"
        );
    }
    env.expect(&["stop"], 0);
}

#[test]
fn test_check_lines_are_read_as_a_shell_would() {
    assert_eq!(
        test_check("x\ntest_check: stap -p4 callgraph.stp 'kernel.function(\"*@fs/proc*.c\")'\n"),
        Some(vec![
            "-p4".to_string(),
            "callgraph.stp".into(),
            "kernel.function(\"*@fs/proc*.c\")".into()
        ])
    );
    assert_eq!(
        test_check("test_check: stap -p4 measureinterval.stp \"gettimeofday_us()\" @sum"),
        Some(vec![
            "-p4".to_string(),
            "measureinterval.stp".into(),
            "gettimeofday_us()".into(),
            "@sum".into()
        ])
    );
    assert_eq!(
        test_check("test_check: stap -gp4 eatmydata.stp -x $$"),
        None
    );
    assert_eq!(test_check("test_check: ./socktop -D"), None);
    assert_eq!(
        test_check("test_check: stap -p4 floatingpoint.stp -c \"stap --benchmark-sdt\""),
        None
    );
    assert_eq!(test_check("test_check_bpf: stap --bpf -p4 x.stp"), None);
}
