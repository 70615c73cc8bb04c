//! `dog`: the admin CLI of Sheepfold, compatible with Sheepdog's `dog`.
//!
//! Usage is `dog <command> <subcommand> [options] [args]`; options may come
//! before, between or after the arguments (libvirt appends `-a H -p P`).
//! This file dispatches on the command words like dog does (with dog's
//! messages for unknown commands), parses each subcommand's options with
//! clap, and turns [`error::DogError`] into stderr text and an exit code.
//!
//! # Layout
//! * `client`: one TCP connection to a sheep (framing, ids, pipelining).
//! * `pipeline`: ordered, windowed request/reply tasks over a connection.
//! * `commands`: the subcommands (`cluster`, `node`, `vdi`, `vdi_io`,
//!   `vdi_snap` for snapshot/clone/rollback/resize/tree/flatten).
//! * `output`: the exact table formats; `treeview`: the `vdi tree` layout;
//!   `size`: size parsing and printing.
//! * `options`: option value parsing; `usage`: help texts; `error`: errors.
//! * `args_admin`: options of the operator commands (`node kill|recovery|
//!   vnodes`, `cluster recover|check`, `vdi check`); `output_admin`: their
//!   formats.

mod args_admin;
mod client;
mod commands;
mod error;
mod options;
mod output;
mod output_admin;
mod pipeline;
mod size;
mod treeview;
mod usage;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser};

use commands::{cluster, node, vdi, vdi_io, vdi_snap, Ctx};
use error::{exit, DogError};
use options::{
    parse_block_size_shift, parse_copies, parse_port, parse_snapshot, resolve_address, Copies,
    SnapshotSel, DEFAULT_ADDR,
};
use usage::SubDesc;

/// Options every subcommand accepts.
#[derive(Args, Debug)]
struct Common {
    /// Daemon address.
    #[arg(short = 'a', long = "address")]
    address: Option<String>,
    /// Daemon port.
    #[arg(short = 'p', long = "port")]
    port: Option<String>,
    /// Print the subcommand usage.
    #[arg(short = 'h', long = "help")]
    help: bool,
    /// Print the elapsed time.
    #[arg(short = 'T', long = "time")]
    time: bool,
}

/// `node list`, `node info`, `vdi list`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct RawArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    /// Optional VDI name (`vdi list`); ignored elsewhere.
    name: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi create`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiCreateArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(short = 'P', long = "prealloc")]
    prealloc: bool,
    #[arg(short = 'c', long = "copies")]
    copies: Option<String>,
    #[arg(short = 'z', long = "block_size_shift")]
    block_size_shift: Option<String>,
    name: Option<String>,
    size: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi delete`, `vdi read`, `vdi write` (`-s` only for delete and read).
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiNameArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 's', long = "snapshot")]
    snapshot: Option<String>,
    name: Option<String>,
    offset: Option<String>,
    len: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi write`: like [`VdiNameArgs`] without `-s`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiWriteArgs {
    #[command(flatten)]
    common: Common,
    name: Option<String>,
    offset: Option<String>,
    len: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi snapshot`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiSnapshotArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(short = 's', long = "snapshot")]
    snapshot: Option<String>,
    #[arg(short = 'R', long = "reduce-identical-snapshots")]
    reduce: bool,
    name: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi clone`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiCloneArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(short = 's', long = "snapshot")]
    snapshot: Option<String>,
    #[arg(short = 'P', long = "prealloc")]
    prealloc: bool,
    #[arg(short = 'n', long = "no-share")]
    no_share: bool,
    src: Option<String>,
    dst: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi rollback`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiRollbackArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(short = 's', long = "snapshot")]
    snapshot: Option<String>,
    #[arg(short = 'f', long = "force")]
    force: bool,
    name: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `vdi tree`, `vdi resize`, `vdi flatten`: only the common options.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct VdiPlainArgs {
    #[command(flatten)]
    common: Common,
    name: Option<String>,
    arg: Option<String>,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `cluster info`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct ClusterInfoArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'r', long = "raw")]
    raw: bool,
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(short = 'd', long = "diff")]
    diff: bool,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// `cluster format`.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
#[command(args_override_self = true)]
struct ClusterFormatArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 'b', long = "store", visible_alias = "backend")]
    store: Option<String>,
    #[arg(short = 'c', long = "copies")]
    copies: Option<String>,
    #[arg(short = 'l', long = "lock")]
    lock: bool,
    #[arg(short = 't', long = "strict")]
    strict: bool,
    #[arg(short = 'z', long = "block_size_shift")]
    block_size_shift: Option<String>,
    #[arg(short = 'V', long = "fixedvnodes")]
    fixed_vnodes: bool,
    #[arg(short = 'R', long = "recyclevid")]
    recycle_vid: bool,
    #[arg(short = 'f', long = "force")]
    force: bool,
    #[arg(short = 'F', long = "avoid-diskfull")]
    avoid_diskfull: bool,
    #[arg(hide = true)]
    extra: Vec<String>,
}

/// getopt-style report of a bad option, then dog's usage hint (exit 64).
fn clap_error(e: clap::Error) -> DogError {
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(a)) => Some(a.clone()),
        _ => None,
    };
    let text = match (e.kind(), arg) {
        (ErrorKind::UnknownArgument, Some(a)) if a.starts_with("--") => {
            format!("dog: unrecognized option '{a}'")
        }
        (ErrorKind::UnknownArgument, Some(a)) if a.starts_with('-') => {
            format!("dog: invalid option -- '{}'", &a[1..])
        }
        _ => {
            let rendered = e.to_string();
            let line = rendered
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            format!("dog: {line}")
        }
    };
    DogError::Exit {
        message: format!("{text}\nTry 'dog --help' for more information."),
        code: exit::USAGE,
    }
}

/// Parses one subcommand's arguments.
fn parse<T: Parser>(args: &[String]) -> Result<T, DogError> {
    T::try_parse_from(args).map_err(clap_error)
}

/// Builds the global context: environment first, then `-a`/`-p`.
fn make_ctx(common: &Common, raw: bool, verbose: bool) -> Result<Ctx, DogError> {
    let mut addr = DEFAULT_ADDR;
    let mut port = qemu_proto::consts::SD_LISTEN_PORT;
    if let Some(env) = std::env::var_os("SHEEPDOG_DOG_ADDR") {
        addr = resolve_address(&env.to_string_lossy())?;
    }
    if let Some(env) = std::env::var_os("SHEEPDOG_DOG_PORT") {
        port = parse_port(&env.to_string_lossy())?;
    }
    if let Some(a) = &common.address {
        addr = resolve_address(a)?;
    }
    if let Some(p) = &common.port {
        port = parse_port(p)?;
    }
    Ok(Ctx {
        addr,
        port,
        raw,
        verbose,
    })
}

/// The work of one subcommand, run with the global context.
type Action = Box<dyn FnOnce(&Ctx) -> Result<(), DogError>>;

/// A parsed invocation ready to run.
struct Invocation {
    ctx: Ctx,
    time: bool,
    help: bool,
    action: Action,
}

fn invocation(
    common: &Common,
    raw: bool,
    verbose: bool,
    action: impl FnOnce(&Ctx) -> Result<(), DogError> + 'static,
) -> Result<Invocation, DogError> {
    Ok(Invocation {
        ctx: make_ctx(common, raw, verbose)?,
        time: common.time,
        help: common.help,
        action: Box::new(action),
    })
}

/// The positional argument dog requires (`CMD_NEED_ARG`): usage if missing.
fn need(arg: Option<String>) -> Result<String, DogError> {
    arg.ok_or_else(|| DogError::usage(""))
}

fn copies_opt(v: &Option<String>) -> Result<Copies, DogError> {
    v.as_deref()
        .map(parse_copies)
        .transpose()
        .map(Option::unwrap_or_default)
}

fn shift_opt(v: &Option<String>, as_u8: bool) -> Result<u8, DogError> {
    Ok(v.as_deref()
        .map(|s| parse_block_size_shift(s, as_u8))
        .transpose()?
        .unwrap_or(0))
}

fn snapshot_opt(v: &Option<String>) -> Result<SnapshotSel, DogError> {
    Ok(v.as_deref()
        .map(parse_snapshot)
        .transpose()?
        .unwrap_or_default())
}

/// Parses the arguments after `dog CMD SUB` into an [`Invocation`].
fn build(sub: &'static SubDesc, args: &[String]) -> Result<Invocation, DogError> {
    match (sub.cmd, sub.name) {
        ("node", "list") => {
            let a: RawArgs = parse(args)?;
            invocation(&a.common, a.raw, false, node::list)
        }
        ("node", "info") => {
            let a: RawArgs = parse(args)?;
            invocation(&a.common, a.raw, false, node::info)
        }
        ("vdi", "list") => {
            let a: RawArgs = parse(args)?;
            let name = a.name;
            invocation(&a.common, a.raw, false, move |c| {
                vdi::list(c, name.as_deref())
            })
        }
        ("vdi", "create") => {
            let a: VdiCreateArgs = parse(args)?;
            let opts = vdi::CreateOpts {
                prealloc: a.prealloc,
                copies: copies_opt(&a.copies)?,
                block_size_shift: shift_opt(&a.block_size_shift, true)?,
            };
            let (name, size) = (a.name, a.size);
            invocation(&a.common, a.raw, a.verbose, move |c| {
                let name = need(name)?;
                let size = size.ok_or_else(|| DogError::usage("Please specify the VDI size"))?;
                vdi::create(c, &name, &size, &opts)
            })
        }
        ("vdi", "delete") => {
            let a: VdiNameArgs = parse(args)?;
            let snap = snapshot_opt(&a.snapshot)?;
            let name = a.name;
            invocation(&a.common, false, false, move |c| {
                vdi::delete(c, &need(name)?, &snap)
            })
        }
        ("vdi", "snapshot") => {
            let a: VdiSnapshotArgs = parse(args)?;
            let snap = snapshot_opt(&a.snapshot)?;
            let (name, reduce) = (a.name, a.reduce);
            invocation(&a.common, a.raw, a.verbose, move |c| {
                vdi_snap::snapshot(c, &need(name)?, &snap, reduce)
            })
        }
        ("vdi", "clone") => {
            let a: VdiCloneArgs = parse(args)?;
            let snap = snapshot_opt(&a.snapshot)?;
            let opts = vdi_snap::CloneOpts {
                prealloc: a.prealloc,
                no_share: a.no_share,
            };
            let (src, dst) = (a.src, a.dst);
            invocation(&a.common, a.raw, a.verbose, move |c| {
                vdi_snap::clone(c, &need(src)?, dst.as_deref(), &snap, opts)
            })
        }
        ("vdi", "rollback") => {
            let a: VdiRollbackArgs = parse(args)?;
            let snap = snapshot_opt(&a.snapshot)?;
            let (name, force) = (a.name, a.force);
            invocation(&a.common, a.raw, a.verbose, move |c| {
                vdi_snap::rollback(c, &need(name)?, &snap, force)
            })
        }
        ("vdi", "tree") => {
            let a: VdiPlainArgs = parse(args)?;
            invocation(&a.common, false, false, vdi_snap::tree)
        }
        ("vdi", "resize") => {
            let a: VdiPlainArgs = parse(args)?;
            let (name, size) = (a.name, a.arg);
            invocation(&a.common, false, false, move |c| {
                vdi_snap::resize(c, &need(name)?, size.as_deref())
            })
        }
        ("vdi", "flatten") => {
            let a: VdiPlainArgs = parse(args)?;
            let name = a.name;
            invocation(&a.common, false, false, move |c| {
                vdi_snap::flatten(c, &need(name)?)
            })
        }
        ("vdi", "read") => {
            let a: VdiNameArgs = parse(args)?;
            let snap = snapshot_opt(&a.snapshot)?;
            let (name, off, len) = (a.name, a.offset, a.len);
            invocation(&a.common, false, false, move |c| {
                vdi_io::read(c, &need(name)?, off.as_deref(), len.as_deref(), &snap)
            })
        }
        ("vdi", "write") => {
            let a: VdiWriteArgs = parse(args)?;
            let (name, off, len) = (a.name, a.offset, a.len);
            invocation(&a.common, false, false, move |c| {
                vdi_io::write(c, &need(name)?, off.as_deref(), len.as_deref())
            })
        }
        ("cluster", "info") => {
            let a: ClusterInfoArgs = parse(args)?;
            let diff = a.diff;
            invocation(&a.common, a.raw, a.verbose, move |c| cluster::info(c, diff))
        }
        ("cluster", "format") => {
            let a: ClusterFormatArgs = parse(args)?;
            let opts = cluster::FormatOpts {
                store: a.store,
                copies: copies_opt(&a.copies)?,
                block_size_shift: shift_opt(&a.block_size_shift, false)?,
                force: a.force,
                strict: a.strict,
                use_lock: a.lock,
                recycle_vid: a.recycle_vid,
                fixed_vnodes: a.fixed_vnodes,
                avoid_diskfull: a.avoid_diskfull,
            };
            invocation(&a.common, false, false, move |c| cluster::format(c, &opts))
        }
        _ if args_admin::handles(sub) => args_admin::build(sub, args),
        _ => unreachable!("subcommand table and dispatch disagree"),
    }
}

/// Prints text to stdout (best effort; used for help and usage).
fn stdout_text(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Runs dog with the arguments after the program name.
fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(cmd) = args.first() else {
        stdout_text(&usage::main_usage());
        return Ok(());
    };
    if !usage::COMMANDS.contains(&cmd.as_str()) {
        if matches!(cmd.as_str(), "help" | "--help" | "-h") {
            stdout_text(&usage::main_usage());
            return Ok(());
        }
        return Err(DogError::Exit {
            message: format!("Invalid command '{cmd}'\nTry 'dog --help' for more information."),
            code: exit::USAGE,
        }
        .into());
    }
    let given = args.get(1).map(String::as_str);
    let Some(sub) = given.and_then(|g| usage::find(cmd, g)) else {
        return Err(DogError::Exit {
            message: usage::available_subcommands(cmd, given),
            code: exit::USAGE,
        }
        .into());
    };

    let start = Instant::now();
    let inv = build(sub, &args[2..])?;
    if inv.help {
        stdout_text(&usage::subcommand_usage(sub));
        return Ok(());
    }
    let result = (inv.action)(&inv.ctx);
    let result = match result {
        Err(DogError::Usage { message }) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            stdout_text(&usage::subcommand_usage(sub));
            Err(DogError::Exit {
                message: String::new(),
                code: exit::USAGE,
            })
        }
        other => other,
    };
    if inv.time && !matches!(&result, Err(e) if e.code() == exit::USAGE) {
        stdout_text(&format!(
            "\nElapsed time: {:.3} seconds\n",
            start.elapsed().as_secs_f64()
        ));
    }
    result.map_err(anyhow::Error::from)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let (message, code) = match err.downcast_ref::<DogError>() {
                Some(e) => (e.to_string(), e.code()),
                None => (format!("{err:#}"), exit::FAILURE),
            };
            let _ = std::io::stdout().flush();
            if !message.is_empty() {
                eprintln!("{message}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
