//! Everything read from the host before the engine is asked anything: the global file, the
//! `-c` files, `--tenant`, the server files and the host's architecture and releases.

use std::fs;
use std::path::{Path, PathBuf};

use crate::arch;
use crate::cli::Opt;
use crate::config::{self, ConfigError, GlobalConfig, ServerConfig};
use crate::error::{Error, Result};
use crate::spec::{self, Host, Request, ServerSpec};

/// Everything read from the host before the engine is asked anything.
pub struct Settings {
    /// The global configuration, `-c` and `--tenant` applied.
    pub global: GlobalConfig,
    /// The server files, each with its path.
    pub configured: Vec<(PathBuf, ServerConfig)>,
    /// The architecture and the releases of this host.
    pub host: Host,
}

impl Settings {
    pub fn tenant(&self) -> String {
        self.global.tenant_name()
    }

    /// Reads the trees of the servers found running too, so that `-n NICK -a ARCH` finds
    /// the sibling of NICK's tree.
    pub fn survey_running(&mut self, observed: &[spec::Server]) {
        self.host.trees.add(
            observed.iter().map(|s| s.spec.release.as_str()),
            &self.global.modules_path,
        );
    }

    /// The servers a start-like action makes when none is named: the configured ones, else
    /// the default ones.
    pub fn defaults(&self, request: &Request) -> Vec<ServerSpec> {
        let configured = spec::configured_specs(
            &self.configured,
            &self.global,
            &self.host,
            &request.overrides,
        );
        if configured.is_empty() {
            spec::default_specs(&self.global, &self.host, &request.lists, &request.overrides)
        } else {
            configured
        }
    }
}

/// Reads the global file, then the last `-c` file (which must exist), then `--tenant`, then
/// the server files. Every bad line of every file is reported.
pub fn load_settings(opts: &[Opt]) -> Result<Settings> {
    let global_file = std::env::var_os("STAP_SERVER_GLOBAL_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_GLOBAL_FILE));
    let mut global = GlobalConfig::default();
    if global_file.is_file() {
        global = read_config(&global_file, |r, p| config::parse_global(r, p, &global))?;
    }
    let extras: Vec<&PathBuf> = opts
        .iter()
        .filter_map(|o| match o {
            Opt::Config(p) => Some(p),
            _ => None,
        })
        .collect();
    // Every file named must exist, though only the last is read.
    let missing: Vec<ConfigError> = extras
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| ConfigError {
            file: p.to_path_buf(),
            line: 0,
            message: "no such configuration file".into(),
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(missing));
    }
    if let Some(path) = extras.last() {
        global = read_config(path, |r, p| config::parse_global(r, p, &global))?;
    }
    if let Some(t) = opts.iter().rev().find_map(|o| match o {
        Opt::Tenant(t) => Some(t.clone()),
        _ => None,
    }) {
        global.tenant = Some(t);
    }

    let mut configured = Vec::new();
    let mut errors = Vec::new();
    if let Ok(dir) = fs::read_dir(&global.config_path) {
        let mut paths: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            match read_config(&path, config::parse_server) {
                Ok(cfg) => configured.push((path, cfg)),
                Err(Error::Config(mut e)) => errors.append(&mut e),
                Err(e) => return Err(e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Config(errors));
    }

    let uts = nix::sys::utsname::uname().map_err(|e| Error::Invalid(format!("uname: {e}")))?;
    let installed = spec::installed_releases(&global.modules_path).unwrap_or_default();
    let release = uts.release().to_string_lossy().into_owned();
    let named = opts.iter().filter_map(|o| match o {
        Opt::Release(r) => Some(r.as_str()),
        _ => None,
    });
    let trees = arch::Trees::survey(
        installed
            .iter()
            .map(String::as_str)
            .chain(named)
            .chain(
                configured
                    .iter()
                    .flat_map(|(_, c)| c.releases.iter().map(String::as_str)),
            )
            .chain([release.as_str()]),
        &global.modules_path,
    );
    let host = Host {
        arch: spec::stap_arch(&uts.machine().to_string_lossy()),
        release,
        installed,
        trees,
    };
    Ok(Settings {
        global,
        configured,
        host,
    })
}

fn read_config<T>(
    path: &Path,
    parse: impl FnOnce(fs::File, &Path) -> std::result::Result<T, Vec<ConfigError>>,
) -> Result<T> {
    let file = fs::File::open(path).map_err(|e| {
        Error::Config(vec![ConfigError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(file, path).map_err(Error::Config)
}

/// The image `image build` makes, and for which foreign target: `--image`, else the
/// configured one, else the default; with `-a ARCH` of a foreign target, and no `--image`,
/// that target's image of the configured or default one.
pub fn image_to_build(
    opts: &[Opt],
    settings: &Settings,
) -> Result<(String, Option<&'static arch::Target>)> {
    let last = |pick: fn(&Opt) -> Option<&String>| opts.iter().rev().find_map(pick);
    let target = match last(|o| match o {
        Opt::Arch(a) => Some(a),
        _ => None,
    }) {
        Some(a) => {
            arch::cross(a, &settings.host.arch).map_err(|e| Error::Invalid(e.to_string()))?
        }
        None => None,
    };
    let name = match last(|o| match o {
        Opt::Image(i) => Some(i),
        _ => None,
    }) {
        Some(i) => i.clone(),
        None => {
            let native = settings.global.default_image();
            target.map_or(native.clone(), |t| arch::cross_image(&native, t.arch))
        }
    };
    Ok((name, target))
}
