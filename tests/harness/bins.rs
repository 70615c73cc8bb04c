//! Locating the `sheep` and `dog` binaries under test, building them once if needed.
//!
//! A test executable lives at `target/<profile>/deps/<name>-<hash>`, so the binaries of the
//! same profile are at `target/<profile>/sheep` and `target/<profile>/dog`. `cargo test` does not
//! build another package's binaries, so the first test in each test process runs
//! `$CARGO build -p sheep -p dog` (with `--release` when the test itself is a release build);
//! the result is shared through a [`OnceLock`]. When cargo has nothing to do this costs well
//! under a second.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set this to a directory holding prebuilt `sheep` and `dog` to skip the build step.
pub const BIN_DIR_ENV: &str = "SHEEPFOLD_BIN_DIR";

/// Absolute paths of the two binaries every test drives.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The storage daemon.
    pub sheep: PathBuf,
    /// The admin CLI.
    pub dog: PathBuf,
}

static BINARIES: OnceLock<Binaries> = OnceLock::new();

/// Returns the binaries, building them on the first call in this process.
///
/// Panics with cargo's output if the build fails, or if a binary is still missing afterwards.
pub fn binaries() -> &'static Binaries {
    BINARIES.get_or_init(locate_and_build)
}

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits inside the workspace")
}

fn locate_and_build() -> Binaries {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let bins = binaries_in(Path::new(&dir));
        check_exist(&bins);
        return bins;
    }
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let exe_dir = exe.parent().expect("test executable has a parent dir");
    // target/<profile>/deps/<name> normally; tolerate runners that put it in target/<profile>.
    let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().expect("deps has a parent")
    } else {
        exe_dir
    };
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile dir name is UTF-8")
        .to_owned();
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    build(target_dir, &profile);
    let bins = binaries_in(profile_dir);
    check_exist(&bins);
    bins
}

/// Builds example `name` of this package (as `cargo test` does, in the test's
/// own profile) and returns its path.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    let mut dir = exe.parent().expect("test executable has a parent dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile")
        .to_owned();
    let target_dir = dir.parent().expect("profile dir has a parent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "sheepfold-tests", "--example", name])
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("run cargo to build an example");
    assert!(
        out.status.success(),
        "building example {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "example not found: {}", path.display());
    path
}

fn binaries_in(dir: &Path) -> Binaries {
    let suffix = std::env::consts::EXE_SUFFIX;
    Binaries {
        sheep: dir.join(format!("sheep{suffix}")),
        dog: dir.join(format!("dog{suffix}")),
    }
}

fn check_exist(bins: &Binaries) {
    for path in [&bins.sheep, &bins.dog] {
        assert!(path.is_file(), "binary not found: {}", path.display());
    }
}

/// Runs `cargo build -p sheep -p dog` for `profile` into `target_dir`.
fn build(target_dir: &Path, profile: &str) {
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .args(["-p", "sheep", "-p", "dog"])
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build sheep and dog: {e}"));
    assert!(
        out.status.success(),
        "building sheep and dog failed ({:?}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
