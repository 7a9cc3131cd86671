//! Finding the workspace's binaries from a test executable, building them when absent.
//!
//! A test of another crate (the client's, the testkit's own) has no `CARGO_BIN_EXE_*` for the
//! broker or the NameServer, but it runs from `target/<profile>/deps/`, next to where cargo
//! puts `target/<profile>/ringmq-broker`. When the binary is not there yet, it is built once
//! per process with the `cargo` that runs the tests, in the same profile and target directory;
//! [`fresh_binary`] builds it even when it is there (it may be older than the sources).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Set to `1` to rebuild the binaries once per test process even when they exist (they may be
/// stale when only the test's own crate was rebuilt).
pub const REBUILD_ENV: &str = "RINGMQ_TESTKIT_REBUILD";

/// Path of the workspace binary `name` (`ringmq-broker`, `ringmq-namesrv`, `ringmq-admin`, ...)
/// in the running test's profile directory, built first when absent (or always, once per
/// process, when [`REBUILD_ENV`] is `1`).
pub fn binary(name: &str) -> PathBuf {
    binary_of(package_of(name), name)
}

/// As [`binary`], naming the package that defines the binary.
pub fn binary_of(package: &str, name: &str) -> PathBuf {
    let rebuild = std::env::var(REBUILD_ENV).is_ok_and(|value| value == "1");
    resolve(package, name, rebuild)
}

/// As [`binary`], but built once per test process even when it exists, so a test of another
/// crate never runs a binary older than the sources (the build is a no-op of about a second when
/// it is fresh). Later calls of [`binary`] find the fresh one.
pub fn fresh_binary(name: &str) -> PathBuf {
    resolve(package_of(name), name, true)
}

/// The binary's path, building it when absent or when `rebuild` asks and this process has not
/// built it yet.
fn resolve(package: &str, name: &str, rebuild: bool) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let profile_dir = profile_dir(&exe);
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() && !rebuild {
        return path;
    }
    // The lock is held during the build so concurrent tests wait for one build, not start two.
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let result = built
        .entry(name.to_owned())
        .or_insert_with(|| build(&profile_dir, package, name).map(|()| path.clone()));
    match result {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// The package that defines each workspace binary.
fn package_of(name: &str) -> &str {
    match name {
        "ringmq-admin" | "ringmq-bench" => "ringmq-tools",
        other => other,
    }
}

/// `target/<profile>` from `target/<profile>/deps/<test>` (or `target/<profile>/<exe>`).
pub(crate) fn profile_dir(exe: &Path) -> PathBuf {
    let parent = exe.parent().unwrap_or_else(|| Path::new("."));
    if parent.file_name().is_some_and(|name| name == "deps") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

/// The cargo arguments that select the profile whose output directory is `dir_name`.
pub(crate) fn profile_args(dir_name: &str) -> Vec<String> {
    match dir_name {
        "debug" => Vec::new(),
        "release" => vec!["--release".to_owned()],
        other => vec!["--profile".to_owned(), other.to_owned()],
    }
}

fn build(profile_dir: &Path, package: &str, name: &str) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dir_name = profile_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let mut command = Command::new(&cargo);
    command
        .args(["build", "-p", package, "--bin", name, "--target-dir"])
        .arg(target_dir)
        .args(profile_args(&dir_name));
    let output = command.output().map_err(|error| {
        format!(
            "{name} is not built ({}) and running {} to build it failed: {error}",
            profile_dir.display(),
            Path::new(&cargo).display()
        )
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name} is not built in {} and `{command:?}` failed ({}):\n{}\n\
             build it first: cargo build -p {package} {}",
            profile_dir.display(),
            output.status,
            crate::tail(&String::from_utf8_lossy(&output.stderr), 40),
            profile_args(&dir_name).join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_is_above_deps() {
        assert_eq!(
            profile_dir(Path::new("/t/target/release/deps/client-0123")),
            Path::new("/t/target/release")
        );
        assert_eq!(
            profile_dir(Path::new("/t/target/debug/example")),
            Path::new("/t/target/debug")
        );
    }

    #[test]
    fn profiles_map_to_cargo_flags() {
        assert!(profile_args("debug").is_empty());
        assert_eq!(profile_args("release"), ["--release"]);
        assert_eq!(profile_args("bench"), ["--profile", "bench"]);
        assert_eq!(package_of("ringmq-admin"), "ringmq-tools");
        assert_eq!(package_of("ringmq-broker"), "ringmq-broker");
    }
}
