//! Kernel build trees: from a release (a name under the modules directory, or an absolute
//! build-tree path) to the tree, the release it builds for, and the host directories a
//! container must see, read-only and at the same absolute path, for every symlink and
//! include in the tree to resolve.
//!
//! Debian's headers are spread over three directories: `linux-headers-R` (whose Makefile
//! includes `linux-headers-R-common/Makefile` by absolute path), `linux-headers-R-common`, and
//! `linux-kbuild-V`, reached through relative symlinks such as `scripts`. All are found here by
//! walking the tree, so other layouts work too.
//!
//! The translator reads more than the build tree: the `source` tree (tracepoint headers live in
//! Debian's `-common` directory), the release's modules directory, and the kernel's debuginfo
//! where the host has it. A server sees each of them as the host does.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A resolved build tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTree {
    /// The release clients ask for: the directory name under the modules directory, or the
    /// tree's `include/config/kernel.release` for a path.
    pub kernel_release: String,
    /// The tree itself, with symlinks resolved. The container presents it as
    /// `/lib/modules/<kernel_release>/build`.
    pub build: PathBuf,
    /// The kernel source tree (`/lib/modules/R/source` on the host, or the directory the
    /// tree's Makefile includes), presented as `/lib/modules/<kernel_release>/source`.
    pub source: Option<PathBuf>,
    /// The release's directory under the modules directory, when the release names one.
    pub modules_dir: Option<PathBuf>,
    /// Host directories to mount read-only at the same path (the tree among them), none
    /// inside another.
    pub mounts: Vec<PathBuf>,
    /// The kernel's debuginfo files and directories on the host, mounted read-only at their
    /// own paths (where elfutils looks for them).
    pub debuginfo: Vec<PathBuf>,
    /// The architecture the tree is for, in stap's naming, read from its configuration.
    pub arch: Option<String>,
    /// The compiler the tree calls (`gcc-12`), when it names one.
    pub compiler: Option<String>,
    /// The `CROSS_COMPILE=...` make option building for the tree takes on this host, when
    /// the tree is for another architecture (set once the server is checked against it).
    pub cross_compile: Option<String>,
}

impl BuildTree {
    /// A tree at `build` for `kernel_release` with nothing around it, for tests.
    #[cfg(test)]
    pub fn example(kernel_release: &str, build: &str) -> BuildTree {
        BuildTree {
            kernel_release: kernel_release.into(),
            build: build.into(),
            source: None,
            modules_dir: None,
            mounts: vec![],
            debuginfo: vec![],
            arch: Some("x86_64".into()),
            compiler: Some("gcc-12".into()),
            cross_compile: None,
        }
    }
}

/// Directories of the image a host path must never be mounted over or inside: the image's
/// own programs, libraries, tapsets and state. Build trees and debuginfo live elsewhere.
pub const IMAGE_OWNED: [&str; 11] = [
    "/bin",
    "/sbin",
    "/etc",
    "/lib/modules",
    "/run/host",
    "/usr/bin",
    "/usr/sbin",
    "/usr/share/systemtap",
    "/usr/libexec",
    "/usr/lib/systemtap",
    "/var/lib/stap-server",
];

/// The container's own file systems: a host directory may be mounted inside them, not on them.
const CONTAINER_MOUNTS: [&str; 3] = ["/tmp", "/run", "/var/lib/stap-server/.systemtap"];

/// Whether a host path mounted at its own path would cover or shadow the image's files, and
/// which of them.
pub fn image_owned(path: &Path) -> Option<&'static str> {
    if [Path::new("/"), Path::new("/usr"), Path::new("/usr/lib")].contains(&path) {
        return Some("/");
    }
    IMAGE_OWNED
        .into_iter()
        .find(|owned| path.starts_with(owned) || Path::new(owned).starts_with(path))
        .or_else(|| {
            CONTAINER_MOUNTS
                .into_iter()
                .find(|m| Path::new(m).starts_with(path))
        })
}

/// The host's debuginfo for `release`, where elfutils and the translator look for it, under
/// `root` (`/` on a real host): the separate debuginfo of the kernel and its modules, and an
/// uncompressed kernel image with its System.map.
pub fn debuginfo(release: &str, root: &Path) -> Vec<PathBuf> {
    [
        format!("usr/lib/debug/lib/modules/{release}"),
        format!("usr/lib/debug/boot/vmlinux-{release}"),
        format!("usr/lib/debug/vmlinux-{release}"),
        format!("boot/vmlinux-{release}"),
        format!("boot/System.map-{release}"),
    ]
    .into_iter()
    .map(|p| root.join(p))
    .filter(|p| p.exists())
    .collect()
}

/// Why a release cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error(
        "no kernel build tree for release {release}: {path} does not exist (install the kernel headers, e.g. linux-headers-{release})"
    )]
    Missing { release: String, path: PathBuf },
    #[error("{path} is not a kernel build tree: {why}")]
    NotATree { path: PathBuf, why: String },
    #[error(
        "the build tree of release {release} needs {path}, which would cover the image's own {owned}: move the tree elsewhere"
    )]
    Shadows {
        release: String,
        path: PathBuf,
        owned: &'static str,
    },
}

/// Resolves `release` against `modules` (normally `/lib/modules`), with its debuginfo from
/// the host's root.
pub fn resolve(release: &str, modules: &Path) -> Result<BuildTree, TreeError> {
    resolve_in(release, modules, Path::new("/"))
}

/// `resolve`, with debuginfo looked for under `root`.
pub fn resolve_in(release: &str, modules: &Path, root: &Path) -> Result<BuildTree, TreeError> {
    let (kernel_release, link) = if release.starts_with('/') {
        let path = PathBuf::from(release);
        let version_file = path.join("include/config/kernel.release");
        let text = fs::read_to_string(&version_file).map_err(|e| {
            if !path.exists() {
                TreeError::Missing {
                    release: release.to_string(),
                    path: path.clone(),
                }
            } else {
                TreeError::NotATree {
                    path: path.clone(),
                    why: format!("cannot read {}: {e}", version_file.display()),
                }
            }
        })?;
        let version = text.trim().to_string();
        if version.is_empty() || version.contains(['/', ' ']) {
            return Err(TreeError::NotATree {
                path,
                why: format!("{} holds no release", version_file.display()),
            });
        }
        (version, path)
    } else {
        (release.to_string(), modules.join(release).join("build"))
    };
    let build = fs::canonicalize(&link).map_err(|_| TreeError::Missing {
        release: release.to_string(),
        path: link.clone(),
    })?;
    if !build.join("Makefile").is_file() {
        return Err(TreeError::NotATree {
            path: build,
            why: "it has no Makefile".into(),
        });
    }

    let includes = makefile_includes(&build);
    // The source tree: the release directory's `source` link (Debian's common headers), else
    // the tree's own `source` link, else the directory its Makefile includes, else the tree.
    let modules_dir = (!release.starts_with('/'))
        .then(|| modules.join(release))
        .filter(|d| d.is_dir());
    let source = modules_dir
        .as_ref()
        .and_then(|d| fs::canonicalize(d.join("source")).ok())
        .or_else(|| fs::canonicalize(build.join("source")).ok())
        .or_else(|| includes.first().cloned())
        .filter(|s| s.is_dir());

    let mut roots = vec![build.clone()];
    roots.extend(source.clone());
    roots.extend(includes);
    let mounts = close_over_links(roots).map_err(|e| TreeError::NotATree {
        path: build.clone(),
        why: format!("cannot read it: {e}"),
    })?;
    refuse_shadows(release, &mounts)?;
    let debuginfo = debuginfo(&kernel_release, root);
    Ok(BuildTree {
        kernel_release,
        arch: crate::arch::tree_arch(&build).map(str::to_string),
        compiler: crate::arch::tree_compiler(&build),
        build,
        source,
        modules_dir: modules_dir.and_then(|d| fs::canonicalize(d).ok()),
        mounts,
        debuginfo,
        cross_compile: None,
    })
}

/// What a survey of another machine (a swarm node) found of one release's tree there, all
/// paths resolved on that machine: the tree, its source, the directories the tree's links
/// lead to (closed over, as [`resolve`] does here), the lines of its configuration and
/// `.kernelvariables`, and the debuginfo present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub build: PathBuf,
    pub source: Option<PathBuf>,
    pub roots: Vec<PathBuf>,
    pub config: String,
    pub variables: String,
    pub debuginfo: Vec<PathBuf>,
}

/// The tree of `release` (a name under `modules` on that machine) as a survey reported it,
/// checked as [`resolve`] checks a tree of this host.
pub fn from_report(release: &str, modules: &Path, r: &Reported) -> Result<BuildTree, TreeError> {
    let roots = r.roots.iter().chain([&r.build]).chain(&r.source).cloned();
    let mounts = outermost(roots.collect());
    refuse_shadows(release, &mounts)?;
    Ok(BuildTree {
        kernel_release: release.to_string(),
        build: r.build.clone(),
        source: r.source.clone(),
        modules_dir: Some(modules.join(release)),
        mounts,
        debuginfo: r.debuginfo.clone(),
        arch: crate::arch::arch_of_config(&r.config).map(str::to_string),
        compiler: crate::arch::compiler_of_variables(&r.variables),
        cross_compile: None,
    })
}

/// Directories of the absolute `include /DIR/Makefile` lines of the tree's top Makefile.
fn makefile_includes(build: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(build.join("Makefile")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("include "))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
        .filter_map(|p| fs::canonicalize(p).ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect()
}

/// Grows `roots` until every symlink under them resolves inside them, then drops roots that
/// lie inside others.
fn close_over_links(roots: Vec<PathBuf>) -> io::Result<Vec<PathBuf>> {
    let mut all: BTreeSet<PathBuf> = BTreeSet::new();
    let mut pending: Vec<PathBuf> = roots;
    while let Some(root) = pending.pop() {
        if all.iter().any(|r| root.starts_with(r)) {
            continue;
        }
        all.insert(root.clone());
        if root.is_dir() {
            for target in outside_links(&root)? {
                if !all.iter().any(|r| target.starts_with(r)) {
                    pending.push(target);
                }
            }
        }
    }
    Ok(outermost(all))
}

/// A tree whose mounts would cover the image's own directories is refused.
fn refuse_shadows(release: &str, mounts: &[PathBuf]) -> Result<(), TreeError> {
    match mounts
        .iter()
        .find_map(|m| image_owned(m).map(|owned| (m, owned)))
    {
        Some((path, owned)) => Err(TreeError::Shadows {
            release: release.to_string(),
            path: path.clone(),
            owned,
        }),
        None => Ok(()),
    }
}

/// The directories of `roots` that lie inside no other one.
fn outermost(roots: BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut minimal: Vec<PathBuf> = Vec::new();
    for root in roots {
        // BTreeSet order puts a parent before anything inside it.
        if !minimal.iter().any(|m| root.starts_with(m)) {
            minimal.push(root);
        }
    }
    minimal
}

/// Resolved targets of the symlinks under `dir` that point outside it. Dangling links are
/// left alone: they dangle on the host too.
fn outside_links(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_symlink()
                && let Ok(target) = fs::canonicalize(entry.path())
                && !target.starts_with(dir)
            {
                found.push(target);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A miniature of Debian's layout: modules/R/{build,source}, headers-R whose Makefile
    /// includes headers-common, and a relative `scripts` link into kbuild.
    fn debian_like(root: &Path) -> PathBuf {
        let usr = root.join("usr");
        let headers = usr.join("src/linux-headers-R");
        let common = usr.join("src/linux-headers-R-common");
        let kbuild = usr.join("lib/linux-kbuild-6.1/scripts");
        for d in [&headers, &common, &kbuild] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(headers.join("include/config")).unwrap();
        fs::write(headers.join("include/config/kernel.release"), "6.1.192\n").unwrap();
        fs::write(
            headers.join("Makefile"),
            format!("include {}/Makefile\n", common.display()),
        )
        .unwrap();
        fs::write(common.join("Makefile"), "# common\n").unwrap();
        symlink("../../lib/linux-kbuild-6.1/scripts", common.join("scripts")).unwrap();
        symlink(
            "../../lib/linux-kbuild-6.1/scripts",
            headers.join("scripts"),
        )
        .unwrap();
        symlink("/nonexistent/dangling", headers.join("dangling")).unwrap();
        let modules = root.join("modules");
        fs::create_dir_all(modules.join("R")).unwrap();
        symlink(&headers, modules.join("R/build")).unwrap();
        symlink(&common, modules.join("R/source")).unwrap();
        modules
    }

    #[test]
    fn release_name_mounts_every_link_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let modules = debian_like(&root);
        let tree = resolve("R", &modules).unwrap();
        assert_eq!(tree.kernel_release, "R");
        assert_eq!(tree.build, root.join("usr/src/linux-headers-R"));
        assert_eq!(
            tree.source,
            Some(root.join("usr/src/linux-headers-R-common"))
        );
        assert_eq!(tree.modules_dir, Some(root.join("modules/R")));
        assert_eq!(
            tree.mounts,
            [
                root.join("usr/lib/linux-kbuild-6.1/scripts"),
                root.join("usr/src/linux-headers-R"),
                root.join("usr/src/linux-headers-R-common"),
            ]
        );
    }

    #[test]
    fn build_tree_path_uses_its_kernel_release() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        debian_like(&root);
        let path = root.join("usr/src/linux-headers-R");
        let tree = resolve(path.to_str().unwrap(), Path::new("/nonexistent")).unwrap();
        assert_eq!(tree.kernel_release, "6.1.192");
        assert_eq!(
            tree.mounts.len(),
            3,
            "the Makefile include brings in common"
        );
        assert_eq!(
            tree.source,
            Some(root.join("usr/src/linux-headers-R-common")),
            "the included directory is the source view"
        );
        assert_eq!(tree.modules_dir, None);
    }

    #[test]
    fn debuginfo_found_where_elfutils_looks() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let modules = debian_like(&root);
        assert_eq!(
            resolve_in("R", &modules, &root).unwrap().debuginfo,
            [] as [PathBuf; 0]
        );
        fs::create_dir_all(root.join("usr/lib/debug/boot")).unwrap();
        fs::write(root.join("usr/lib/debug/boot/vmlinux-R"), "").unwrap();
        fs::create_dir_all(root.join("usr/lib/debug/lib/modules/R/kernel")).unwrap();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot/System.map-R"), "").unwrap();
        fs::write(root.join("boot/vmlinux-Q"), "").unwrap();
        let tree = resolve_in("R", &modules, &root).unwrap();
        assert_eq!(
            tree.debuginfo,
            [
                root.join("usr/lib/debug/lib/modules/R"),
                root.join("usr/lib/debug/boot/vmlinux-R"),
                root.join("boot/System.map-R"),
            ]
        );
    }

    #[test]
    fn trees_over_the_image_are_refused() {
        assert_eq!(
            image_owned(Path::new("/usr/share/systemtap/tapset")),
            Some("/usr/share/systemtap")
        );
        assert_eq!(
            image_owned(Path::new("/usr/share")),
            Some("/usr/share/systemtap")
        );
        assert_eq!(image_owned(Path::new("/tmp")), Some("/tmp"));
        assert_eq!(image_owned(Path::new("/tmp/trees/R")), None);
        assert_eq!(
            image_owned(Path::new("/var/lib")),
            Some("/var/lib/stap-server")
        );
        assert_eq!(image_owned(Path::new("/usr")), Some("/"));
        assert_eq!(image_owned(Path::new("/usr/src/linux-headers-R")), None);
        assert_eq!(image_owned(Path::new("/usr/lib/linux-kbuild-6.1")), None);
        assert_eq!(image_owned(Path::new("/srv/trees/arm64")), None);
    }

    #[test]
    fn missing_and_bad_trees_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve("9.9.9", dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("no kernel build tree for release 9.9.9"),
            "{err}"
        );
        assert!(err.to_string().contains("9.9.9/build"), "{err}");

        let missing = dir.path().join("nope");
        let err = resolve(missing.to_str().unwrap(), dir.path()).unwrap_err();
        assert!(matches!(err, TreeError::Missing { .. }), "{err}");

        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let err = resolve(empty.to_str().unwrap(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("kernel.release"), "{err}");
    }
}
