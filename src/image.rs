//! The compile-server image: built through the Engine API from `images/` (embedded in the
//! binary, so it builds from anywhere), on top of either `debian:trixie-slim` (hosts with a
//! registry) or a root filesystem that mmdebstrap makes from the host's own apt sources and
//! streams straight into the engine (hosts without one).
//!
//! A server for a foreign architecture runs in an image of its own, named after the default
//! one (`stap-server-arm64:latest`, see [`arch::cross_image`]): the same recipe over a root
//! filesystem that also holds Debian's cross compilers for that target.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use bollard::models::ContainerCreateBody;
use futures_util::StreamExt;

use crate::arch::{self, Target};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::spec::DEFAULT_IMAGE;

const DOCKERFILE: &str = include_str!("../images/Dockerfile");
const ENTRYPOINT: &str = include_str!("../images/entrypoint");
const TRANSLATOR: &str = include_str!("../images/translator");

/// The offline base: Debian trixie with the packages, imported from mmdebstrap's tar.
pub const ROOTFS_IMAGE: &str = "stap-server-rootfs:trixie";
/// The packages of the image (trixie's systemtap 5.1 and the toolchains kernels call).
pub const PACKAGES: &str =
    "systemtap-server systemtap gcc gcc-12 gcc-14 make libc6-dev kmod procps";
/// The label that carries the image's systemtap version (advertised as `version=`).
pub const VERSION_LABEL: &str = "io.stap-server.systemtap-version";
/// The label that carries a digest of the recipe (Dockerfile and entry point) an image was
/// built from: a default image from another recipe is rebuilt, so an upgrade takes effect.
pub const RECIPE_LABEL: &str = "io.stap-server.recipe";

/// The digest of the embedded recipe.
pub fn recipe() -> String {
    crate::body::digest(&format!("{DOCKERFILE}\0{ENTRYPOINT}\0{TRANSLATOR}"))
}

/// The digest of the recipe of the image for `target` (`None`: the native one, whose digest
/// is [`recipe`]'s).
pub fn recipe_for(target: Option<&Target>) -> String {
    match target {
        None => recipe(),
        Some(t) => crate::body::digest(&format!(
            "{DOCKERFILE}\0{ENTRYPOINT}\0{TRANSLATOR}\0{}",
            packages(Some(t))
        )),
    }
}

/// The packages of the image for `target`: the native image's, plus the target's cross
/// compilers.
pub fn packages(target: Option<&Target>) -> String {
    let mut all = vec![PACKAGES.to_string()];
    all.extend(target.into_iter().flat_map(Target::packages));
    all.join(" ")
}

/// Which of ours `image` is: `Some(None)` the default (native) image, `Some(Some(t))` the
/// default image for the foreign target `t`, `None` someone else's.
pub fn ours(image: &str) -> Option<Option<&'static Target>> {
    if image == DEFAULT_IMAGE {
        return Some(None);
    }
    arch::TARGETS
        .iter()
        .find(|t| image == arch::cross_image(DEFAULT_IMAGE, t.arch))
        .map(Some)
}

/// The offline base of the image for `target`.
pub fn rootfs_image(target: Option<&Target>) -> String {
    match target {
        None => ROOTFS_IMAGE.to_string(),
        Some(t) => arch::cross_image(ROOTFS_IMAGE, t.arch),
    }
}
const SUITE: &str = "trixie";

/// Makes sure `image` is present, building ours when it is missing; returns its systemtap
/// version. Other images must be built or loaded by their owner.
pub async fn ensure(engine: &Engine, image: &str) -> Result<String> {
    let ours = ours(image);
    let current = |labels: &HashMap<String, String>| match ours {
        None => true,
        Some(target) => labels.get(RECIPE_LABEL) == Some(&recipe_for(target)),
    };
    if let Some(labels) = engine.image_labels(image).await?
        && current(&labels)
    {
        return Ok(version_of(&labels));
    }
    let Some(target) = ours else {
        return Err(Error::NotInstalled(format!(
            "image {image} is not present: build it with `stap-server image build --image {image}` \
             (with -a ARCH for a server of another architecture) or load it with `docker load`"
        )));
    };
    // One builder at a time on this host, whatever their state directories; the others find
    // the image made when they get the lock.
    let _lock = crate::lock::Lock::wait(Path::new(crate::lock::HOST_DIR), "image").await?;
    if let Some(labels) = engine.image_labels(image).await?
        && current(&labels)
    {
        return Ok(version_of(&labels));
    }
    eprintln!(
        "stap-server: image {image} is missing or from an older recipe; building it (this takes a few minutes)"
    );
    build(engine, image, target, false).await
}

/// The systemtap version an image's label carries, `unknown` without one.
pub fn version_of(labels: &HashMap<String, String>) -> String {
    labels
        .get(VERSION_LABEL)
        .cloned()
        .unwrap_or_else(|| "unknown".into())
}

/// Builds `image` for `target` (`None`: this host's architecture): the offline route
/// unless `registry`.
pub async fn build(
    engine: &Engine,
    image: &str,
    target: Option<&Target>,
    registry: bool,
) -> Result<String> {
    let version = if registry {
        // The packages come with the first build; a second (cached) one adds the label.
        build_dockerfile(engine, image, "debian:trixie-slim", "", target).await?;
        let version = probe_version(engine, image).await?;
        build_dockerfile(engine, image, "debian:trixie-slim", &version, target).await?;
        version
    } else {
        // The root filesystem already holds the packages: one build, labelled from the start.
        let base = rootfs_image(target);
        ensure_rootfs(engine, target).await?;
        let version = probe_version(engine, &base).await?;
        build_dockerfile(engine, image, &base, &version, target).await?;
        version
    };
    eprintln!("stap-server: image {image} built (systemtap {version})");
    Ok(version)
}

async fn build_dockerfile(
    engine: &Engine,
    image: &str,
    base: &str,
    version: &str,
    target: Option<&Target>,
) -> Result<()> {
    let fail = |reason: String| Error::Image {
        image: image.into(),
        reason,
    };
    let context =
        build_context().map_err(|e| fail(format!("cannot make the build context: {e}")))?;
    let mut args = HashMap::from([
        ("BASE".to_string(), base.to_string()),
        ("VERSION".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("SYSTEMTAP_VERSION".to_string(), version.to_string()),
        ("RECIPE".to_string(), recipe_for(target)),
    ]);
    // The native image keeps the Dockerfile's own package list (and so its build cache).
    if target.is_some() {
        args.insert("PACKAGES".to_string(), packages(target));
    }
    let mut stream = engine.api().build_image(image, context, args);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| fail(e.reason))?;
        if let Some(line) = info.output {
            eprint!("{line}");
        }
        if let Some(message) = info.error {
            return Err(fail(message));
        }
    }
    Ok(())
}

/// The build context: the Dockerfile, the entry point and the translator wrapper, as a tar
/// made in memory.
pub fn build_context() -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, text, mode) in [
        ("Dockerfile", DOCKERFILE, 0o644),
        ("entrypoint", ENTRYPOINT, 0o755),
        ("translator", TRANSLATOR, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, text.as_bytes())?;
    }
    tar.into_inner()
}

/// Asks the image which systemtap it carries (upstream version, e.g. `5.1`).
async fn probe_version(engine: &Engine, image: &str) -> Result<String> {
    let body = ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec![
            "dpkg-query".into(),
            "-W".into(),
            "-f=${Version}".into(),
            "systemtap".into(),
        ]),
        labels: Some(
            crate::labels::ownership("image-probe", "cli")
                .into_iter()
                .collect(),
        ),
        ..ContainerCreateBody::default()
    };
    let name = format!("stap-server-image-probe-{}", std::process::id());
    let (code, out) = engine.run_once(&name, body).await?;
    let full = out.trim();
    if code != 0 || full.is_empty() {
        return Err(Error::Image {
            image: image.into(),
            reason: format!("systemtap is not installed in it ({full})"),
        });
    }
    Ok(upstream_version(full))
}

/// `5.1-5` → `5.1`; `1:2.3-4` → `2.3`.
pub fn upstream_version(debian: &str) -> String {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    no_epoch
        .rsplit_once('-')
        .map_or(no_epoch, |(v, _)| v)
        .to_string()
}

/// Imports the offline root filesystem of the image for `target` unless present:
/// mmdebstrap's tar goes straight from its standard output into the engine, with no
/// temporary file.
async fn ensure_rootfs(engine: &Engine, target: Option<&Target>) -> Result<()> {
    let rootfs = rootfs_image(target);
    if engine.image_labels(&rootfs).await?.is_some() {
        return Ok(());
    }
    let fail = |reason: String| Error::Image {
        image: rootfs.clone(),
        reason,
    };
    if which("mmdebstrap").is_none() {
        return Err(Error::NotInstalled(
            "mmdebstrap is needed to build the image without a registry: apt-get install mmdebstrap"
                .into(),
        ));
    }
    let sources = host_sources().map_err(fail)?;
    // mmdebstrap reads deb822 sources from a file whose name ends in .sources.
    let mut file = tempfile::Builder::new()
        .prefix("stap-server-")
        .suffix(".sources")
        .tempfile()
        .map_err(|e| fail(format!("cannot write the apt sources: {e}")))?;
    file.write_all(sources.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| fail(format!("cannot write the apt sources: {e}")))?;
    let include = packages(target).replace(' ', ",");
    eprintln!("stap-server: making the {SUITE} root filesystem {rootfs} with mmdebstrap");
    let mut child = tokio::process::Command::new("mmdebstrap")
        .args([
            "--variant=essential",
            "--format=tar",
            &format!("--include={include}"),
            "--aptopt=Acquire::Check-Valid-Until \"false\"",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/lintian/*",
            // Kernel modules are built without LTO and without sanitizers: the LTO compilers
            // and dumpers (a quarter of the image) and the sanitizer runtimes are left out.
            "--dpkgopt=path-exclude=/usr/lib*/gcc/*/lto1",
            "--dpkgopt=path-exclude=/usr/bin/*lto-dump*",
            "--dpkgopt=path-exclude=/usr/lib/*/lib*san.so*",
            SUITE,
            "-",
        ])
        .arg(file.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run mmdebstrap: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (repo, tag) = rootfs.rsplit_once(':').expect("the name has a tag");
    let import_error = engine
        .api()
        .import_image(repo, tag, Box::new(stdout))
        .await
        .err()
        .map(|e| e.reason);
    let status = child
        .wait()
        .await
        .map_err(|e| fail(format!("mmdebstrap: {e}")))?;
    if !status.success() {
        let _ = engine.api().remove_image(&rootfs).await;
        return Err(fail(format!("mmdebstrap failed ({status})")));
    }
    if let Some(e) = import_error {
        return Err(fail(format!("the engine refused the root filesystem: {e}")));
    }
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// The host's Debian apt sources, in deb822 form, with its release's suites renamed to
/// trixie. Only Debian's own archives are kept (those that name the host's codename).
pub fn host_sources() -> std::result::Result<String, String> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .ok_or("cannot tell this host's Debian release from /etc/os-release")?;
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let ext = p.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("sources") | Some("list"))
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                texts.push((ext == Some("list"), text));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push((true, text));
    }
    let stanzas = rewrite_sources(&texts, &codename, SUITE);
    if stanzas.is_empty() {
        return Err(format!(
            "no Debian apt source for {codename} found in /etc/apt/sources.list(.d)"
        ));
    }
    Ok(stanzas)
}

/// Turns apt sources (deb822 `.sources` or one-line `.list` texts) into deb822 stanzas for
/// `to`, keeping only the entries whose suites are `from` or its -updates/-security.
pub fn rewrite_sources(texts: &[(bool, String)], from: &str, to: &str) -> String {
    let rename = |suite: &str| -> Option<String> {
        let rest = suite.strip_prefix(from)?;
        (rest.is_empty() || rest.starts_with('-')).then(|| format!("{to}{rest}"))
    };
    let mut out = String::new();
    for (one_line, text) in texts {
        if *one_line {
            for line in text.lines().map(str::trim) {
                let mut words = line.split_whitespace();
                if words.next() != Some("deb") {
                    continue;
                }
                let mut rest: Vec<&str> = words.collect();
                // An option block `[a=b c=d]` may span several words.
                let mut signed = None;
                if rest.first().is_some_and(|w| w.starts_with('[')) {
                    let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
                    for opt in rest.drain(..=end) {
                        if let Some(v) = opt.trim_matches(['[', ']']).strip_prefix("signed-by=") {
                            signed = Some(v.to_string());
                        }
                    }
                }
                if rest.len() < 3 {
                    continue;
                }
                let Some(suite) = rename(rest[1]) else {
                    continue;
                };
                out.push_str(&format!(
                    "Types: deb\nURIs: {}\nSuites: {suite}\nComponents: {}\n",
                    rest[0],
                    rest[2..].join(" ")
                ));
                if let Some(s) = signed {
                    out.push_str(&format!("Signed-By: {s}\n"));
                }
                out.push('\n');
            }
        } else {
            for stanza in text.split("\n\n") {
                let mut kept = String::new();
                let mut suites = Vec::new();
                let mut is_deb = false;
                for line in stanza.lines() {
                    if line.starts_with('#') {
                        continue;
                    }
                    if let Some(v) = line.strip_prefix("Types:") {
                        is_deb = v.split_whitespace().any(|t| t == "deb");
                        kept.push_str("Types: deb\n");
                    } else if let Some(v) = line.strip_prefix("Suites:") {
                        suites = v.split_whitespace().filter_map(rename).collect();
                    } else if !line.trim().is_empty() {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                }
                if is_deb && !suites.is_empty() {
                    out.push_str(&kept);
                    out.push_str(&format!("Suites: {}\n\n", suites.join(" ")));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_recipe_unchanged_cross_ones_apart() {
        let arm = arch::target("arm64");
        assert_eq!(recipe_for(None), recipe());
        assert_ne!(recipe_for(arm), recipe());
        assert_eq!(packages(None), PACKAGES);
        assert_eq!(
            packages(arm),
            format!("{PACKAGES} gcc-12-aarch64-linux-gnu gcc-14-aarch64-linux-gnu")
        );
        assert_eq!(ours(DEFAULT_IMAGE), Some(None));
        assert_eq!(ours("stap-server-arm64:latest"), Some(arm));
        assert_eq!(ours("mine:1"), None);
        assert_eq!(rootfs_image(None), ROOTFS_IMAGE);
        assert_eq!(rootfs_image(arm), "stap-server-rootfs-arm64:trixie");
    }

    #[test]
    fn versions() {
        assert_eq!(upstream_version("5.1-5"), "5.1");
        assert_eq!(upstream_version("1:2.3-4+b1"), "2.3");
        assert_eq!(upstream_version("5.1"), "5.1");
    }

    #[test]
    fn deb822_sources_are_renamed_and_filtered() {
        let text = "Types: deb\n# comment\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://other.example/\nSuites: stable\nComponents: x\n";
        let out = rewrite_sources(&[(false, text.into())], "bookworm", "trixie");
        assert_eq!(
            out,
            "Types: deb\nURIs: http://mirror.example/debian\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
             Suites: trixie trixie-updates\n\n"
        );
    }

    #[test]
    fn one_line_sources_become_deb822() {
        let text = "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm-security main contrib\n\
                    deb-src http://m.example/debian bookworm main\n\
                    deb http://m.example/debian bookwormish main\n";
        let out = rewrite_sources(&[(true, text.into())], "bookworm", "trixie");
        assert_eq!(
            out,
            "Types: deb\nURIs: http://m.example/debian\nSuites: trixie-security\n\
             Components: main contrib\nSigned-By: /k.gpg\n\n"
        );
    }

    #[test]
    fn the_context_holds_an_executable_entrypoint() {
        let bytes = build_context().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Dockerfile".to_string(), 0o644),
                ("entrypoint".to_string(), 0o755),
                ("translator".to_string(), 0o755),
            ]
        );
    }
}
