//! Help and usage texts, laid out as Sheepdog's dog prints them.
//!
//! `dog` with no arguments prints the command list (`usage`), `dog CMD SUB
//! -h` the subcommand usage (`subcommand_usage`). The option letters of each
//! subcommand keep the order of dog's option strings, minus the options that
//! Sheepfold's dog does not implement.

/// One option: letter, long name, whether it takes a value, description.
#[derive(Debug, Clone, Copy)]
pub struct OptDesc {
    /// Short option letter.
    pub ch: char,
    /// Long option name.
    pub name: &'static str,
    /// Whether it takes a value.
    pub has_arg: bool,
    /// Help text.
    pub desc: &'static str,
}

const fn opt(ch: char, name: &'static str, has_arg: bool, desc: &'static str) -> OptDesc {
    OptDesc {
        ch,
        name,
        has_arg,
        desc,
    }
}

/// Options shared by every command (`dog_options`).
const COMMON: &[OptDesc] = &[
    opt('a', "address", true, "specify the daemon address (default: localhost)"),
    opt('p', "port", true, "specify the daemon port"),
    opt(
        'r',
        "raw",
        false,
        "raw output mode: omit headers, separate fields with\n                          single spaces and print all sizes in decimal bytes",
    ),
    opt('v', "verbose", false, "print more information than default"),
    opt('h', "help", false, "display this help and exit"),
    opt('T', "time", false, "show elapsed time"),
];

/// `vdi` options (`vdi_options`) that Sheepfold implements.
const VDI: &[OptDesc] = &[
    opt('P', "prealloc", false, "preallocate all the data objects"),
    opt('n', "no-share", false, "share nothing with its parent"),
    opt('s', "snapshot", true, "specify a snapshot id or tag name"),
    opt('c', "copies", true, "specify the data redundancy level"),
    opt('f', "force", false, "do operation forcibly"),
    opt(
        'z',
        "block_size_shift",
        true,
        "specify the bit shift num for data object size",
    ),
    opt(
        'R',
        "reduce-identical-snapshots",
        false,
        "do not create snapshot if working VDI doesn't have its own objects",
    ),
    opt(
        'e',
        "exist",
        false,
        "only say whether objects were missing (Sheepfold\n                          repairs them in the same pass)",
    ),
];

/// `node` options (`node_options`) that Sheepfold implements.
const NODE: &[OptDesc] = &[opt('l', "local", false, "issue request to local node")];

/// `cluster` options (`cluster_options`) that Sheepfold implements.
const CLUSTER: &[OptDesc] = &[
    opt('b', "store", true, "specify backend store"),
    opt(
        'c',
        "copies",
        true,
        "specify the default data redundancy (number of copies)",
    ),
    opt('f', "force", false, "do not prompt for confirmation"),
    opt(
        'F',
        "avoid-diskfull",
        false,
        "skip recovery if recovery process can cause disk full",
    ),
    opt('l', "lock", false, "Lock vdi to exclude multiple users"),
    opt('R', "recyclevid", false, "enable recycling of VID"),
    opt(
        't',
        "strict",
        false,
        "do not serve write request if number of nodes is not sufficient",
    ),
    opt(
        'z',
        "block_size_shift",
        true,
        "specify the shift num of default data object size",
    ),
    opt(
        'V',
        "fixedvnodes",
        false,
        "disable automatic vnodes calculation",
    ),
    opt(
        'd',
        "diff",
        false,
        "just output the changes between the two adjacent epochesfor cluster info",
    ),
];

/// A subcommand: command, name, argument text, option letters, description.
#[derive(Debug, Clone, Copy)]
pub struct SubDesc {
    /// `vdi`, `node` or `cluster`.
    pub cmd: &'static str,
    /// Subcommand name.
    pub name: &'static str,
    /// Positional argument synopsis.
    pub arg: Option<&'static str>,
    /// Option letters in display order.
    pub opts: &'static str,
    /// One-line description.
    pub desc: &'static str,
}

/// Every implemented subcommand, in dog's table order.
pub const SUBCOMMANDS: &[SubDesc] = &[
    SubDesc {
        cmd: "vdi",
        name: "check",
        arg: Some("<vdiname>"),
        opts: "seaphT",
        desc: "check and repair image's consistency",
    },
    SubDesc {
        cmd: "vdi",
        name: "create",
        arg: Some("<vdiname> <size>"),
        opts: "PcaphrvzT",
        desc: "create an image",
    },
    SubDesc {
        cmd: "vdi",
        name: "snapshot",
        arg: Some("<vdiname>"),
        opts: "saphrvTR",
        desc: "create a snapshot",
    },
    SubDesc {
        cmd: "vdi",
        name: "clone",
        arg: Some("<src vdi> <dst vdi>"),
        opts: "sPnaphrvT",
        desc: "clone an image",
    },
    SubDesc {
        cmd: "vdi",
        name: "delete",
        arg: Some("<vdiname>"),
        opts: "saphT",
        desc: "delete an image",
    },
    SubDesc {
        cmd: "vdi",
        name: "rollback",
        arg: Some("<vdiname>"),
        opts: "saphfrvT",
        desc: "rollback to a snapshot",
    },
    SubDesc {
        cmd: "vdi",
        name: "list",
        arg: Some("[vdiname]"),
        opts: "aprhT",
        desc: "list images",
    },
    SubDesc {
        cmd: "vdi",
        name: "tree",
        arg: None,
        opts: "aphT",
        desc: "show images in tree view format",
    },
    SubDesc {
        cmd: "vdi",
        name: "resize",
        arg: Some("<vdiname> <new size>"),
        opts: "aphT",
        desc: "resize an image",
    },
    SubDesc {
        cmd: "vdi",
        name: "read",
        arg: Some("<vdiname> [<offset> [<len>]]"),
        opts: "saphT",
        desc: "read data from an image",
    },
    SubDesc {
        cmd: "vdi",
        name: "write",
        arg: Some("<vdiname> [<offset> [<len>]]"),
        opts: "aphT",
        desc: "write data to an image",
    },
    SubDesc {
        cmd: "vdi",
        name: "flatten",
        arg: Some("<vdiname>"),
        opts: "aphT",
        desc: "copy the data an image shares with its parents into it",
    },
    SubDesc {
        cmd: "vdi",
        name: "lock",
        arg: None,
        opts: "aprhT",
        desc: "See 'dog vdi lock' for more information",
    },
    SubDesc {
        cmd: "node",
        name: "kill",
        arg: Some("<node id>"),
        opts: "aprhlT",
        desc: "kill node",
    },
    SubDesc {
        cmd: "node",
        name: "list",
        arg: None,
        opts: "aprhT",
        desc: "list nodes",
    },
    SubDesc {
        cmd: "node",
        name: "info",
        arg: None,
        opts: "aprhT",
        desc: "show information about each node",
    },
    SubDesc {
        cmd: "node",
        name: "recovery",
        arg: Some("<max> <interval>"),
        opts: "aphrT",
        desc: "show recovery information or set/get recovery speed throttling of nodes",
    },
    SubDesc {
        cmd: "node",
        name: "vnodes",
        arg: Some("<num of vnodes>"),
        opts: "aphT",
        desc: "set or get the vnodes of the node",
    },
    SubDesc {
        cmd: "cluster",
        name: "info",
        arg: None,
        opts: "aprhvTd",
        desc: "show cluster information",
    },
    SubDesc {
        cmd: "cluster",
        name: "format",
        arg: None,
        opts: "bcltaphzTVRfF",
        desc: "create a Sheepdog store",
    },
    SubDesc {
        cmd: "cluster",
        name: "recover",
        arg: None,
        opts: "afphT",
        desc: "See 'dog cluster recover' for more information",
    },
    SubDesc {
        cmd: "cluster",
        name: "check",
        arg: None,
        opts: "aphT",
        desc: "check and repair cluster",
    },
];

/// A subcommand's nested table: command, subcommand, then each nested name
/// with its description.
type Nested = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Sub-subcommands (dog's nested `subcommand` tables).
pub const NESTED: &[Nested] = &[
    (
        "vdi",
        "lock",
        &[
            ("list", "list locked VDIs"),
            ("unlock", "unlock locked VDI forcibly"),
        ],
    ),
    (
        "node",
        "recovery",
        &[
            ("info", "show recovery information of nodes (default)"),
            ("set-throttle", "set new throttling"),
            ("get-throttle", "get current throttling"),
            ("stat", "show what recovery has copied on each node"),
        ],
    ),
    (
        "node",
        "vnodes",
        &[("set", "set new vnodes"), ("get", "show the node's vnodes")],
    ),
    (
        "cluster",
        "recover",
        &[
            ("force", "force recover cluster immediately"),
            (
                "enable",
                "enable automatic recovery and run once recover if necessary",
            ),
            ("disable", "disable automatic recovery"),
        ],
    ),
];

/// The nested subcommands of `sub`, if it has any.
pub fn nested(sub: &SubDesc) -> Option<&'static [(&'static str, &'static str)]> {
    NESTED
        .iter()
        .find(|(c, s, _)| *c == sub.cmd && *s == sub.name)
        .map(|(_, _, n)| *n)
}

/// The command names, in dog's order.
pub const COMMANDS: &[&str] = &["vdi", "node", "cluster"];

/// Looks up a subcommand.
pub fn find(cmd: &str, sub: &str) -> Option<&'static SubDesc> {
    SUBCOMMANDS.iter().find(|s| s.cmd == cmd && s.name == sub)
}

fn find_opt(cmd: &str, ch: char) -> Option<&'static OptDesc> {
    let own = match cmd {
        "cluster" => CLUSTER,
        "node" => NODE,
        _ => VDI,
    };
    COMMON
        .iter()
        .find(|o| o.ch == ch)
        .or_else(|| own.iter().find(|o| o.ch == ch))
}

/// `dog CMD SUB -h`: the synopsis and the option list (stdout).
pub fn subcommand_usage(sub: &SubDesc) -> String {
    let opts: Vec<&OptDesc> = sub
        .opts
        .chars()
        .filter_map(|c| find_opt(sub.cmd, c))
        .collect();
    let mut out = format!("Usage: dog {} {}", sub.cmd, sub.name);
    let subsub = nested(sub);
    if let Some(subsub) = subsub {
        let names: Vec<&str> = subsub.iter().map(|(n, _)| *n).collect();
        out.push_str(&format!(" {{{}}}", names.join("|")));
    }
    for o in &opts {
        if o.has_arg {
            out.push_str(&format!(" [-{} {}]", o.ch, o.name));
        } else {
            out.push_str(&format!(" [-{}]", o.ch));
        }
    }
    if let Some(arg) = sub.arg {
        out.push(' ');
        out.push_str(arg);
    }
    out.push('\n');
    if let Some(subsub) = subsub {
        out.push_str("Available subcommands:\n");
        for (name, desc) in subsub {
            out.push_str(&format!("  {name:<24}{desc}\n"));
        }
    }
    out.push_str("Options:\n");
    for o in &opts {
        let name = format!("-{}, --{}", o.ch, o.name);
        out.push_str(&format!("  {name:<24}{}\n", o.desc));
    }
    out
}

/// `dog` / `dog --help`: the list of commands (stdout).
pub fn main_usage() -> String {
    let mut out = format!(
        "Sheepdog administrator utility (version {})\nUsage: dog <command> <subcommand> [options]\n\nAvailable commands:\n",
        env!("CARGO_PKG_VERSION")
    );
    for cmd in COMMANDS {
        for s in SUBCOMMANDS.iter().filter(|s| s.cmd == *cmd) {
            let name = format!("{} {}", s.cmd, s.name);
            out.push_str(&format!("  {name:<24}{}\n", s.desc));
        }
    }
    out.push_str("\nFor more information, run 'dog <command> <subcommand> --help'.\n");
    out
}

/// The stderr text for an unknown or missing subcommand of `cmd`.
pub fn available_subcommands(cmd: &str, given: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(g) = given {
        if !matches!(g, "help" | "--help" | "-h") {
            out.push_str(&format!("Invalid command '{cmd} {g}'\n"));
        }
    }
    out.push_str(&format!("Available {cmd} commands:"));
    for s in SUBCOMMANDS.iter().filter(|s| s.cmd == cmd) {
        out.push_str(&format!("\n  {} {}", s.cmd, s.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdi_create_usage() {
        let u = subcommand_usage(find("vdi", "create").unwrap());
        assert!(u.starts_with(
            "Usage: dog vdi create [-P] [-c copies] [-a address] [-p port] [-h] [-r] [-v] \
             [-z block_size_shift] [-T] <vdiname> <size>\nOptions:\n  \
             -P, --prealloc          preallocate all the data objects\n"
        ));
        assert!(u.contains("  -r, --raw               raw output mode: omit headers, separate fields with\n                          single spaces"));
    }

    #[test]
    fn node_list_usage() {
        assert_eq!(
            subcommand_usage(find("node", "list").unwrap()),
            "Usage: dog node list [-a address] [-p port] [-r] [-h] [-T]\nOptions:\n  \
             -a, --address           specify the daemon address (default: localhost)\n  \
             -p, --port              specify the daemon port\n  \
             -r, --raw               raw output mode: omit headers, separate fields with\n                          \
             single spaces and print all sizes in decimal bytes\n  \
             -h, --help              display this help and exit\n  \
             -T, --time              show elapsed time\n"
        );
    }

    #[test]
    fn main_usage_lists_commands() {
        let u = main_usage();
        assert!(u.contains("\n  vdi create              create an image\n"));
        assert!(u.contains("\n  cluster format          create a Sheepdog store\n"));
        assert!(u.ends_with("\nFor more information, run 'dog <command> <subcommand> --help'.\n"));
    }

    #[test]
    fn available() {
        let all = "Available node commands:\n  node kill\n  node list\n  node info\n  \
                   node recovery\n  node vnodes";
        assert_eq!(
            available_subcommands("node", Some("foo")),
            format!("Invalid command 'node foo'\n{all}")
        );
        assert_eq!(available_subcommands("node", None), all);
    }

    #[test]
    fn nested_usage() {
        assert_eq!(
            subcommand_usage(find("cluster", "recover").unwrap()),
            "Usage: dog cluster recover {force|enable|disable} [-a address] [-f] [-p port] [-h] [-T]\n\
             Available subcommands:\n  \
             force                   force recover cluster immediately\n  \
             enable                  enable automatic recovery and run once recover if necessary\n  \
             disable                 disable automatic recovery\n\
             Options:\n  \
             -a, --address           specify the daemon address (default: localhost)\n  \
             -f, --force             do not prompt for confirmation\n  \
             -p, --port              specify the daemon port\n  \
             -h, --help              display this help and exit\n  \
             -T, --time              show elapsed time\n"
        );
        let u = subcommand_usage(find("node", "recovery").unwrap());
        assert!(u.starts_with(
            "Usage: dog node recovery {info|set-throttle|get-throttle|stat} [-a address] \
             [-p port] [-h] [-r] [-T] <max> <interval>\nAvailable subcommands:\n  info "
        ));
        let u = subcommand_usage(find("node", "kill").unwrap());
        assert!(u.starts_with(
            "Usage: dog node kill [-a address] [-p port] [-r] [-h] [-l] [-T] <node id>\n"
        ));
        assert!(u.contains("  -l, --local             issue request to local node\n"));
        let u = subcommand_usage(find("vdi", "check").unwrap());
        assert!(u.starts_with(
            "Usage: dog vdi check [-s snapshot] [-e] [-a address] [-p port] [-h] [-T] <vdiname>\n"
        ));
        assert!(nested(find("vdi", "check").unwrap()).is_none());
        // Every subcommand's option letters are known.
        for s in SUBCOMMANDS {
            for c in s.opts.chars() {
                assert!(find_opt(s.cmd, c).is_some(), "{} {} -{c}", s.cmd, s.name);
            }
        }
    }
}
