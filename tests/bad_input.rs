//! Bad input of every kind, table-driven: each case must fail with one clear message naming
//! the culprit (file and line where there is one), the LSB exit code (2 usage, 6 bad
//! configuration, 5 not installed, 1 otherwise; 3 for `status` of what does not run), and
//! change nothing: the tenant's containers (and their states), volumes, networks and
//! advertisements are the same before and after. A server runs throughout, so a case that
//! removed or restarted something would show too.

mod common;

use std::net::TcpListener;

use common::{Env, headers_release, text};

/// One bad invocation and what it must say.
struct Case {
    what: String,
    args: Vec<String>,
    /// Lines added to the `-c` file (after its 5 lines of test settings).
    global: Vec<u8>,
    /// Server files written into the configuration directory for this case.
    confd: Vec<(&'static str, Vec<u8>)>,
    env: Vec<(&'static str, String)>,
    code: i32,
    says: Vec<String>,
}

fn case(what: &str, args: &[&str], code: i32, says: &[&str]) -> Case {
    Case {
        what: what.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        global: vec![],
        confd: vec![],
        env: vec![],
        code,
        says: says.iter().map(|s| s.to_string()).collect(),
    }
}

impl Case {
    fn global(mut self, lines: impl AsRef<[u8]>) -> Case {
        self.global = lines.as_ref().to_vec();
        self
    }
    fn confd(mut self, file: &'static str, text: &[u8]) -> Case {
        self.confd.push((file, text.to_vec()));
        self
    }
    fn env(mut self, key: &'static str, value: &str) -> Case {
        self.env.push((key, value.into()));
        self
    }
}

fn cases(env: &Env, release: &str, busy: u16) -> Vec<Case> {
    let r = release;
    let busy = busy.to_string();
    let g = env.config.display().to_string();
    let at = |n: usize| format!("{g}:{}:", common::first_extra_line() + n - 1);
    let confd = env.path("conf.d").display().to_string();
    let conf = |file: &str, line: usize| format!("{confd}/{file}:{line}:");
    let bad_global = env.path("bad-global");
    std::fs::write(&bad_global, "TENANT=x\nSTAT_PATH=relative/stat\n").unwrap();
    let bad_global = bad_global.display().to_string();
    let dir = env.path("conf.d").display().to_string();
    // A build tree whose link reaches the image's own systemtap files.
    let over = env.path("tree-over-image");
    std::fs::create_dir_all(over.join("include/config")).unwrap();
    std::fs::write(over.join("include/config/kernel.release"), "6.1.0-over\n").unwrap();
    std::fs::write(over.join("Makefile"), "# tree\n").unwrap();
    let _ = std::os::unix::fs::symlink("/usr/share/systemtap/runtime", over.join("runtime"));
    let over = over.display().to_string();

    vec![
        // The command line: usage errors (2), before anything is looked up.
        case("unknown action", &["frobnicate"], 2, &["frobnicate"]),
        case("no action", &[], 2, &["Usage"]),
        case("unknown option", &["start", "-x"], 2, &["-x"]),
        case("unknown long option", &["start", "--frob"], 2, &["--frob"]),
        case("stray argument", &["start", "stray"], 2, &["stray"]),
        case("port 0", &["start", "--port", "0"], 2, &["port \"0\""]),
        case("port too big", &["start", "--port", "65536"], 2, &["65536"]),
        case(
            "port not a number",
            &["start", "--port", "http"],
            2,
            &["http"],
        ),
        case("pid not a number", &["start", "-p", "abc"], 2, &["abc"]),
        case(
            "pid 0",
            &["stop", "-p", "0"],
            2,
            &["\"0\" is not a process id"],
        ),
        case(
            "release with a space",
            &["start", "-r", "rel ease"],
            2,
            &["rel ease"],
        ),
        case(
            "release a relative path",
            &["start", "-r", "build/tree"],
            2,
            &["build/tree"],
        ),
        case(
            "include relative",
            &["start", "-I", "tapsets"],
            2,
            &["\"tapsets\" is not an absolute path"],
        ),
        case(
            "runtime relative",
            &["start", "-R", "runtime"],
            2,
            &["\"runtime\""],
        ),
        case("define not a macro", &["start", "-D", "1X=2"], 2, &["1X=2"]),
        case(
            "log relative",
            &["start", "--log", "server.log"],
            2,
            &["server.log"],
        ),
        case("ssl relative", &["start", "--ssl", "ssl"], 2, &["\"ssl\""]),
        case(
            "max-threads negative",
            &["start", "--max-threads=-1"],
            2,
            &["-1"],
        ),
        case(
            "max-request-size 0",
            &["start", "--max-request-size", "0"],
            2,
            &["\"0\" is not a size"],
        ),
        case(
            "max-compressed-request word",
            &["start", "--max-compressed-request", "big"],
            2,
            &["big"],
        ),
        case(
            "user not a name",
            &["start", "-u", "bad user"],
            2,
            &["bad user"],
        ),
        case(
            "nickname with a space",
            &["start", "-n", "my server"],
            2,
            &["my server"],
        ),
        case(
            "tenant upper case",
            &["start", "--tenant", "TeamA"],
            2,
            &["TeamA"],
        ),
        case(
            "image not a reference",
            &["start", "--image", "bad image"],
            2,
            &["bad image"],
        ),
        case(
            "memory too small",
            &["start", "--memory", "1m"],
            2,
            &["memory \"1m\""],
        ),
        case(
            "memory a word",
            &["start", "--memory", "lots"],
            2,
            &["lots"],
        ),
        case("cpus 0", &["start", "--cpus", "0"], 2, &["cpus \"0\""]),
        case(
            "cpus below what the engine enforces",
            &["start", "--cpus", "0.000000001"],
            2,
            &["0.000000001"],
        ),
        case(
            "pids too few",
            &["start", "--pids", "8"],
            2,
            &["pids \"8\""],
        ),
        case("tmpsize 0", &["start", "--tmpsize", "0"], 2, &["\"0\""]),
        case(
            "option without its value",
            &["start", "--port"],
            2,
            &["--port"],
        ),
        // The command line: well-formed values that cannot be used (1), checked before anything
        // is made. A nickname keeps them from designating the server that runs.
        case(
            "user root",
            &["start", "-n", "c1", "-r", r, "-u", "root"],
            1,
            &["refusing to run a server as root", "'root'"],
        ),
        case(
            "unknown user",
            &["start", "-n", "c2", "-r", r, "-u", "nosuchuser"],
            1,
            &["unknown user 'nosuchuser'"],
        ),
        case(
            "release not installed",
            &["start", "-r", "9.9.9-nonexistent"],
            1,
            &["no kernel build tree for release 9.9.9-nonexistent"],
        ),
        case(
            "build tree missing",
            &["start", "-r", "/nonexistent/build"],
            1,
            &["/nonexistent/build"],
        ),
        case(
            "build tree not a tree",
            &["start", "-r", "/etc"],
            1,
            &["/etc is not a kernel build tree"],
        ),
        case(
            "build tree over the image's files",
            &["start", "-r", &over],
            1,
            &[
                "needs /usr/share/systemtap/runtime, which would cover the image's own /usr/share/systemtap",
            ],
        ),
        case(
            "port in use",
            &["start", "-n", "c3", "-r", r, "--port", &busy],
            1,
            &[&format!("port {busy} is already in use")],
        ),
        case(
            "include missing",
            &["start", "-n", "c4", "-r", r, "-I", "/nonexistent/tapsets"],
            1,
            &["/nonexistent/tapsets is not a directory"],
        ),
        case(
            "runtime missing",
            &["start", "-n", "c5", "-r", r, "-R", "/nonexistent/runtime"],
            1,
            &["/nonexistent/runtime"],
        ),
        case(
            "password option",
            &["start", "-n", "c6", "-r", r, "-P"],
            1,
            &["-P is not supported"],
        ),
        case(
            "other settings than the running server",
            &["start", "-r", r, "--max-threads", "3"],
            1,
            &["already runs with other settings", "use restart"],
        ),
        case(
            "stop of a pid that is no server",
            &["stop", "-p", "1"],
            1,
            &["No stap-server running as pid 1"],
        ),
        case(
            "status of a pid that does not exist",
            &["status", "-p", "4194304"],
            1,
            &["No stap-server running as pid 4194304"],
        ),
        case(
            "stop of an unknown nickname",
            &["stop", "-n", "nosuchnick"],
            1,
            &["No configuration found for the nickname 'nosuchnick'"],
        ),
        case(
            "status of an unknown nickname",
            &["status", "-n", "nosuchnick"],
            3,
            &["No configuration found for the nickname 'nosuchnick'"],
        ),
        case(
            "configuration file missing",
            &["start", "-c", "/nonexistent/stap.conf", "-r", r],
            6,
            &["/nonexistent/stap.conf: no such configuration file"],
        ),
        case(
            "configuration file a directory",
            &["start", "-c", &dir, "-r", r],
            6,
            &[&format!("{dir}: no such configuration file")],
        ),
        // The global file: every kind of bad line, named by file and line.
        case(
            "global: not an assignment",
            &["start"],
            6,
            &[
                &at(1),
                "expected VARIABLE=VALUE, found \"not an assignment\"",
            ],
        )
        .global("not an assignment\n"),
        case(
            "global: unknown variable",
            &["start"],
            6,
            &[&at(1), "unknown variable ARCH"],
        )
        .global("ARCH=x86_64\n"),
        case(
            "global: lower-case variable",
            &["start"],
            6,
            &[&at(2), "port=5600"],
        )
        .global("# fine\nport=5600\n"),
        case(
            "global: relative path",
            &["start"],
            6,
            &[&at(1), "\"conf.d\" is not an absolute path"],
        )
        .global("CONFIG_PATH=conf.d\n"),
        case("global: bad user", &["start"], 6, &[&at(1), "bad user"])
            .global("STAP_USER=bad user\n"),
        case("global: bad image", &["start"], 6, &[&at(1), "-image"]).global("IMAGE=-image\n"),
        case("global: bad tenant", &["start"], 6, &[&at(1), "Team A"]).global("TENANT=Team A\n"),
        case("global: bad port range", &["start"], 6, &[&at(1), "9-1"]).global("PORT_RANGE=9-1\n"),
        case(
            "global: bad memory",
            &["start"],
            6,
            &[&at(1), "MEMORY", "lots"],
        )
        .global("MEMORY=lots\n"),
        case("global: bad cpus", &["start"], 6, &[&at(1), "CPUS"]).global("CPUS=-1\n"),
        case("global: bad pids", &["start"], 6, &[&at(1), "PIDS"]).global("PIDS=1\n"),
        case("global: bad tmpsize", &["start"], 6, &[&at(1), "TMPSIZE"]).global("TMPSIZE=0\n"),
        case(
            "global: append to a scalar",
            &["start"],
            6,
            &[&at(1), "LOG_FILE is not an array variable"],
        )
        .global("LOG_FILE+=/tmp/x\n"),
        case(
            "global: not UTF-8",
            &["start"],
            6,
            &[&at(1), "not valid UTF-8"],
        )
        .global(b"MEMORY=1\xffg\n"),
        case(
            "global: every bad line",
            &["start"],
            6,
            &[&at(1), &at(3), "FOO", "BAR"],
        )
        .global("FOO=1\nMEMORY=1g\nBAR=2\n"),
        case(
            "global file named by STAP_SERVER_GLOBAL_CONFIG",
            &["start"],
            6,
            &[&format!("{bad_global}:2:"), "relative/stat"],
        )
        .env("STAP_SERVER_GLOBAL_CONFIG", &bad_global),
        // Server files: every kind of bad line, named by file and line; nothing starts.
        case(
            "server: port out of range",
            &["start"],
            6,
            &[&conf("a.conf", 1), "70000"],
        )
        .confd("a.conf", b"PORT=70000\n"),
        case(
            "server: port a word",
            &["start"],
            6,
            &[&conf("a.conf", 2), "http"],
        )
        .confd("a.conf", b"NICKNAME=x\nPORT=http\n"),
        case(
            "server: release with a space",
            &["start"],
            6,
            &[&conf("a.conf", 1), "rel ease"],
        )
        .confd("a.conf", b"RELEASE=rel ease\n"),
        case(
            "server: relative include",
            &["start"],
            6,
            &[&conf("a.conf", 1), "tapsets"],
        )
        .confd("a.conf", b"INCLUDE+=tapsets\n"),
        case(
            "server: append to a scalar",
            &["start"],
            6,
            &[&conf("a.conf", 1), "USER is not an array variable"],
        )
        .confd("a.conf", b"USER+=x\n"),
        case(
            "server: bad nickname",
            &["start"],
            6,
            &[&conf("a.conf", 1), "a b"],
        )
        .confd("a.conf", b"NICKNAME=a b\n"),
        case(
            "server: bad define",
            &["start"],
            6,
            &[&conf("a.conf", 1), "1X"],
        )
        .confd("a.conf", b"DEFINE=1X\n"),
        case(
            "server: relative ssl",
            &["start"],
            6,
            &[&conf("a.conf", 1), "\"ssl\""],
        )
        .confd("a.conf", b"SSL=ssl\n"),
        case(
            "server: relative log",
            &["start"],
            6,
            &[&conf("a.conf", 1), "server.log"],
        )
        .confd("a.conf", b"LOG=server.log\n"),
        case(
            "server: relative runtime",
            &["start"],
            6,
            &[&conf("a.conf", 1), "runtime"],
        )
        .confd("a.conf", b"RUNTIME=runtime\n"),
        case(
            "server: negative threads",
            &["start"],
            6,
            &[&conf("a.conf", 1), "-1"],
        )
        .confd("a.conf", b"MAXTHREADS=-1\n"),
        case(
            "server: zero request size",
            &["start"],
            6,
            &[&conf("a.conf", 1), "MAXREQSIZE"],
        )
        .confd("a.conf", b"MAXREQSIZE=0\n"),
        case(
            "server: bad memory",
            &["start"],
            6,
            &[&conf("a.conf", 1), "MEMORY"],
        )
        .confd("a.conf", b"MEMORY=1\n"),
        case(
            "server: bad image",
            &["start"],
            6,
            &[&conf("a.conf", 1), ":bad"],
        )
        .confd("a.conf", b"IMAGE=:bad\n"),
        case(
            "server: unknown variable",
            &["start"],
            6,
            &[&conf("a.conf", 1), "unknown variable TENANT"],
        )
        .confd("a.conf", b"TENANT=x\n"),
        case(
            "server: leading space",
            &["start"],
            6,
            &[&conf("a.conf", 1), " PORT=1"],
        )
        .confd("a.conf", b" PORT=1\n"),
        case(
            "server: not UTF-8",
            &["start"],
            6,
            &[&conf("a.conf", 1), "not valid UTF-8"],
        )
        .confd("a.conf", b"NICKNAME=\xff\n"),
        case(
            "server: errors of two files",
            &["start"],
            6,
            &[&conf("b.conf", 2), &conf("c.conf", 1)],
        )
        .confd("b.conf", b"PORT=1\nPORT=0\n")
        .confd("c.conf", b"FOO=1\n"),
        case(
            "server: stop reads the files too",
            &["stop"],
            6,
            &[&conf("a.conf", 1)],
        )
        .confd("a.conf", b"PORT=0\n"),
        case(
            "server: status reads the files too",
            &["status"],
            6,
            &[&conf("a.conf", 1)],
        )
        .confd("a.conf", b"PORT=0\n"),
        // Server files that parse but name what cannot be used: nothing starts, nothing stops.
        case(
            "server: unknown user",
            &["start"],
            1,
            &["unknown user 'nosuchuser'"],
        )
        .confd(
            "a.conf",
            format!("RELEASE={r}\nNICKNAME=c7\nUSER=nosuchuser\n").as_bytes(),
        ),
        case(
            "server: root",
            &["start"],
            1,
            &["refusing to run a server as root"],
        )
        .confd(
            "a.conf",
            format!("RELEASE={r}\nNICKNAME=c8\nUSER=root\n").as_bytes(),
        ),
        case(
            "server: release not installed",
            &["start"],
            1,
            &["9.9.9-nonexistent"],
        )
        .confd("a.conf", b"RELEASE=9.9.9-nonexistent\n"),
        case(
            "server: one bad of two",
            &["start"],
            1,
            &["unknown user 'nosuchuser'"],
        )
        .confd("a.conf", format!("RELEASE={r}\nNICKNAME=c9\n").as_bytes())
        .confd(
            "b.conf",
            format!("RELEASE={r}\nNICKNAME=c10\nUSER=nosuchuser\n").as_bytes(),
        ),
        // The environment.
        case(
            "engine socket missing",
            &["start", "-r", r],
            1,
            &["cannot reach the Docker engine at unix:///nonexistent/docker.sock"],
        )
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        case(
            "engine port closed",
            &["status"],
            4,
            &["cannot reach the Docker engine at tcp://127.0.0.1:1"],
        )
        .env("DOCKER_HOST", "tcp://127.0.0.1:1"),
        case(
            "engine address malformed",
            &["stop"],
            1,
            &["cannot reach the Docker engine at nowhere://x"],
        )
        .env("DOCKER_HOST", "nowhere://x"),
        case(
            "image missing, not ours to build",
            &[
                "start",
                "-n",
                "c11",
                "-r",
                r,
                "--image",
                "stap-server-missing:none",
            ],
            5,
            &["image stap-server-missing:none is not present"],
        ),
        case(
            "image missing, from the global file",
            &["start", "-n", "c12", "-r", r],
            5,
            &["image no-such-registry.invalid/stap:1 is not present"],
        )
        .global("IMAGE=no-such-registry.invalid/stap:1\n"),
        case(
            "image missing, from a server file",
            &["start"],
            5,
            &["image stap-server-missing:conf is not present"],
        )
        .confd(
            "a.conf",
            format!("RELEASE={r}\nNICKNAME=c13\nIMAGE=stap-server-missing:conf\n").as_bytes(),
        ),
    ]
}

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    let env = Env::new("badin");
    let release = headers_release();
    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "{}", text(&start));
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let before = env.snapshot();
    assert_eq!(
        before.iter().filter(|l| l.starts_with("container")).count(),
        1
    );
    assert!(before.iter().any(|l| l.starts_with("advert")), "{before:?}");

    let cases = cases(&env, &release, busy_port);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        env.write_global("");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&env.config)
            .unwrap();
        std::io::Write::write_all(&mut file, &c.global).unwrap();
        for (file, content) in &c.confd {
            std::fs::write(env.path("conf.d").join(file), content).unwrap();
        }
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let vars: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = env.run_env(&args, &vars);
        env.write_global("");
        for (file, _) in &c.confd {
            std::fs::remove_file(env.path("conf.d").join(file)).unwrap();
        }
        let said = text(&out);
        let mut wrong = Vec::new();
        if out.status.code() != Some(c.code) {
            wrong.push(format!("exit {:?}, not {}", out.status.code(), c.code));
        }
        for s in &c.says {
            if !said.contains(s.as_str()) {
                wrong.push(format!("does not say {s:?}"));
            }
        }
        if said.contains("panicked") {
            wrong.push("panicked".into());
        }
        let after = env.snapshot();
        if after != before {
            wrong.push(format!("changed the engine state: {before:?} -> {after:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n  output: {}",
                c.what,
                wrong.join("; "),
                said.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    env.assert_one_healthy();
    drop(busy);
}
