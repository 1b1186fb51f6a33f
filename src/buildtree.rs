//! Kernel build trees: from a release (a name under the modules directory, or an absolute
//! build-tree path) to the tree, the release it builds for, and the host directories a
//! container must see, read-only and at the same absolute path, for every symlink and
//! include in the tree to resolve.
//!
//! Debian's headers are spread over three directories: `linux-headers-R` (whose Makefile
//! includes `linux-headers-R-common/Makefile` by absolute path), `linux-headers-R-common`, and
//! `linux-kbuild-V`, reached through relative symlinks such as `scripts`. All are found here by
//! walking the tree, so other layouts work too.

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
    /// Host directories to mount read-only at the same path (the tree among them), none
    /// inside another.
    pub mounts: Vec<PathBuf>,
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
}

/// Resolves `release` against `modules` (normally `/lib/modules`).
pub fn resolve(release: &str, modules: &Path) -> Result<BuildTree, TreeError> {
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

    let mut roots = vec![build.clone()];
    // The release directory's `source` link names the common headers on Debian.
    if !release.starts_with('/')
        && let Ok(source) = fs::canonicalize(modules.join(release).join("source"))
    {
        roots.push(source);
    }
    roots.extend(makefile_includes(&build));
    let mounts = close_over_links(roots).map_err(|e| TreeError::NotATree {
        path: build.clone(),
        why: format!("cannot read it: {e}"),
    })?;
    Ok(BuildTree {
        kernel_release,
        build,
        mounts,
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
    let mut minimal: Vec<PathBuf> = Vec::new();
    for root in all {
        // BTreeSet order puts a parent before anything inside it.
        if !minimal.iter().any(|m| root.starts_with(m)) {
            minimal.push(root);
        }
    }
    Ok(minimal)
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
