//! Warm-up: the compiles a first client would pay for, made by each server ahead of its
//! clients (the image's entry point does them beside stap-serverd, into stap's cache in the
//! certificate volume, so they survive restarts), and the state it leaves in a file there.

use std::fmt;

use crate::body::{self, SYSTEMTAP_DIR};
use crate::engine::Engine;
use crate::spec::{Server, ServerSpec};

/// Where a server's entry point says how its warm-up goes, inside its container.
pub fn mark(spec: &ServerSpec) -> String {
    format!("{SYSTEMTAP_DIR}/warm/{}", body::container_name(spec))
}

/// How a server's warm-up goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warmth {
    Warming,
    /// Done, in this many seconds.
    Ready(u64),
    /// A compile failed: the script and stap's last message.
    Failed(String),
}

impl Warmth {
    /// The state a mark file says; `None` for anything else.
    pub fn parse(text: &str) -> Option<Warmth> {
        let text = text.trim_end();
        if text == "warming" {
            Some(Warmth::Warming)
        } else if let Some(secs) = text.strip_prefix("ready ") {
            secs.parse().ok().map(Warmth::Ready)
        } else {
            text.strip_prefix("failed: ")
                .map(|why| Warmth::Failed(why.into()))
        }
    }

    /// One word for tools: `warming`, `ready` or `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            Warmth::Warming => "warming",
            Warmth::Ready(_) => "ready",
            Warmth::Failed(_) => "failed",
        }
    }

    /// The warm-up state of a running server that warms, read from its mark; `None` when
    /// it does not warm, is not running or its mark cannot be read.
    pub async fn of(engine: &Engine, server: &Server) -> Option<Warmth> {
        if !server.spec.warm || !server.running() {
            return None;
        }
        let text = engine
            .read_file(&server.id, &mark(&server.spec))
            .await
            .ok()?;
        Warmth::parse(&String::from_utf8_lossy(&text))
    }
}

impl fmt::Display for Warmth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warmth::Warming => write!(f, "warming (making the first compiles ahead of clients)"),
            Warmth::Ready(secs) => write!(f, "ready (warmed in {secs} s)"),
            Warmth::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read() {
        assert_eq!(Warmth::parse("warming\n"), Some(Warmth::Warming));
        assert_eq!(Warmth::parse("ready 73\n"), Some(Warmth::Ready(73)));
        assert_eq!(
            Warmth::parse("failed: probe x: semantic error\n"),
            Some(Warmth::Failed("probe x: semantic error".into()))
        );
        assert_eq!(Warmth::parse("ready soon"), None);
        assert_eq!(Warmth::parse(""), None);
        assert_eq!(Warmth::Ready(3).word(), "ready");
    }

    #[test]
    fn each_server_has_its_own_mark_in_the_volume() {
        let a = ServerSpec::example("6.1.0-1-amd64");
        let b = ServerSpec::example("6.1.0-2-amd64");
        assert!(mark(&a).starts_with(&format!("{SYSTEMTAP_DIR}/warm/")));
        assert_ne!(mark(&a), mark(&b));
    }
}
