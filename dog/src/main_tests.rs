use super::*;

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

#[test]
fn options_after_positionals() {
    let a: VdiCreateArgs = parse(&args(&["vol", "10G", "-a", "10.0.0.1", "-p", "7001"])).unwrap();
    assert_eq!(a.name.as_deref(), Some("vol"));
    assert_eq!(a.size.as_deref(), Some("10G"));
    assert_eq!(a.common.address.as_deref(), Some("10.0.0.1"));
    assert_eq!(a.common.port.as_deref(), Some("7001"));
}

#[test]
fn options_before_positionals() {
    let a: VdiNameArgs = parse(&args(&["-a", "h", "-p", "1", "-s", "snap", "vol"])).unwrap();
    assert_eq!(a.name.as_deref(), Some("vol"));
    assert_eq!(a.snapshot.as_deref(), Some("snap"));
    let a: RawArgs = parse(&args(&["vol", "-r", "-a", "h", "-p", "7000"])).unwrap();
    assert!(a.raw);
    assert_eq!(a.name.as_deref(), Some("vol"));
}

#[test]
fn last_option_wins() {
    let a: RawArgs = parse(&args(&["-p", "1", "-p", "2", "-r", "-r"])).unwrap();
    assert_eq!(a.common.port.as_deref(), Some("2"));
}

#[test]
fn bad_options_are_usage_errors() {
    let e = parse::<RawArgs>(&args(&["-x"])).unwrap_err();
    assert_eq!(e.code(), 64);
    assert_eq!(
        e.to_string(),
        "dog: invalid option -- 'x'\nTry 'dog --help' for more information."
    );
    let e = parse::<RawArgs>(&args(&["--bogus"])).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("dog: unrecognized option '--bogus'\n"));
    // vdi write has no -s.
    assert_eq!(
        parse::<VdiWriteArgs>(&args(&["-s", "x", "v"]))
            .unwrap_err()
            .code(),
        64
    );
    // Missing value.
    assert_eq!(parse::<RawArgs>(&args(&["-p"])).unwrap_err().code(), 64);
}

#[test]
fn snapshot_family_options() {
    let a: VdiCloneArgs = parse(&args(&["-s", "s1", "src", "-P", "dst", "-n", "-v"])).unwrap();
    assert_eq!(
        (a.src.as_deref(), a.dst.as_deref()),
        (Some("src"), Some("dst"))
    );
    assert!(a.prealloc && a.no_share && a.verbose);
    let a: VdiSnapshotArgs = parse(&args(&["vol", "-s", "t", "-R", "-r"])).unwrap();
    assert!(a.reduce && a.raw);
    let a: VdiRollbackArgs = parse(&args(&["-f", "vol", "-s", "2"])).unwrap();
    assert!(a.force);
    assert_eq!(a.snapshot.as_deref(), Some("2"));
    let a: VdiPlainArgs = parse(&args(&["vol", "10G"])).unwrap();
    assert_eq!(a.arg.as_deref(), Some("10G"));
    // tree, resize and flatten take no -s, -r or -f.
    assert_eq!(
        parse::<VdiPlainArgs>(&args(&["-r"])).unwrap_err().code(),
        64
    );
    assert_eq!(
        parse::<VdiSnapshotArgs>(&args(&["-f"])).unwrap_err().code(),
        64
    );
}

#[test]
fn backend_alias() {
    let a: ClusterFormatArgs = parse(&args(&["--backend", "plain", "-c", "2"])).unwrap();
    assert_eq!(a.store.as_deref(), Some("plain"));
    let a: ClusterFormatArgs = parse(&args(&["-b", "tree"])).unwrap();
    assert_eq!(a.store.as_deref(), Some("tree"));
}
