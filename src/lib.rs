//! `stap-server`: SystemTap compile servers, each in its own Docker container, managed with
//! the classic `stap-server` command line and configuration files.
//!
//! # Layout
//! - [`cli`]: the classic grammar (clap), options kept in the order given.
//! - [`config`]: the global and server configuration files; a parser over `impl Read` with
//!   file:line errors.
//! - [`settings`]: the configuration files read from the host, with `-c` and `--tenant`.
//! - [`limits`]: resource limits of server containers and of their requests, with safe
//!   defaults.
//! - [`spec`]: `ServerSpec` and its resolution from options, configuration and running servers.
//! - [`arch`]: target architectures: a tree's, the cross toolchains and images of foreign
//!   ones, Debian's sibling trees of a version for another architecture.
//! - [`buildtree`]: a release or a path → the build tree and the host directories it needs.
//! - [`plan`]: the classic action semantics as pure functions: what each action stops and
//!   starts, what `status` reports with which exit code.
//! - [`labels`]: the label schema, written and read in one place.
//! - [`body`]: `ServerSpec` → container name and create body (pure).
//! - [`compose`]: the compose file of servers (pure).
//! - [`engine`]: the engine operations as one trait; `engine::docker` is the only code that
//!   speaks bollard to one engine, `engine::swarm` to a swarm's manager and its nodes'
//!   engines, `engine::fake` records calls for unit tests.
//! - [`swarm`]: a swarm's nodes and the build trees each has, from a survey job.
//! - [`image`]: the compile-server image, offline (mmdebstrap) or from a registry.
//! - [`host`]: host preparation of servers to be made: identity, ports, log and ssl paths.
//! - [`execute`]: a plan carried out: servers stopped, made, awaited, trusted, advertised;
//!   cleanup on interrupt.
//! - [`advertise`], [`certinfo`]: mDNS through avahi service files; certificate serials.
//! - [`announce`]: the service files kept equal to the running servers (after each action,
//!   and following the engine's events).
//! - [`trust`]: the host's global client trust of the servers' certificates.
//! - [`report`]: classic output lines and the log file.
//! - [`status_json`]: `status --json`, one object per server (a stable schema).
//! - [`warm`]: the first compiles each server makes ahead of its clients, and their state.
//! - [`lock`]: host locks for once-only work.
//! - [`loghold`]: `log hold`/`log release`, logrotate's scripts: rotation that loses no line.
//! - [`app`]: the actions, glue from the command line to the modules above.
//! - [`error`]: the error enum, engine failures with their HTTP status, and every exit code.

pub mod advertise;
pub mod announce;
pub mod app;
pub mod arch;
pub mod body;
pub mod buildtree;
pub mod certinfo;
pub mod cli;
pub mod compose;
pub mod config;
pub mod engine;
pub mod error;
pub mod execute;
pub mod host;
pub mod image;
pub mod labels;
pub mod limits;
pub mod lock;
pub mod loghold;
pub mod plan;
pub mod report;
pub mod settings;
pub mod spec;
pub mod status_json;
pub mod swarm;
pub mod trust;
pub mod warm;
