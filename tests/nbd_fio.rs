//! fio's NBD engine with verification: many requests in flight, all of them checked.
//!
//! Issue 3, "Done when" 5: a bounded fio job with `ioengine=nbd`, `verify=crc32c`, iodepth 32,
//! random writes of 4-64 KiB over 64 MiB followed by a verify pass, exits 0 with no verify
//! error, and the verify pass read back every block the write pass wrote. A second pass runs
//! through another node with two connections at once (fio's `numjobs`), each verifying its
//! own half of the disk.

use sheepfold_tests::tools::{all_output, tool, TOOL_IO_TIMEOUT};
use sheepfold_tests::Cluster;

/// The `issued rwts: total=R,W,...` counts of every job in fio's normal output.
fn issued(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("issued rwts: total="))
        .map(|rest| {
            let mut it = rest
                .split([',', ' '])
                .map(|n| n.parse::<u64>().unwrap_or(0));
            (it.next().unwrap_or(0), it.next().unwrap_or(0))
        })
        .collect()
}

fn run_fio(cluster: &Cluster, job: &str, jobs: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("job.fio");
    std::fs::write(&path, job).expect("write the fio job");
    let mut fio = tool("fio");
    // fio saves verify state files in its working directory: keep them in the temp dir.
    fio.arg(&path).current_dir(tmp.path());
    let out = cluster.tool_ok(fio, TOOL_IO_TIMEOUT);
    let text = all_output(&out);
    assert!(
        !["verify failed", "verify: bad", "bad magic", "bad header"]
            .iter()
            .any(|m| text.contains(m)),
        "fio reported verify trouble:\n{text}"
    );
    let errs = text.matches(" err= 0").count();
    assert_eq!(errs, jobs, "every job ends with err= 0:\n{text}");
    let counts = issued(&text);
    assert_eq!(counts.len(), jobs, "one issued line per job:\n{text}");
    for (reads, writes) in counts {
        assert!(
            writes > 100 && reads == writes,
            "the verify pass must read every block written (reads {reads}, writes {writes}):\n{text}"
        );
    }
}

#[test]
fn fio_random_writes_verify_crc32c_at_depth_32() {
    let cluster = Cluster::builder().nodes(3).distinct_zones().start();
    cluster.format(2);
    cluster.dog_ok(0, &["vdi", "create", "fio", "64M"]);

    let job = format!(
        "[global]\n\
         ioengine=nbd\n\
         uri={uri}\n\
         rw=randwrite\n\
         bsrange=4k-64k\n\
         iodepth=32\n\
         verify=crc32c\n\
         do_verify=1\n\
         verify_fatal=1\n\
         runtime=120\n\
         [randwrite-then-check]\n\
         size=64m\n",
        uri = cluster.nbd_uri(0, "fio")
    );
    run_fio(&cluster, &job, 1);

    // Two connections at once through another node, each on its own 32 MiB half.
    let job = format!(
        "[global]\n\
         ioengine=nbd\n\
         uri={uri}\n\
         rw=randwrite\n\
         bsrange=4k-64k\n\
         iodepth=32\n\
         verify=crc32c\n\
         do_verify=1\n\
         verify_fatal=1\n\
         runtime=120\n\
         size=32m\n\
         [half0]\n\
         offset=0\n\
         [half1]\n\
         offset=32m\n",
        uri = cluster.nbd_uri(1, "fio")
    );
    run_fio(&cluster, &job, 2);
    for i in 0..3 {
        cluster.assert_no_panic(i);
    }
}
