//! Issue 6, "Done when" 5: the panel driver in `examples/` runs against a local 3-node
//! cluster: it imports a base image (qemu-img into the NBD address the API gives), snapshots
//! it, clones and attaches 10 VM disks, prints their libvirt XML, tears everything down and
//! prints its timings. Afterwards the cluster holds no VDI and no attachment.

use std::process::Command;
use std::time::Duration;

use sheepfold_tests::api::Api;
use sheepfold_tests::bins::example;
use sheepfold_tests::cluster::Cluster;
use sheepfold_tests::process::run_with_timeout;

#[test]
fn panel_driver_provisions_and_tears_down() {
    let c = Cluster::builder().nodes(3).distinct_zones().start();
    c.format(2);
    let mut cmd = Command::new(example("panel_driver"));
    cmd.args(["--api", &c.http_url(1), "--size", "64M", "--vms", "10"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "panel_driver failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .matches("<disk type='network' device='disk'>")
            .count(),
        10,
        "{stdout}"
    );
    assert!(stdout.contains("protocol='nbd'"), "{stdout}");
    for step in [
        "import base image",
        "snapshot",
        "clone and attach 10 VM disks",
        "tear down",
        "clone and attach, per VM",
    ] {
        assert!(stdout.contains(step), "no timing for {step}: {stdout}");
    }
    let api = Api::new(c.http_port(0));
    let left = api.get("/v1/vdis");
    assert_eq!(
        left.json["vdis"].as_array().map(Vec::len),
        Some(0),
        "{}",
        left.text
    );
    assert_eq!(
        api.get("/v1/locks").json["attachments"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    for i in 0..3 {
        c.assert_no_panic(i);
    }
}
