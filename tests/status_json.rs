//! `status --json` against the real engine: it parses, and it says what the classic lines say,
//! for a server the manager made and one a compose file made; with none running, `[]` and 3.

mod common;

use std::process::Command;

use common::{Env, free_port, require, text, wait_listening};

fn json(env: &Env, args: &[&str], code: i32) -> Vec<serde_json::Value> {
    let out = env.expect(args, code);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
        .as_array()
        .unwrap_or_else(|| panic!("not an array:\n{out}"))
        .clone()
}

/// The value of `-X "..."` in a classic status line.
fn option<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let after = line.split(&format!(" {flag} \"")).nth(1)?;
    Some(&after[..after.find('"')?])
}

#[test]
fn status_json_agrees_with_the_classic_lines() {
    require(
        "docker-compose",
        "Debian's docker-compose (apt-get install docker-compose)",
    );
    let env = Env::new("json");
    let modules = env.fake_modules(&["jcli", "jcompose"]);
    env.write_global(&format!("MODULES_PATH={}\n", modules.display()));
    let none = env.run(&["status", "--json"]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none));
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "[]");

    let (cli_port, compose_port) = (free_port(), free_port());
    env.expect(
        &[
            "start",
            "-r",
            "jcli",
            "-n",
            "bycli",
            "--port",
            &cli_port.to_string(),
        ],
        0,
    );
    std::fs::write(
        env.path("conf.d/c.conf"),
        format!("RELEASE=jcompose\nNICKNAME=bycompose\nPORT={compose_port}\n"),
    )
    .unwrap();
    let file = env.path("compose.yml");
    env.expect(
        &["compose", "-n", "bycompose", "-o", file.to_str().unwrap()],
        0,
    );
    let project = env.tenant.clone();
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .arg("-p")
            .arg(&project)
            .arg("-f")
            .arg(&file)
            .args(args)
            .output()
            .expect("run docker-compose")
    };
    let up = compose(&["up", "-d"]);
    assert!(up.status.success(), "up: {}", text(&up));
    let composed = common::lines(&common::docker(&[
        "ps",
        "--filter",
        &format!("label=io.stap-server.tenant={}", env.tenant),
        "--filter",
        "label=io.stap-server.origin=compose",
        "--format",
        "{{.Names}}",
    ]));
    assert_eq!(composed.len(), 1, "{composed:?}");
    wait_listening(&composed[0]);

    let classic = env.expect(&["status"], 0);
    let objects = json(&env, &["status", "--json"], 0);
    let lines: Vec<&str> = classic
        .lines()
        .filter(|l| l.starts_with("stap-server "))
        .collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert_eq!(lines.len(), 2, "{classic}");
    let serials: Vec<&str> = classic
        .lines()
        .filter_map(|l| l.trim().strip_prefix("certificate serial "))
        .collect();
    for (line, (o, serial)) in lines.iter().zip(objects.iter().zip(&serials)) {
        let s = |k: &str| o[k].as_str().unwrap_or_else(|| panic!("{k} in {o}"));
        assert_eq!(option(line, "-a"), Some(s("arch")), "{line}\n{o}");
        assert_eq!(option(line, "-r"), Some(s("release")), "{line}\n{o}");
        assert_eq!(option(line, "-u"), Some(s("user")), "{line}\n{o}");
        assert_eq!(option(line, "-n"), Some(s("nickname")), "{line}\n{o}");
        assert_eq!(option(line, "--log"), Some(s("log")), "{line}\n{o}");
        let port = o["port"].as_u64().unwrap().to_string();
        assert_eq!(option(line, "--port"), Some(port.as_str()), "{line}\n{o}");
        assert_eq!(o["host_port"], o["port"]);
        let pid = o["pid"].as_u64().unwrap();
        assert!(
            line.ends_with(&format!("running as PID {pid}")),
            "{line}\n{o}"
        );
        assert_eq!(o["running"], true);
        assert_eq!(o["state"], "running");
        assert_eq!(s("certificate_serial"), *serial);
        assert_eq!(o["health"], "serving", "{o}");
        assert_eq!(o["tenant"], env.tenant.as_str());
        assert_eq!(o["image"], "stap-server:latest");
        assert!(!s("systemtap_version").is_empty());
        assert_eq!(o["kernel_release"], o["release"]);
        assert_eq!(o["arch"], "x86_64");
        let id = s("container_id");
        let inspect = common::docker(&["inspect", "-f", "{{.Name}}", id]);
        assert_eq!(
            String::from_utf8_lossy(&inspect.stdout).trim(),
            format!("/{}", s("container_name"))
        );
    }
    let by_nick = |n: &str| {
        objects
            .iter()
            .find(|o| o["nickname"] == n)
            .unwrap_or_else(|| panic!("{n} in {objects:?}"))
    };
    assert_eq!(by_nick("bycli")["origin"], "cli");
    assert_eq!(by_nick("bycli")["port"], cli_port);
    assert_eq!(by_nick("bycompose")["origin"], "compose");
    assert_eq!(by_nick("bycompose")["port"], compose_port);

    // Named servers, as plain status: one found is 0, one missing is 3 (said on stderr).
    let one = json(&env, &["status", "--json", "-n", "bycli"], 0);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["nickname"], "bycli");
    let missing = env.run(&["status", "--json", "-n", "nosuch"]);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing));
    assert_eq!(String::from_utf8_lossy(&missing.stdout).trim(), "[]");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nosuch"),
        "{}",
        text(&missing)
    );

    let down = compose(&["down"]);
    assert!(down.status.success(), "down: {}", text(&down));
    env.expect(&["stop"], 0);
    let none = env.run(&["status", "--json"]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none));
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "[]");
}
