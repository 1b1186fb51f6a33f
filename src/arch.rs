//! Target architectures: which architecture a build tree is for (read from the tree), which
//! architectures servers can be made for and the cross toolchain each needs, the image that
//! carries it, and Debian's trees of one kernel version for another architecture.
//!
//! A server for another architecture than the host's runs in an image of its own
//! (`stap-server-ARCH`), which is the native image's packages plus Debian's cross compilers
//! for that target: the native image stays as lean as it is for hosts that never
//! cross-compile, and each target costs only its own toolchain.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::buildtree::BuildTree;
use crate::spec::ServerSpec;

/// An architecture servers can be made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// stap's name (`stap -a`, `sysinfo=`), also the kernel's `ARCH`.
    pub arch: &'static str,
    /// The Debian kernel flavour whose header packages are for it (`linux-headers-V-FLAVOUR`).
    pub flavour: &'static str,
    /// The GNU type of its compilers: `CROSS_COMPILE` is this with a trailing `-`.
    pub gnu_type: &'static str,
}

/// The architectures servers can be made for. A foreign one is served by Debian's cross
/// compilers (`gcc-N-GNUTYPE`) of the versions Debian kernels call.
pub const TARGETS: [Target; 3] = [
    Target {
        arch: "x86_64",
        flavour: "amd64",
        gnu_type: "x86_64-linux-gnu",
    },
    Target {
        arch: "arm64",
        flavour: "arm64",
        gnu_type: "aarch64-linux-gnu",
    },
    // Debian's 64-bit little-endian PowerPC (ppc64el), the one its archive builds.
    Target {
        arch: "powerpc",
        flavour: "powerpc64le",
        gnu_type: "powerpc64le-linux-gnu",
    },
];

/// The compilers each image carries, by the names Debian kernel trees call them
/// (`CC = $(CROSS_COMPILE)gcc-12` in bookworm's, gcc-14 in trixie's).
pub const COMPILERS: [&str; 2] = ["gcc-12", "gcc-14"];

impl Target {
    /// The `-B` make option that makes kbuild use this target's compilers.
    pub fn cross_compile(&self) -> String {
        format!("CROSS_COMPILE={}-", self.gnu_type)
    }

    /// The Debian packages of this target's cross compilers.
    pub fn packages(&self) -> Vec<String> {
        let package_type = self.gnu_type.replace('_', "-");
        COMPILERS
            .iter()
            .map(|gcc| format!("{gcc}-{package_type}"))
            .collect()
    }
}

/// The target named `arch`, if servers can be made for it.
pub fn target(arch: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.arch == arch)
}

/// Why a server cannot be made for an architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    #[error(
        "-a {arch}: no toolchain for that architecture; servers can be made for {}",
        supported()
    )]
    Unsupported { arch: String },
    #[error(
        "-a {arch} does not match the build tree of release {release} ({build}), which is for {tree}"
    )]
    Mismatch {
        arch: String,
        release: String,
        build: PathBuf,
        tree: String,
    },
    #[error(
        "the build tree of release {release} ({build}) calls {compiler}, which the images do not carry (they carry {})",
        COMPILERS.join(", ")
    )]
    Compiler {
        release: String,
        build: PathBuf,
        compiler: String,
    },
}

fn supported() -> String {
    TARGETS.map(|t| t.arch).join(", ")
}

/// The cross target of a server for `arch` on a host of `host_arch`: `None` when it is
/// native, an error when no toolchain serves it.
pub fn cross(arch: &str, host_arch: &str) -> Result<Option<&'static Target>, ArchError> {
    if arch == host_arch {
        return Ok(None);
    }
    target(arch)
        .map(Some)
        .ok_or_else(|| ArchError::Unsupported {
            arch: arch.to_string(),
        })
}

/// Checks `tree` against the server `spec` asks for: the tree must be for the server's
/// architecture, and a cross tree must call a compiler the images carry.
pub fn check_tree(spec: &ServerSpec, tree: &BuildTree, host_arch: &str) -> Result<(), ArchError> {
    if let Some(tree_arch) = tree.arch.as_deref().filter(|a| *a != spec.arch) {
        return Err(ArchError::Mismatch {
            arch: spec.arch.clone(),
            release: spec.release.clone(),
            build: tree.build.clone(),
            tree: tree_arch.to_string(),
        });
    }
    match tree.compiler.as_deref() {
        Some(compiler) if spec.arch != host_arch && !COMPILERS.contains(&compiler) => {
            Err(ArchError::Compiler {
                release: spec.release.clone(),
                build: tree.build.clone(),
                compiler: compiler.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// The image of `target`'s servers, made from the native image's name:
/// `stap-server:latest` → `stap-server-arm64:latest`.
pub fn cross_image(native: &str, arch: &str) -> String {
    // A tag follows the last `:` after the last `/` (a registry's port is no tag).
    let name_start = native.rfind('/').map_or(0, |i| i + 1);
    match native[name_start..].rfind(':') {
        Some(i) => {
            let (repo, tag) = native.split_at(name_start + i);
            format!("{repo}-{arch}{tag}")
        }
        None => format!("{native}-{arch}"),
    }
}

/// The image of a server for `arch`: the one chosen, except that the default image (or a
/// cross image made from it, as a server copied with `-n NICK -a ARCH` has) becomes the
/// default image for `arch`.
pub fn image_for(chosen: &str, default: &str, arch: &str, host_arch: &str) -> String {
    let ours = chosen == default
        || TARGETS
            .iter()
            .any(|t| chosen == cross_image(default, t.arch));
    if !ours {
        chosen.to_string()
    } else if arch == host_arch {
        default.to_string()
    } else {
        cross_image(default, arch)
    }
}

/// The architecture a kernel configuration (`.config`) is for, in stap's naming.
pub fn arch_of_config(config: &str) -> Option<&'static str> {
    const SYMBOLS: [(&str, &str); 10] = [
        ("CONFIG_X86_64", "x86_64"),
        ("CONFIG_X86_32", "i386"),
        ("CONFIG_ARM64", "arm64"),
        ("CONFIG_ARM", "arm"),
        ("CONFIG_PPC", "powerpc"),
        ("CONFIG_S390", "s390"),
        ("CONFIG_RISCV", "riscv"),
        ("CONFIG_SPARC64", "sparc64"),
        ("CONFIG_MIPS", "mips"),
        ("CONFIG_LOONGARCH", "loongarch"),
    ];
    let set: Vec<&str> = config
        .lines()
        .filter_map(|l| l.strip_suffix("=y"))
        .collect();
    SYMBOLS
        .iter()
        .find(|(symbol, _)| set.contains(symbol))
        .map(|(_, arch)| *arch)
}

/// The architecture of the build tree `build`, read from its configuration.
pub fn tree_arch(build: &Path) -> Option<&'static str> {
    ["include/config/auto.conf", ".config"]
        .iter()
        .find_map(|f| fs::read_to_string(build.join(f)).ok())
        .and_then(|text| arch_of_config(&text))
}

/// The compiler a Debian tree's `.kernelvariables` names (`CC = ... $(CROSS_COMPILE)gcc-12`
/// → `gcc-12`).
pub fn compiler_of_variables(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("CC"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .filter_map(|value| value.split_whitespace().last())
        .map(|word| word.rsplit(')').next().unwrap_or(word).to_string())
        .find(|c| !c.is_empty())
}

/// The compiler the build tree `build` calls, when it names one (Debian's trees do).
pub fn tree_compiler(build: &Path) -> Option<String> {
    fs::read_to_string(build.join(".kernelvariables"))
        .ok()
        .and_then(|t| compiler_of_variables(&t))
}

/// The name of the same Debian kernel version for another flavour: `6.1.0-57-amd64` →
/// `6.1.0-57-arm64`, `linux-headers-6.1.0-57-amd64` → `linux-headers-6.1.0-57-arm64`.
pub fn sibling_name(name: &str, to: &Target) -> Option<String> {
    TARGETS
        .iter()
        .filter(|t| t.flavour != to.flavour)
        .find_map(|t| name.strip_suffix(&format!("-{}", t.flavour)))
        .map(|version| format!("{version}-{}", to.flavour))
}

/// What resolution needs to know of the build trees that releases name: each one's
/// architecture, and its Debian sibling for each other target found on this host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trees {
    arches: BTreeMap<String, String>,
    siblings: BTreeMap<(String, String), String>,
}

impl Trees {
    /// Reads the trees of `releases` (names under `modules`, or build-tree paths).
    pub fn survey<'a>(releases: impl IntoIterator<Item = &'a str>, modules: &Path) -> Trees {
        let mut trees = Trees::default();
        trees.add(releases, modules);
        trees
    }

    /// Reads the trees of `releases` not read yet.
    pub fn add<'a>(&mut self, releases: impl IntoIterator<Item = &'a str>, modules: &Path) {
        let trees = self;
        for release in releases {
            if trees.arches.contains_key(release) {
                continue;
            }
            let Some(arch) = tree_arch(&build_of(release, modules)) else {
                continue;
            };
            for to in TARGETS.iter().filter(|t| t.arch != arch) {
                if let Some(sibling) = sibling(release, to, modules) {
                    trees
                        .siblings
                        .insert((release.to_string(), to.arch.to_string()), sibling);
                }
            }
            trees.arches.insert(release.to_string(), arch.to_string());
        }
    }

    /// Records the architecture of a release's tree read elsewhere (a swarm node's).
    pub fn record(&mut self, release: &str, arch: &str) {
        self.arches
            .entry(release.to_string())
            .or_insert_with(|| arch.to_string());
    }

    /// Records a tree, for tests.
    #[cfg(test)]
    pub fn with(mut self, release: &str, arch: &str, siblings: &[(&str, &str)]) -> Trees {
        self.arches.insert(release.into(), arch.into());
        for (to, sibling) in siblings {
            self.siblings
                .insert((release.into(), (*to).into()), (*sibling).into());
        }
        self
    }

    /// The architecture of `release`'s tree, when it was read.
    pub fn arch(&self, release: &str) -> Option<&str> {
        self.arches.get(release).map(String::as_str)
    }

    /// The release of the same version for `arch`, when this host has its tree.
    pub fn sibling(&self, release: &str, arch: &str) -> Option<&str> {
        self.siblings
            .get(&(release.to_string(), arch.to_string()))
            .map(String::as_str)
    }
}

fn build_of(release: &str, modules: &Path) -> PathBuf {
    if release.starts_with('/') {
        PathBuf::from(release)
    } else {
        modules.join(release).join("build")
    }
}

/// `release`'s sibling for `to`: a release name under `modules`, else Debian's headers
/// directory of that name in `/usr/src`; for a path, the sibling directory.
fn sibling(release: &str, to: &Target, modules: &Path) -> Option<String> {
    let is_for = |build: &Path| tree_arch(build) == Some(to.arch);
    if release.starts_with('/') {
        let path = Path::new(release.trim_end_matches('/'));
        let name = sibling_name(path.file_name()?.to_str()?, to)?;
        let other = path.with_file_name(name);
        return is_for(&other).then(|| other.display().to_string());
    }
    let name = sibling_name(release, to)?;
    if is_for(&modules.join(&name).join("build")) {
        return Some(name);
    }
    let headers = Path::new("/usr/src").join(format!("linux-headers-{name}"));
    is_for(&headers).then(|| headers.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_read_from_the_configuration() {
        let arm = "# comment\nCONFIG_64BIT=y\nCONFIG_ARM64=y\n# CONFIG_ARM is not set\n";
        assert_eq!(arch_of_config(arm), Some("arm64"));
        assert_eq!(
            arch_of_config("CONFIG_X86=y\nCONFIG_X86_64=y\n"),
            Some("x86_64")
        );
        assert_eq!(
            arch_of_config("CONFIG_PPC=y\nCONFIG_PPC64=y\n"),
            Some("powerpc")
        );
        assert_eq!(arch_of_config("CONFIG_ARM64_4K_PAGES=y\n"), None);
        assert_eq!(arch_of_config(""), None);
    }

    #[test]
    fn compiler_named_by_debian_variables() {
        let text = "override ARCH = arm64\nCCACHE = ccache\n\
                    CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12\n";
        assert_eq!(compiler_of_variables(text).as_deref(), Some("gcc-12"));
        assert_eq!(
            compiler_of_variables("CC = gcc-14\n").as_deref(),
            Some("gcc-14")
        );
        assert_eq!(compiler_of_variables("CCACHE = ccache\n"), None);
    }

    #[test]
    fn native_cross_and_refused() {
        assert_eq!(cross("x86_64", "x86_64"), Ok(None));
        let arm = cross("arm64", "x86_64").unwrap().unwrap();
        assert_eq!(arm.cross_compile(), "CROSS_COMPILE=aarch64-linux-gnu-");
        assert_eq!(
            arm.packages(),
            ["gcc-12-aarch64-linux-gnu", "gcc-14-aarch64-linux-gnu"]
        );
        assert_eq!(
            target("x86_64").unwrap().packages()[0],
            "gcc-12-x86-64-linux-gnu"
        );
        let err = cross("sparc64", "x86_64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "-a sparc64: no toolchain for that architecture; servers can be made for x86_64, arm64, \
             powerpc"
        );
        assert!(cross("", "x86_64").is_err());
    }

    #[test]
    fn trees_checked_against_the_arch() {
        let mut spec = ServerSpec::example("/usr/src/linux-headers-6.1.0-57-amd64");
        spec.arch = "arm64".into();
        let mut tree = BuildTree::example("6.1.192", "/usr/src/linux-headers-6.1.0-57-amd64");
        assert_eq!(
            check_tree(&spec, &tree, "x86_64").unwrap_err().to_string(),
            "-a arm64 does not match the build tree of release \
             /usr/src/linux-headers-6.1.0-57-amd64 (/usr/src/linux-headers-6.1.0-57-amd64), \
             which is for x86_64"
        );
        tree.arch = Some("arm64".into());
        assert_eq!(check_tree(&spec, &tree, "x86_64"), Ok(()));
        tree.arch = None;
        assert_eq!(
            check_tree(&spec, &tree, "x86_64"),
            Ok(()),
            "an unknown arch is trusted"
        );
        tree.compiler = Some("gcc-13".into());
        let err = check_tree(&spec, &tree, "x86_64").unwrap_err().to_string();
        assert!(err.contains("calls gcc-13"), "{err}");
        spec.arch = "x86_64".into();
        assert_eq!(
            check_tree(&spec, &tree, "x86_64"),
            Ok(()),
            "a native tree's compiler is the native image's business"
        );
    }

    #[test]
    fn images_per_target() {
        assert_eq!(
            cross_image("stap-server:latest", "arm64"),
            "stap-server-arm64:latest"
        );
        assert_eq!(cross_image("stap-server", "arm64"), "stap-server-arm64");
        assert_eq!(
            cross_image("reg.example:5000/team/stap", "arm64"),
            "reg.example:5000/team/stap-arm64"
        );
        let d = "stap-server:latest";
        assert_eq!(
            image_for(d, d, "arm64", "x86_64"),
            "stap-server-arm64:latest"
        );
        assert_eq!(image_for(d, d, "x86_64", "x86_64"), d);
        assert_eq!(
            image_for("stap-server-arm64:latest", d, "x86_64", "x86_64"),
            d,
            "a server copied from an arm64 one for the host's arch gets the native image"
        );
        assert_eq!(image_for("mine:1", d, "arm64", "x86_64"), "mine:1");
    }

    #[test]
    fn debian_siblings() {
        let arm = target("arm64").unwrap();
        let amd = target("x86_64").unwrap();
        assert_eq!(
            sibling_name("6.1.0-57-amd64", arm).as_deref(),
            Some("6.1.0-57-arm64")
        );
        assert_eq!(
            sibling_name("linux-headers-6.1.0-57-arm64", amd).as_deref(),
            Some("linux-headers-6.1.0-57-amd64")
        );
        assert_eq!(sibling_name("6.1.192", arm), None);
        assert_eq!(sibling_name("6.1.0-57-arm64", arm), None);
    }

    #[test]
    fn survey_reads_trees_and_finds_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        for (release, config) in [
            ("6.1.0-57-amd64", "CONFIG_X86_64=y\n"),
            ("6.1.0-57-arm64", "CONFIG_ARM64=y\n"),
            ("6.1.0-58-amd64", "CONFIG_X86_64=y\n"),
        ] {
            let build = modules.join(release).join("build");
            fs::create_dir_all(&build).unwrap();
            fs::write(build.join(".config"), config).unwrap();
        }
        let trees = Trees::survey(
            ["6.1.0-57-amd64", "6.1.0-57-arm64", "6.1.0-58-amd64", "none"],
            &modules,
        );
        assert_eq!(trees.arch("6.1.0-57-arm64"), Some("arm64"));
        assert_eq!(trees.arch("6.1.0-57-amd64"), Some("x86_64"));
        assert_eq!(trees.arch("none"), None);
        assert_eq!(
            trees.sibling("6.1.0-57-amd64", "arm64"),
            Some("6.1.0-57-arm64")
        );
        assert_eq!(
            trees.sibling("6.1.0-57-arm64", "x86_64"),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(trees.sibling("6.1.0-58-amd64", "arm64"), None);

        let path = modules.join("6.1.0-57-amd64/build");
        let path = path.to_str().unwrap();
        assert_eq!(Trees::survey([path], &modules).arch(path), Some("x86_64"));
    }
}
