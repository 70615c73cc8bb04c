//! External clients the NBD tests drive: qemu-img, qemu-io, nbdinfo, nbdcopy, fio.
//!
//! [`tool`] builds the command (C locale, so messages are stable) after checking that the
//! program is on `PATH`; a missing client is a test failure that names the package to install
//! (`.ci/run` installs them all). [`run_tool`] and [`run_tool_ok`] run it through
//! [`run_with_timeout`], so no client can hang the suite. With a cluster at hand, prefer
//! [`crate::Cluster::tool_ok`], which adds every node's log tail to the failure message.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::dog::describe_output;
use crate::process::{describe_command, run_with_timeout};

/// Timeout for a client that moves at most a few MiB or only talks (nbdinfo, qemu-io).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout for a client that moves hundreds of MiB (nbdcopy, qemu-img convert, fio).
pub const TOOL_IO_TIMEOUT: Duration = Duration::from_secs(300);

/// The Debian package that provides each client the tests use.
const PACKAGES: [(&str, &str); 6] = [
    ("qemu-img", "qemu-utils"),
    ("qemu-io", "qemu-utils"),
    ("qemu-nbd", "qemu-utils"),
    ("nbdinfo", "libnbd-bin"),
    ("nbdcopy", "libnbd-bin"),
    ("fio", "fio"),
];

/// True if `program` is an executable file in one of `PATH`'s directories.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program` as a [`Command`] with `LC_ALL=C`; panics with an install hint if it is missing.
pub fn tool(program: &str) -> Command {
    if !on_path(program) {
        let package = PACKAGES
            .iter()
            .find(|(p, _)| *p == program)
            .map_or("?", |(_, pkg)| pkg);
        panic!(
            "`{program}` is not on PATH: install the Debian package {package} \
             (`.ci/run` installs every client the tests need)"
        );
    }
    let mut cmd = Command::new(program);
    cmd.env("LC_ALL", "C").env("LANG", "C");
    cmd
}

/// Runs `program ARGS` with `timeout`; returns its output whatever the exit status.
pub fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = tool(program);
    cmd.args(args);
    run_with_timeout(cmd, None, timeout)
}

/// Runs `program ARGS` with `timeout`; panics unless it exits 0. Returns its output.
pub fn run_tool_ok(program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = tool(program);
    cmd.args(args);
    let desc = describe_command(&cmd);
    let out = run_with_timeout(cmd, None, timeout);
    assert!(
        out.status.success(),
        "{desc} failed: {}",
        describe_output(&out)
    );
    out
}

/// Stdout and stderr of a finished client as one lossy string (qemu-io prints its verdicts
/// on stdout, errors on stderr).
pub fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `qemu-io -f raw URI -c CMD1 -c CMD2 ...` as a command (not run).
pub fn qemu_io(uri: &str, cmds: &[String]) -> Command {
    let mut cmd = tool("qemu-io");
    cmd.args(["-f", "raw", uri]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd
}

/// One extent of `qemu-img map --output=json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapExtent {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// `"data": true`: allocated, holds data.
    pub data: bool,
    /// `"zero": true`: reads as zeros.
    pub zero: bool,
}

/// Parses `qemu-img map --output=json`: a flat array of objects whose values are numbers and
/// booleans (no nesting, no strings), so a small hand parser does and no JSON crate is needed.
pub fn parse_qemu_img_map(json: &str) -> Result<Vec<MapExtent>, String> {
    let body = json.trim();
    let body = body
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .ok_or_else(|| format!("not a JSON array: {json}"))?;
    let mut extents = Vec::new();
    for obj in body.split('}') {
        let obj = obj.trim().trim_start_matches(',').trim();
        let Some(obj) = obj.strip_prefix('{') else {
            if obj.is_empty() {
                continue;
            }
            return Err(format!("unexpected text {obj:?} in {json}"));
        };
        let mut start = None;
        let mut length = None;
        let mut data = None;
        let mut zero = None;
        for pair in obj.split(',') {
            let Some((key, value)) = pair.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_matches('"');
            let value = value.trim();
            match key {
                "start" => start = value.parse::<u64>().ok(),
                "length" => length = value.parse::<u64>().ok(),
                "data" => data = value.parse::<bool>().ok(),
                "zero" => zero = value.parse::<bool>().ok(),
                _ => {}
            }
        }
        match (start, length, data, zero) {
            (Some(start), Some(length), Some(data), Some(zero)) => extents.push(MapExtent {
                start,
                length,
                data,
                zero,
            }),
            _ => return Err(format!("extent without start/length/data/zero: {{{obj}}}")),
        }
    }
    Ok(extents)
}

/// The extent of `map` that holds byte `offset`.
pub fn extent_at(map: &[MapExtent], offset: u64) -> Option<MapExtent> {
    map.iter()
        .copied()
        .find(|e| e.start <= offset && offset < e.start + e.length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_img_map_json() {
        let json = r#"[{ "start": 0, "length": 4161536, "depth": 0, "present": true, "zero": true, "data": false, "compressed": false, "offset": 0},
{ "start": 4161536, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "compressed": false, "offset": 4161536}]
"#;
        let map = parse_qemu_img_map(json).unwrap();
        assert_eq!(
            map,
            [
                MapExtent {
                    start: 0,
                    length: 4161536,
                    data: false,
                    zero: true
                },
                MapExtent {
                    start: 4161536,
                    length: 65536,
                    data: true,
                    zero: false
                }
            ]
        );
        assert_eq!(extent_at(&map, 4161536).map(|e| e.data), Some(true));
        assert_eq!(extent_at(&map, 4161536 + 65536), None);
        assert!(parse_qemu_img_map("nope").is_err());
    }
}
