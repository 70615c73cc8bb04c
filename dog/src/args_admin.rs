//! Options and dispatch of the operator subcommands: `node kill`, `node
//! recovery`, `node vnodes`, `cluster recover`, `cluster check` and `vdi
//! check`. Nested subcommands (`node recovery set-throttle`, ...) are the
//! first positional argument, as in dog's `do_generic_subcommand`: a
//! missing one prints the usage (exit 64; `node recovery` alone means
//! `info`), an unknown one the usage and exit 1.

use clap::Parser;

use crate::commands::{check, lock, node_admin, recovery};
use crate::error::{exit, DogError};
use crate::usage::{self, SubDesc};
use crate::{invocation, need, parse, snapshot_opt, stdout_text, Action, Common, Invocation};

/// `node kill`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct NodeKillArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'l', long = "local")]
    local: bool,
    id: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `node recovery`, `node vnodes`, `cluster recover`, `cluster check`:
/// a nested subcommand and its arguments.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct NestedArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'f', long = "force")]
    force: bool,
    sub: Option<String>,
    first: Option<String>,
    second: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi check`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiCheckArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 's', long = "snapshot")]
    snapshot: Option<String>,
    #[arg(short = 'e', long = "exist")]
    exist: bool,
    name: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// True for the subcommands this module parses.
pub(crate) fn handles(sub: &SubDesc) -> bool {
    matches!(
        (sub.cmd, sub.name),
        ("node", "kill" | "recovery" | "vnodes")
            | ("cluster", "recover" | "check")
            | ("vdi", "check" | "lock")
    )
}

/// The options a subcommand accepts that its usage does not list are
/// refused like unknown options (`-f` only for `cluster recover`, `-r`
/// only where dog has it).
fn reject(sub: &SubDesc, a: &NestedArgs) -> Result<(), DogError> {
    let bad = if a.force && !sub.opts.contains('f') {
        Some('f')
    } else if a.raw && !sub.opts.contains('r') {
        Some('r')
    } else {
        None
    };
    match bad {
        Some(c) => Err(DogError::Exit {
            message: format!(
                "dog: invalid option -- '{c}'\nTry 'dog --help' for more information."
            ),
            code: exit::USAGE,
        }),
        None => Ok(()),
    }
}

/// An unknown nested subcommand: dog prints the usage and exits 1.
fn unknown(sub: &'static SubDesc, given: &str) -> DogError {
    stdout_text(&usage::subcommand_usage(sub));
    DogError::failure(format!(
        "Invalid command '{} {} {given}'",
        sub.cmd, sub.name
    ))
}

/// Parses the arguments of one of [`handles`]' subcommands.
pub(crate) fn build(sub: &'static SubDesc, args: &[String]) -> Result<Invocation, DogError> {
    match (sub.cmd, sub.name) {
        ("node", "kill") => {
            let a: NodeKillArgs = parse(args)?;
            let (id, local) = (a.id, a.local);
            invocation(&a.common, a.raw, false, move |c| {
                node_admin::kill(c, id.as_deref(), local)
            })
        }
        ("vdi", "check") => {
            let a: VdiCheckArgs = parse(args)?;
            let snap = snapshot_opt(&a.snapshot)?;
            let (name, exist) = (a.name, a.exist);
            invocation(&a.common, false, false, move |c| {
                check::vdi_check(c, &need(name)?, &snap, exist)
            })
        }
        _ => {
            let a: NestedArgs = parse(args)?;
            reject(sub, &a)?;
            nested(sub, a)
        }
    }
}

/// The nested subcommands and `cluster check`.
fn nested(sub: &'static SubDesc, a: NestedArgs) -> Result<Invocation, DogError> {
    let NestedArgs {
        common,
        raw,
        force,
        sub: word,
        first,
        second,
        extra: _,
    } = a;
    let inv = |action: Action| invocation(&common, raw, false, action);
    let Some(word) = word else {
        return match (sub.cmd, sub.name) {
            ("node", "recovery") => inv(Box::new(recovery::info)),
            ("cluster", "check") => inv(Box::new(check::cluster_check)),
            _ => inv(Box::new(|_| Err(DogError::usage("")))),
        };
    };
    match (sub.name, word.as_str()) {
        ("lock", "list") => inv(Box::new(lock::list)),
        ("lock", "unlock") => inv(Box::new(move |c| lock::unlock(c, &need(first)?))),
        ("recovery", "info") => inv(Box::new(recovery::info)),
        ("recovery", "stat") => inv(Box::new(recovery::stat)),
        ("recovery", "get-throttle") => inv(Box::new(recovery::get_throttle)),
        ("recovery", "set-throttle") => inv(Box::new(move |c| {
            if first.is_none() {
                return Err(DogError::usage(""));
            }
            let t = recovery::parse_throttle(first.as_deref(), second.as_deref())?;
            recovery::set_throttle(c, t)
        })),
        ("vnodes", "set") => inv(Box::new(move |c| {
            let n = node_admin::parse_vnodes(&need(first)?)?;
            node_admin::vnodes_set(c, n)
        })),
        ("vnodes", "get") => inv(Box::new(node_admin::vnodes_get)),
        ("recover", "enable") => inv(Box::new(|c| recovery::set_enabled(c, true))),
        ("recover", "disable") => inv(Box::new(|c| recovery::set_enabled(c, false))),
        ("recover", "force") => inv(Box::new(move |c| recovery::force(c, force))),
        // `cluster check` takes no argument; dog ignores extra words.
        ("check", _) => inv(Box::new(check::cluster_check)),
        _ => inv(Box::new(move |_| Err(unknown(sub, &word)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn nested_words_and_options() {
        let a: NestedArgs = parse(&args(&["set-throttle", "4", "-p", "7001", "1000"])).unwrap();
        assert_eq!(a.sub.as_deref(), Some("set-throttle"));
        assert_eq!(
            (a.first.as_deref(), a.second.as_deref()),
            (Some("4"), Some("1000"))
        );
        assert_eq!(a.common.port.as_deref(), Some("7001"));
        let a: NestedArgs = parse(&args(&["-r"])).unwrap();
        assert!(a.raw && a.sub.is_none());
        let a: NodeKillArgs = parse(&args(&["2", "-a", "10.0.0.1"])).unwrap();
        assert_eq!(a.id.as_deref(), Some("2"));
        let a: NodeKillArgs = parse(&args(&["-l"])).unwrap();
        assert!(a.local && a.id.is_none());
        let a: VdiCheckArgs = parse(&args(&["-s", "gold", "vol", "-e"])).unwrap();
        assert_eq!(a.snapshot.as_deref(), Some("gold"));
        assert!(a.exist);
        assert_eq!(a.name.as_deref(), Some("vol"));
    }

    #[test]
    fn options_outside_the_usage_are_refused() {
        let recover = usage::find("cluster", "recover").unwrap();
        let vnodes = usage::find("node", "vnodes").unwrap();
        let a: NestedArgs = parse(&args(&["force", "-f"])).unwrap();
        assert!(reject(recover, &a).is_ok());
        let e = reject(vnodes, &a).unwrap_err();
        assert_eq!(e.code(), 64);
        assert!(e.to_string().starts_with("dog: invalid option -- 'f'\n"));
        let a: NestedArgs = parse(&args(&["get", "-r"])).unwrap();
        assert_eq!(reject(vnodes, &a).unwrap_err().code(), 64);
        let recovery = usage::find("node", "recovery").unwrap();
        assert!(reject(recovery, &a).is_ok());
        assert!(handles(recovery) && handles(usage::find("vdi", "check").unwrap()));
        assert!(!handles(usage::find("vdi", "list").unwrap()));
    }
}
