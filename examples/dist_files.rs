//! Writes the files the Debian package ships that come from the clap definitions, so they
//! always say what the binary does: the manual page `stap-server.8` (generated sections from
//! the command tree, written ones from `dist/man/`) and the bash and zsh completions.
//!
//! `cargo run --example dist_files -- OUTDIR` (scripts/package.sh runs it).

use std::io::Write;
use std::path::PathBuf;

use clap::{Arg, Command};
use clap_complete::Shell;
use clap_mangen::Man;

const DESCRIPTION: &str = include_str!("../dist/man/description.roff");
const REFERENCE: &str = include_str!("../dist/man/reference.roff");

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: dist_files OUTDIR"));
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("stap-server.8"), manual()?)?;
    for (shell, file) in [(Shell::Bash, "stap-server"), (Shell::Zsh, "_stap-server")] {
        let mut f = std::fs::File::create(out.join(file))?;
        clap_complete::generate(
            shell,
            &mut stap_server::cli::command(),
            "stap-server",
            &mut f,
        );
    }
    Ok(())
}

fn manual() -> std::io::Result<Vec<u8>> {
    let cmd = stap_server::cli::command();
    let man = Man::new(cmd.clone())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("stap-server {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    synopsis(&mut page, &cmd)?;
    page.extend_from_slice(DESCRIPTION.as_bytes());
    actions(&mut page, &cmd)?;
    options(&mut page, &cmd)?;
    page.extend_from_slice(REFERENCE.as_bytes());
    Ok(page)
}

/// One line per command, from the command tree.
fn synopsis(w: &mut Vec<u8>, cmd: &Command) -> std::io::Result<()> {
    writeln!(w, ".SH SYNOPSIS")?;
    let actions: Vec<String> = stap_server::cli::ACTIONS
        .iter()
        .map(|(name, _)| roff(name))
        .collect();
    writeln!(
        w,
        ".B stap\\-server\n{{\\fB{}\\fR}}\n[\\fIoptions\\fR]",
        actions.join("\\fR|\\fB")
    )?;
    for (path, sub) in own_commands(cmd) {
        let own: Vec<String> = own_args(sub)
            .filter(|a| !a.is_hide_set())
            .map(
                |a| match (a.get_long(), a.get_short(), a.get_value_names()) {
                    (_, _, Some(v)) if a.is_positional() => format!("\\fI{}\\fR...", v[0]),
                    (Some(l), _, None) => format!("[\\fB\\-\\-{}\\fR]", roff(l)),
                    (_, Some(s), Some(v)) => format!("[\\fB\\-{s}\\fR \\fI{}\\fR]", v[0]),
                    _ => String::new(),
                },
            )
            .collect();
        let server = if sub.get_arguments().any(|a| a.get_id() == "release") {
            " [\\fIoptions\\fR]"
        } else {
            ""
        };
        writeln!(
            w,
            ".br\n.B stap\\-server {}\n{}{server}",
            roff(&path),
            own.join(" ")
        )?;
    }
    Ok(())
}

/// Commands with options of their own, by their full name (`image build`, `log hold`).
fn own_commands(cmd: &Command) -> Vec<(String, &Command)> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands() {
        if sub.has_subcommands() {
            for leaf in sub.get_subcommands() {
                out.push((format!("{} {}", sub.get_name(), leaf.get_name()), leaf));
            }
        } else if own_args(sub).next().is_some() {
            out.push((sub.get_name().to_string(), sub));
        }
    }
    out
}

/// A command's arguments that are not the server options every action shares (nor help).
fn own_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    let shared: Vec<String> = stap_server::cli::command()
        .find_subcommand("start")
        .expect("start")
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    cmd.get_arguments()
        .filter(move |a| !shared.iter().any(|s| s == a.get_id().as_str()))
        .filter(|a| a.get_id() != "help")
}

fn actions(w: &mut Vec<u8>, cmd: &Command) -> std::io::Result<()> {
    writeln!(w, ".SH ACTIONS")?;
    let mut all: Vec<(String, &Command)> = Vec::new();
    for sub in cmd.get_subcommands() {
        if sub.has_subcommands() {
            for leaf in sub.get_subcommands() {
                all.push((format!("{} {}", sub.get_name(), leaf.get_name()), leaf));
            }
        } else {
            all.push((sub.get_name().to_string(), sub));
        }
    }
    for (name, sub) in all {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        writeln!(w, ".TP\n.B {}\n{}.", roff(&name), roff(&about))?;
    }
    Ok(())
}

/// The server options (those of `start`, shared by every action), then each command's own,
/// then the general ones; each rendered by clap_mangen.
fn options(w: &mut Vec<u8>, cmd: &Command) -> std::io::Result<()> {
    writeln!(w, ".SH OPTIONS")?;
    if let Some(after) = cmd.get_after_help() {
        writeln!(w, "{}", roff(&after.to_string().replace('\n', " ")))?;
    }
    let start = cmd.find_subcommand("start").expect("start").clone();
    let shared = Command::new("stap-server").disable_help_flag(true).args(
        start
            .get_arguments()
            .filter(|a| a.get_id() != "help")
            .cloned(),
    );
    section(
        w,
        "Server options (every action, image build, announce, compose)",
        shared,
    )?;
    for (path, sub) in own_commands(cmd) {
        let args: Vec<Arg> = own_args(sub)
            .filter(|a| !a.is_positional() && !a.is_hide_set())
            .cloned()
            .collect();
        if !args.is_empty() {
            section(
                w,
                &format!("stap-server {path}"),
                Command::new("options").disable_help_flag(true).args(args),
            )?;
        }
    }
    let general = Command::new("stap-server").version(env!("CARGO_PKG_VERSION"));
    section(w, "General options", general)
}

/// One clap_mangen options section under a subheading of OPTIONS.
fn section(w: &mut Vec<u8>, title: &str, cmd: Command) -> std::io::Result<()> {
    let mut buf = Vec::new();
    Man::new(cmd).render_options_section(&mut buf)?;
    let text = String::from_utf8(buf).expect("roff is text");
    writeln!(w, ".SS \"{}\"", roff(title))?;
    for line in text.lines().filter(|l| !l.starts_with(".SH")) {
        writeln!(w, "{line}")?;
    }
    Ok(())
}

/// Text for roff: backslashes and dashes escaped, no line that starts with a control dot.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}
