//! Servers for another architecture, for real: Debian's arm64 and ppc64el headers of the
//! installed kernel's version (scripts/test-prerequisites.sh unpacks them to /usr/src), each
//! target's image built offline on first use, the stock stap client asking for arm64 modules
//! by address and through mDNS, next to a native server for the same release number.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Env, docker, foreign_tree, headers_release, lines, require, text, trust};

/// The installed amd64 headers' tree and its arm64 sibling, as the prerequisites lay them out.
struct Trees {
    /// `/lib/modules` name of the native tree (`6.1.0-57-amd64`).
    native_release: String,
    native: PathBuf,
    arm64: PathBuf,
    /// The release both trees' `include/config/kernel.release` give (`6.1.192`): what servers
    /// of a tree path serve and advertise.
    kernel_release: String,
}

fn trees() -> Trees {
    require("file", "file(1), to tell a module's architecture");
    require("stap", "the systemtap client (apt-get install systemtap)");
    let native_release = headers_release();
    let native = PathBuf::from(format!("/usr/src/linux-headers-{native_release}"));
    assert!(native.join("Makefile").is_file(), "{}", native.display());
    let (arm64, kernel_release) = foreign_tree("arm64");
    Trees {
        native_release,
        native,
        arm64,
        kernel_release,
    }
}

/// What `file` says of a module.
fn file_type(module: &Path) -> String {
    assert!(module.is_file(), "no module {}", module.display());
    text(&Command::new("file").arg(module).output().expect("run file"))
}

/// Compiles `script` into `NAME.ko` in `client` with the stock client and `args`; returns the
/// module's type and the time taken.
fn compile(client: &Path, args: &[&str], name: &str, script: &str) -> (String, Duration) {
    let began = Instant::now();
    let out: Output = Command::new("stap")
        .args(args)
        .args(["-p4", "-m", name, "-e", script])
        .current_dir(client)
        .env("HOME", client)
        .env("SYSTEMTAP_DIR", client.join(".systemtap"))
        .output()
        .expect("run stap");
    let took = began.elapsed();
    assert!(
        out.status.success(),
        "stap {} -m {name}: {}",
        args.join(" "),
        text(&out)
    );
    (file_type(&client.join(format!("{name}.ko"))), took)
}

fn status(env: &Env) -> String {
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "status: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status line of the server for `arch`.
fn line_of(status: &str, arch: &str) -> String {
    status
        .lines()
        .find(|l| l.contains(&format!("-a \"{arch}\"")))
        .unwrap_or_else(|| panic!("no {arch} server in:\n{status}"))
        .to_string()
}

fn label(container: &str, key: &str) -> String {
    let format = format!("{{{{index .Config.Labels \"{key}\"}}}}");
    lines(&docker(&["inspect", "--format", &format, container]))
        .pop()
        .unwrap_or_default()
}

#[test]
fn an_arm64_server_of_a_build_tree_compiles_aarch64_modules() {
    let t = trees();
    let env = Env::new("arm64");
    let port = common::free_port().to_string();
    let arm64 = t.arm64.to_str().unwrap();
    let out = env.run(&["start", "-a", "arm64", "-r", arm64, "--port", &port]);
    assert!(out.status.success(), "start: {}", text(&out));

    let st = status(&env);
    let line = line_of(&st, "arm64");
    assert!(line.contains(&format!("-r \"{arm64}\"")), "{line}");
    let names = env.containers();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains("-arm64-"), "{names:?}");
    assert_eq!(label(&names[0], "io.stap-server.arch"), "arm64");
    assert_eq!(
        label(&names[0], "io.stap-server.image"),
        stap_server::arch::cross_image(&common::image(), "arm64")
    );

    let client = env.path("client");
    let port: u16 = port.parse().unwrap();
    trust(&client, port);
    let server = format!("--use-server=127.0.0.1:{port}");
    let args = ["-a", "arm64", "-r", &t.kernel_release, &server];
    let (kind, took) = compile(&client, &args, "x", "probe begin { exit() }");
    assert!(kind.contains("ARM aarch64"), "{kind}");
    eprintln!(
        "arm64 compile of probe begin (cold): {:.1} s",
        took.as_secs_f64()
    );
    let (kind, took) = compile(
        &client,
        &args,
        "tp",
        "probe kernel.trace(\"sched:sched_switch\") { exit() }",
    );
    assert!(kind.contains("ARM aarch64"), "{kind}");
    eprintln!(
        "arm64 compile of a tracepoint (cold): {:.1} s",
        took.as_secs_f64()
    );
    // A request for the host's arch that reaches this server is refused, not built for arm64.
    let out = Command::new("stap")
        .args([
            "-r",
            &t.kernel_release,
            &server,
            "-p4",
            "-e",
            "probe begin { exit() }",
        ])
        .current_dir(&client)
        .env("HOME", &client)
        .env("SYSTEMTAP_DIR", client.join(".systemtap"))
        .output()
        .expect("run stap");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("this server compiles for arm64, the request is for x86_64"),
        "{}",
        text(&out)
    );

    env.stop_leaves_nothing();
}

#[test]
fn a_powerpc_server_compiles_ppc64el_modules() {
    let (tree, kernel_release) = foreign_tree("powerpc64le");
    require("file", "file(1), to tell a module's architecture");
    let env = Env::new("ppc");
    let out = env.run(&["start", "-a", "powerpc", "-r", tree.to_str().unwrap()]);
    assert!(out.status.success(), "start: {}", text(&out));
    let st = status(&env);
    let port = env.port_of(&line_of(&st, "powerpc"));
    let client = env.path("client");
    trust(&client, port);
    let server = format!("--use-server=127.0.0.1:{port}");
    let args = ["-a", "powerpc", "-r", &kernel_release, &server];
    let (kind, took) = compile(&client, &args, "p", "probe begin { exit() }");
    assert!(
        kind.contains("64-bit PowerPC") && kind.contains("LSB"),
        "{kind}"
    );
    eprintln!(
        "powerpc compile of probe begin (cold): {:.1} s",
        took.as_secs_f64()
    );
    env.stop_leaves_nothing();
}

#[test]
fn native_and_arm64_side_by_side_a_bare_client_gets_its_arch() {
    let t = trees();
    let env = Env::advertised("side");
    let native = t.native.to_str().unwrap();
    let out = env.run(&["start", "-r", native, "-n", "native"]);
    assert!(out.status.success(), "start native: {}", text(&out));
    // A second server like the native one, for arm64: its tree's arm64 sibling.
    let out = env.run(&["start", "-n", "native", "-a", "arm64"]);
    assert!(
        out.status.success(),
        "start -n native -a arm64: {}",
        text(&out)
    );

    let st = status(&env);
    let native_line = line_of(&st, "x86_64");
    let arm_line = line_of(&st, "arm64");
    assert!(native_line.contains("-n \"native\""), "{native_line}");
    assert!(
        arm_line.contains(&format!("-r \"{}\"", t.arm64.display())),
        "{arm_line}"
    );
    assert_eq!(env.containers().len(), 2, "{:?}", env.containers());
    let services: String = env
        .service_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for arch in ["x86_64", "arm64"] {
        assert!(
            services.contains(&format!("sysinfo={} {arch}<", t.kernel_release)),
            "{services}"
        );
    }
    // Two instance names (one record of each), the arm64 one saying its arch.
    let names: std::collections::BTreeSet<&str> =
        services.lines().filter(|l| l.contains("<name ")).collect();
    assert_eq!(names.len(), 2, "{services}");
    assert!(services.contains(" arm64</name>"), "{services}");

    // A client with no trust of its own, no address and no port: mDNS and the host's trust
    // lead it to the server of its arch. Its mDNS browse may miss a record on a loaded host:
    // it is asked again, within 30 s.
    let client = env.path("client");
    std::fs::create_dir_all(&client).unwrap();
    let bare = |arch: Option<&str>, name: &str| {
        let mut args = vec!["--use-server", "-r", &t.kernel_release];
        args.extend(arch.map(|a| ["-a", a]).into_iter().flatten());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("stap")
                .args(&args)
                .args(["-v", "-p4", "-m", name, "-e", "probe begin { exit() }"])
                .current_dir(&client)
                .env("HOME", &client)
                .env("SYSTEMTAP_DIR", client.join(".systemtap"))
                .output()
                .expect("run stap");
            if out.status.success() || Instant::now() > deadline {
                assert!(out.status.success(), "bare {args:?}: {}", text(&out));
                return (file_type(&client.join(format!("{name}.ko"))), text(&out));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    // What the client knows of the servers, for a failure's message.
    let servers = || {
        let out = Command::new("stap")
            .args(["-r", &t.kernel_release, "--list-servers=all"])
            .current_dir(&client)
            .env("HOME", &client)
            .env("SYSTEMTAP_DIR", client.join(".systemtap"))
            .output()
            .expect("run stap");
        text(&out)
    };
    let (arm, said) = bare(Some("arm64"), "bare_arm");
    assert!(arm.contains("ARM aarch64"), "{arm}\n{said}\n{}", servers());
    let (x86, said) = bare(None, "bare_native");
    assert!(x86.contains("x86-64"), "{x86}\n{said}\n{}", servers());

    // -p tells them apart: the arm64 one stops, the native one runs on.
    let pid = arm_line.rsplit("PID ").next().unwrap().trim().to_string();
    let out = env.run(&["stop", "-p", &pid]);
    assert!(out.status.success(), "stop -p {pid}: {}", text(&out));
    let st = status(&env);
    assert!(!st.contains("-a \"arm64\""), "{st}");
    line_of(&st, "x86_64");
    env.stop_leaves_nothing();
}

#[test]
fn a_modules_directory_of_two_arches_gives_each_server_its_trees() {
    let t = trees();
    let env = Env::new("modarch");
    let modules = env.path("modules");
    let version = t.native_release.strip_suffix("-amd64").unwrap();
    let arm_release = format!("{version}-arm64");
    let common_tree = PathBuf::from(format!("/usr/src/linux-headers-{version}-common"));
    for (release, tree) in [(&t.native_release, &t.native), (&arm_release, &t.arm64)] {
        let dir = modules.join(release);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(tree, dir.join("build")).unwrap();
        std::os::unix::fs::symlink(&common_tree, dir.join("source")).unwrap();
    }
    env.write_global(&format!("MODULES_PATH={}\n", modules.display()));
    let out = env.run(&["start", "-i"]);
    assert!(out.status.success(), "start -i: {}", text(&out));
    let st = status(&env);
    let native_line = line_of(&st, "x86_64");
    assert!(
        native_line.contains(&format!("-r \"{}\"", t.native_release)),
        "{native_line}"
    );
    let arm_line = line_of(&st, "arm64");
    assert!(
        arm_line.contains(&format!("-r \"{arm_release}\"")),
        "{arm_line}"
    );

    // The arm64 release by name, as Debian calls it.
    let client = env.path("client");
    let port = env.port_of(&arm_line);
    trust(&client, port);
    let server = format!("--use-server=127.0.0.1:{port}");
    let args = ["-a", "arm64", "-r", &arm_release, &server];
    let (kind, _) = compile(&client, &args, "named", "probe begin { exit() }");
    assert!(kind.contains("ARM aarch64"), "{kind}");
    env.stop_leaves_nothing();

    // ARCH= in a server file, with a release of that arch.
    std::fs::write(
        env.path("conf.d/arm.conf"),
        format!("ARCH=arm64\nRELEASE={arm_release}\nNICKNAME=arm\n"),
    )
    .unwrap();
    let out = env.run(&["start"]);
    assert!(out.status.success(), "start of arm.conf: {}", text(&out));
    let arm_line = line_of(&status(&env), "arm64");
    assert!(arm_line.contains("-n \"arm\""), "{arm_line}");
    env.stop_leaves_nothing();
}

#[test]
fn architectures_without_a_toolchain_or_a_tree_are_refused_and_nothing_is_made() {
    let t = trees();
    let env = Env::new("archbad");
    let before = env.snapshot();
    let arm64 = t.arm64.to_str().unwrap();
    let native = t.native.to_str().unwrap();
    for (args, says) in [
        (
            vec!["start", "-a", "sparc64", "-r", arm64],
            vec!["-a sparc64", "no toolchain", "arm64"],
        ),
        (
            vec!["start", "-a", "arm64", "-r", native],
            vec!["-a arm64 does not match", native, "x86_64"],
        ),
        (vec!["start", "-r", arm64, "-a"], vec!["-a"]),
    ] {
        let out = env.run(&args);
        let said = text(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {said}");
        for word in says {
            assert!(said.contains(word), "{args:?} should say {word:?}: {said}");
        }
        assert_eq!(env.snapshot(), before, "{args:?} made something");
    }
    // A configured arch is checked the same way.
    std::fs::write(
        env.path("conf.d/bad.conf"),
        format!("ARCH=arm64\nRELEASE={native}\n"),
    )
    .unwrap();
    let out = env.run(&["start"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("does not match"), "{}", text(&out));
    assert_eq!(env.snapshot(), before);
}
