//! Where broker executables are looked up.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable naming a directory searched first for broker executables.
pub(crate) const BIN_DIR_VAR: &str = "WHARF_BIN_DIR";

/// `<workspace root>/.wharf/bin`, where `scripts/install` puts the brokers.
pub(crate) fn workspace_bin_dir() -> PathBuf {
    // crates/testkit -> workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(".wharf")
        .join("bin")
}

/// Finds `binary`: `$WHARF_BIN_DIR`, then `<workspace>/.wharf/bin`, then `$PATH`.
pub(crate) fn find(binary: &str) -> Result<PathBuf> {
    let bin_dir = std::env::var_os(BIN_DIR_VAR).filter(|v| !v.is_empty());
    let path = std::env::var_os("PATH");
    find_in(
        binary,
        bin_dir.as_deref().map(Path::new),
        &workspace_bin_dir(),
        path.as_deref(),
    )
}

/// The lookup itself, with every input explicit so that tests need no environment changes.
pub(crate) fn find_in(
    binary: &str,
    bin_dir: Option<&Path>,
    workspace_bin: &Path,
    path_var: Option<&OsStr>,
) -> Result<PathBuf> {
    let mut searched: Vec<PathBuf> = Vec::new();
    let path_dirs = path_var.map(std::env::split_paths).into_iter().flatten();
    let dirs = bin_dir
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::iter::once(workspace_bin.to_path_buf()))
        .chain(path_dirs);
    for dir in dirs {
        let candidate = dir.join(binary);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(dir);
    }
    let mut shown: Vec<String> = searched
        .iter()
        .take(4)
        .map(|d| d.display().to_string())
        .collect();
    if searched.len() > 4 {
        shown.push(format!("and {} more $PATH entries", searched.len() - 4));
    }
    Err(Error::BinaryNotFound {
        binary: binary.to_owned(),
        searched: shown.join(", "),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::ffi::OsString;

    fn make_executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_missing_binary_names_itself_and_the_install_script() {
        let empty = tempfile::tempdir().unwrap();
        let path_var = OsString::from("/nonexistent-wharf-dir");
        let err = find_in(
            "wharf-no-such-broker",
            Some(empty.path()),
            &empty.path().join("ws"),
            Some(&path_var),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::BinaryNotFound { .. }), "{err:?}");
        assert!(message.contains("`wharf-no-such-broker`"), "{message}");
        assert!(message.contains("scripts/install"), "{message}");
        assert!(
            message.contains(&empty.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn the_override_directory_wins_over_the_workspace_and_path() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let third = tempfile::tempdir().unwrap();
        let wanted = make_executable(first.path(), "broker");
        make_executable(second.path(), "broker");
        make_executable(third.path(), "broker");
        let path_var = std::env::join_paths([third.path()]).unwrap();
        let found = find_in("broker", Some(first.path()), second.path(), Some(&path_var)).unwrap();
        assert_eq!(found, wanted);
    }

    #[test]
    fn the_workspace_directory_wins_over_path() {
        let workspace = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let wanted = make_executable(workspace.path(), "broker");
        make_executable(on_path.path(), "broker");
        let path_var = std::env::join_paths([on_path.path()]).unwrap();
        let found = find_in("broker", None, workspace.path(), Some(&path_var)).unwrap();
        assert_eq!(found, wanted);
    }

    #[test]
    fn path_is_searched_last_and_non_executables_are_skipped() {
        let workspace = tempfile::tempdir().unwrap();
        let not_exec = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        std::fs::write(not_exec.path().join("broker"), "data").unwrap();
        let wanted = make_executable(on_path.path(), "broker");
        let path_var = std::env::join_paths([not_exec.path(), on_path.path()]).unwrap();
        let found = find_in("broker", None, workspace.path(), Some(&path_var)).unwrap();
        assert_eq!(found, wanted);
    }
}
