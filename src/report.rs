//! What the user reads: the classic option strings and status lines, `Starting ...` then `OK`
//! or `FAILED`, each message also appended to the log file with a timestamp.

use std::path::{Path, PathBuf};

use crate::loghold;
use crate::spec::{Server, ServerSpec};

/// Quotes a value as the classic script does: in double quotes, with `\` and `"` escaped.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The classic option string of a server: `-a "x86_64" -r "R" ... -u "U" -n "N" --log "L"`.
pub fn server_options(spec: &ServerSpec, nickname: Option<&str>, port: Option<u16>) -> String {
    let mut parts = vec![format!("-a {}", quote(&spec.arch))];
    parts.push(format!("-r {}", quote(&spec.release)));
    if let Some(r) = &spec.runtime {
        parts.push(format!("-R {}", quote(r)));
    }
    parts.extend(spec.defines.iter().map(|d| format!("-D {}", quote(d))));
    parts.extend(spec.includes.iter().map(|i| format!("-I {}", quote(i))));
    parts.extend(spec.builds.iter().map(|b| format!("-B {}", quote(b))));
    parts.push(format!("-u {}", quote(&spec.user)));
    if let Some(n) = nickname {
        parts.push(format!("-n {}", quote(n)));
    }
    parts.push(format!("--log {}", quote(&spec.log.display().to_string())));
    if let Some(p) = port {
        parts.push(format!("--port {}", quote(&p.to_string())));
    }
    if let Some(s) = &spec.ssl {
        parts.push(format!("--ssl {}", quote(&s.display().to_string())));
    }
    if let Some(n) = spec.max_threads {
        parts.push(format!("--max-threads {}", quote(&n.to_string())));
    }
    if let Some(n) = spec.max_request_size {
        parts.push(format!("--max-request-size {}", quote(&n.to_string())));
    }
    if let Some(n) = spec.max_compressed_request {
        parts.push(format!(
            "--max-compressed-request {}",
            quote(&n.to_string())
        ));
    }
    parts.join(" ")
}

/// The option string of a spec about to be made (its pinned port, its nickname if any).
pub fn spec_options(spec: &ServerSpec) -> String {
    server_options(spec, spec.nickname.as_deref(), spec.port)
}

/// The option string of a server that exists (nickname defaulting to its PID, its real port).
pub fn running_options(server: &Server) -> String {
    server_options(
        &server.spec,
        server.display_nickname().as_deref(),
        server.host_port.or(server.spec.port),
    )
}

/// The classic status line of one server.
pub fn status_line(server: &Server) -> String {
    let opts = running_options(server);
    if let Some(place) = &server.place {
        let port = server
            .host_port
            .map(|p| format!(" port {p}"))
            .unwrap_or_default();
        return match (server.running(), &place.reason) {
            (true, _) => format!(
                "stap-server {opts} running{} on node {} ({}){port}",
                server
                    .pid
                    .map(|p| format!(" as PID {p}"))
                    .unwrap_or_default(),
                place.node,
                place.address
            ),
            (false, reason) => format!(
                "stap-server {opts} is not running on node {} (service {}: {})",
                place.node,
                server.name,
                reason.as_deref().unwrap_or(&server.state)
            ),
        };
    }
    match (server.running(), server.pid) {
        (true, Some(pid)) => format!("stap-server {opts} running as PID {pid}"),
        (true, None) => format!("stap-server {opts} running"),
        _ => format!(
            "stap-server {opts} is no longer running (container {} is {})",
            server.name, server.state
        ),
    }
}

/// Prints to standard output and appends every message to the log file, as classic does.
pub struct Report {
    log: PathBuf,
    out: Vec<String>,
}

impl Report {
    pub fn new(log: &Path) -> Report {
        Report {
            log: log.to_path_buf(),
            out: Vec::new(),
        }
    }

    /// A line for the user and the log.
    pub fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("{line}");
        self.log(&line);
        self.out.push(line);
    }

    /// A line for the user only (status output is not logged, as classic).
    pub fn print(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("{line}");
        self.out.push(line);
    }

    /// `OK` or `FAILED` for the step just announced; failures carry their reason.
    pub fn outcome(&mut self, what: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                println!("OK");
                self.log(&format!("Pass: {what}"));
            }
            Err(reason) => {
                println!("FAILED");
                eprintln!("{reason}");
                self.log(&format!("Error: {what}: {reason}"));
            }
        }
    }

    /// Appends one timestamped message to the log file. A log that cannot be written does not
    /// fail the action; it is said once on standard error.
    pub fn log(&mut self, message: &str) {
        let stamp = chrono::Local::now().format("%b %e %T");
        // Never between logrotate's copy and truncation (see loghold).
        let written = loghold::append(
            &self.log,
            Path::new(loghold::HOLD_DIR),
            &format!("{stamp}: {message}"),
        );
        if let Err(e) = written {
            eprintln!("stap-server: cannot append to {}: {e}", self.log.display());
            self.log = PathBuf::from("/dev/null");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServerSpec {
        ServerSpec::example("6.1.0-56-amd64")
    }

    #[test]
    fn the_classic_status_line() {
        let server = Server {
            spec: ServerSpec {
                nickname: Some("native".into()),
                ..spec()
            },
            id: "abc".into(),
            name: "n".into(),
            state: "running".into(),
            pid: Some(23640),
            host_port: Some(5600),
            managed_by_cli: true,
            kernel_release: "6.1.0-56-amd64".into(),
            cert_volume: "v".into(),
            place: None,
        };
        assert_eq!(
            status_line(&server),
            "stap-server -a \"x86_64\" -r \"6.1.0-56-amd64\" -u \"stap-server\" -n \"native\" \
             --log \"/var/log/stap-server/log\" --port \"5600\" running as PID 23640"
        );
        let unnamed = Server {
            spec: spec(),
            ..server
        };
        assert!(status_line(&unnamed).contains("-n \"23640\""));
    }

    #[test]
    fn every_option_in_classic_order_and_quoting() {
        let s = ServerSpec {
            runtime: Some("/rt".into()),
            defines: vec!["A=\"x\"".into()],
            includes: vec!["/i".into()],
            builds: vec!["C=a\\b".into()],
            ssl: Some("/ssl".into()),
            max_threads: Some(0),
            max_request_size: Some(1),
            max_compressed_request: Some(2),
            port: Some(5601),
            ..spec()
        };
        assert_eq!(
            spec_options(&s),
            "-a \"x86_64\" -r \"6.1.0-56-amd64\" -R \"/rt\" -D \"A=\\\"x\\\"\" -I \"/i\" \
             -B \"C=a\\\\b\" -u \"stap-server\" --log \"/var/log/stap-server/log\" --port \"5601\" \
             --ssl \"/ssl\" --max-threads \"0\" --max-request-size \"1\" \
             --max-compressed-request \"2\""
        );
    }
}
