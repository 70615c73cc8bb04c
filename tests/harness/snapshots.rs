//! Helpers for the snapshot and clone tests (issue 4): expected-content models, NBD reads and
//! writes through real clients, a raw NBD write that bypasses client-side checks, VDI indexes
//! read over the Sheepdog protocol, and the objects the stores hold.
//!
//! - [`Model`]: what a VDI should contain. An optional local base file (a sparse raw image) plus
//!   writes applied in order, so fifty clones of a 20 GiB disk cost a few MiB of memory.
//! - [`write_nbd`]: `qemu-io -f raw nbd://... -c "write -s FILE OFF LEN"` per write, in order.
//! - [`read_ranges`]: one `qemu-img convert` whose sources are `raw` slices (`offset`, `size`)
//!   of the NBD export; qemu-img concatenates them into one local file.
//! - [`read_all`]: the whole export with `nbdcopy nbd://... -`.
//! - [`nbd_raw_write`]: a hand-made NBD client (fixed newstyle, NBD_OPT_EXPORT_NAME, one
//!   NBD_CMD_WRITE) for exports a real client refuses to write (read-only snapshots).
//! - [`lookup`], [`read_index`], [`referenced_objects`]: GET_VDI_INFO and READ_OBJ of the
//!   inode's `data_vdi_id[]`, to know which data objects the live VDIs reference.
//! - [`stored_objects`], [`assert_stores_hold`]: the object files on every node.
//!
//! External clients run with their working directory set to a temp dir.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::data::{self, data_oid_name, OBJECT_SIZE};
use crate::tools::{all_output, tool, TOOL_IO_TIMEOUT};
use crate::wait::poll_until;
use crate::Cluster;

/// One MiB.
pub const MIB: u64 = 1 << 20;

/// Object size (block_size_shift 22).
pub const OBJ: u64 = OBJECT_SIZE;

/// `data` written at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// First byte.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Write {
    /// `data` at `offset`.
    pub fn new(offset: u64, data: Vec<u8>) -> Self {
        Write { offset, data }
    }

    /// `len` seeded pseudo-random bytes at `offset`.
    pub fn random(offset: u64, len: u64, seed: u64) -> Self {
        Write::new(offset, data::random_bytes(seed, len as usize))
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// Indices of the objects this write touches.
    pub fn objects(&self) -> impl Iterator<Item = u64> {
        let last = (self.end() - 1) / OBJ;
        self.offset / OBJ..=last
    }
}

/// The objects a set of writes touches.
pub fn objects_of(writes: &[Write]) -> BTreeSet<u64> {
    writes.iter().flat_map(Write::objects).collect()
}

/// What a VDI should contain: zeros or a local base file, then writes in order.
#[derive(Debug, Clone)]
pub struct Model {
    size: u64,
    base: Option<Arc<PathBuf>>,
    writes: Vec<Write>,
}

impl Model {
    /// A fresh VDI of `size` bytes: all zeros.
    pub fn zeros(size: u64) -> Self {
        Model {
            size,
            base: None,
            writes: Vec::new(),
        }
    }

    /// A VDI whose content is the local raw file `path` (at least `size` bytes long).
    pub fn from_file(path: &Path, size: u64) -> Self {
        Model {
            size,
            base: Some(Arc::new(path.to_path_buf())),
            writes: Vec::new(),
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Applies `writes` in order.
    pub fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            assert!(
                w.end() <= self.size,
                "write {}+{} beyond the model",
                w.offset,
                w.data.len()
            );
            self.writes.push(w.clone());
        }
    }

    /// Objects touched by the writes applied to this model (not by its base file).
    pub fn written_objects(&self) -> BTreeSet<u64> {
        objects_of(&self.writes)
    }

    /// The expected bytes `offset..offset + len`.
    pub fn range(&self, offset: u64, len: u64) -> Vec<u8> {
        assert!(offset + len <= self.size, "range beyond the model");
        let mut buf = vec![0u8; len as usize];
        if let Some(path) = &self.base {
            let f = File::open(path.as_path())
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            let flen = f.metadata().map(|m| m.len()).unwrap_or(0);
            let n = flen.saturating_sub(offset).min(len) as usize;
            if n > 0 {
                f.read_exact_at(&mut buf[..n], offset)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            }
        }
        let end = offset + len;
        for w in &self.writes {
            let (s, e) = (w.offset.max(offset), w.end().min(end));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&w.data[(s - w.offset) as usize..(e - w.offset) as usize]);
            }
        }
        buf
    }

    /// The whole expected content.
    pub fn bytes(&self) -> Vec<u8> {
        self.range(0, self.size)
    }
}

/// QEMU's `nbd` block driver options for `export` on node `node`, as JSON.
pub fn nbd_json(cluster: &Cluster, node: usize, export: &str) -> String {
    format!(
        r#"{{"driver":"nbd","server":{{"type":"inet","host":"127.0.0.1","port":"{}"}},"export":"{}"}}"#,
        cluster.nbd_port(node),
        export
    )
}

/// Writes `writes` in order into `export` through node `node`'s NBD server with one qemu-io
/// process (`write -s FILE OFF LEN`, the payloads staged as files in `workdir`).
pub fn write_nbd(cluster: &Cluster, node: usize, export: &str, writes: &[Write], workdir: &Path) {
    if writes.is_empty() {
        return;
    }
    let stage = tempfile::tempdir_in(workdir).expect("staging dir");
    let mut cmd = tool("qemu-io");
    cmd.current_dir(workdir)
        .args(["-f", "raw"])
        .arg(cluster.nbd_uri(node, export));
    for (k, w) in writes.iter().enumerate() {
        let path = stage.path().join(format!("w{k}"));
        std::fs::write(&path, &w.data).expect("stage a write");
        cmd.arg("-c").arg(format!(
            "write -s {} {} {}",
            path.display(),
            w.offset,
            w.data.len()
        ));
    }
    let out = cluster.tool_ok(cmd, TOOL_IO_TIMEOUT);
    let text = all_output(&out);
    let wrote = text.matches("wrote ").count();
    assert_eq!(
        wrote,
        writes.len(),
        "qemu-io into {export} through node {node}: {} of {} writes reported:\n{text}",
        wrote,
        writes.len()
    );
}

/// Reads the byte ranges `(offset, len)` of `export` through node `node`'s NBD server with
/// one `qemu-img convert` (each range a `raw` slice of the export; qemu-img concatenates its
/// sources). Returns one buffer per range.
pub fn read_ranges(
    cluster: &Cluster,
    node: usize,
    export: &str,
    ranges: &[(u64, u64)],
    workdir: &Path,
) -> Vec<Vec<u8>> {
    if ranges.is_empty() {
        return Vec::new();
    }
    let out_file = tempfile::Builder::new()
        .prefix("ranges-")
        .suffix(".raw")
        .tempfile_in(workdir)
        .expect("temp file");
    let out_path = out_file.path().to_path_buf();
    let nbd = nbd_json(cluster, node, export);
    let mut cmd = tool("qemu-img");
    cmd.current_dir(workdir).args(["convert", "-O", "raw"]);
    for &(offset, len) in ranges {
        cmd.arg(format!(
            r#"json:{{"driver":"raw","offset":{offset},"size":{len},"file":{nbd}}}"#
        ));
    }
    cmd.arg(&out_path);
    cluster.tool_ok(cmd, TOOL_IO_TIMEOUT);
    let all = std::fs::read(&out_path).expect("read qemu-img output");
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    assert_eq!(
        all.len() as u64,
        total,
        "qemu-img convert of {} ranges of {export} wrote {} bytes, want {total}",
        ranges.len(),
        all.len()
    );
    let mut pos = 0usize;
    ranges
        .iter()
        .map(|&(_, len)| {
            let part = all[pos..pos + len as usize].to_vec();
            pos += len as usize;
            part
        })
        .collect()
}

/// Compares whole objects `objects` of `export` (read through node `node`) with `model`.
pub fn assert_objects_match(
    cluster: &Cluster,
    node: usize,
    export: &str,
    model: &Model,
    objects: &BTreeSet<u64>,
    workdir: &Path,
) {
    let ranges: Vec<(u64, u64)> = objects
        .iter()
        .map(|&i| (i * OBJ, OBJ.min(model.size() - i * OBJ)))
        .collect();
    let got = read_ranges(cluster, node, export, &ranges, workdir);
    for ((offset, len), data) in ranges.iter().zip(&got) {
        let want = model.range(*offset, *len);
        if *data != want {
            let at = data
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{export} through node {node}: object {} differs from the model at byte {at} \
                 of the object (got {:02x?}, want {:02x?})\n{}",
                offset / OBJ,
                &data[at..(at + 16).min(data.len())],
                &want[at..(at + 16).min(want.len())],
                cluster.all_log_tails()
            );
        }
    }
}

/// The whole `export` through node `node`'s NBD server (`nbdcopy nbd://... -`).
pub fn read_all(cluster: &Cluster, node: usize, export: &str, workdir: &Path) -> Vec<u8> {
    let mut cmd = tool("nbdcopy");
    cmd.current_dir(workdir)
        .arg(cluster.nbd_uri(node, export))
        .arg("-");
    cluster.tool_ok(cmd, TOOL_IO_TIMEOUT).stdout
}

/// Reads the whole `export` through node `node` and compares it with `model`.
pub fn assert_vdi(cluster: &Cluster, node: usize, export: &str, model: &Model, workdir: &Path) {
    let got = read_all(cluster, node, export, workdir);
    let want = model.bytes();
    if got != want {
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{export} through node {node}: got {} bytes, want {}; first difference at byte {at} \
             (object {}, offset {} in it)\n{}",
            got.len(),
            want.len(),
            at as u64 / OBJ,
            at as u64 % OBJ,
            cluster.all_log_tails()
        );
    }
}

/// What an NBD server answered to [`nbd_raw_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdWriteReply {
    /// Transmission flags of the export (bit 1: NBD_FLAG_READ_ONLY).
    pub transmission_flags: u16,
    /// The simple reply's error (0 = success, 1 = EPERM, ...).
    pub error: u32,
}

/// NBD_FLAG_READ_ONLY in the transmission flags.
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;

/// Connects to `port`, selects `export` with NBD_OPT_EXPORT_NAME (fixed newstyle, no
/// structured replies), sends one NBD_CMD_WRITE of `data` at `offset` whatever the export's
/// flags say, reads the simple reply, then NBD_CMD_DISC. Real clients refuse to write to a
/// read-only export before sending anything; this one asks the server.
pub fn nbd_raw_write(
    port: u16,
    export: &str,
    offset: u64,
    data: &[u8],
) -> Result<NbdWriteReply, String> {
    const NBDMAGIC: &[u8; 8] = b"NBDMAGIC";
    const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
    const REQUEST_MAGIC: u32 = 0x2560_9513;
    const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
    const NBD_OPT_EXPORT_NAME: u32 = 1;
    const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1;
    const NBD_FLAG_C_NO_ZEROES: u32 = 2;
    const NBD_FLAG_NO_ZEROES: u16 = 2;
    const NBD_CMD_WRITE: u16 = 1;
    const NBD_CMD_DISC: u16 = 2;
    let err = |what: &str, e: std::io::Error| format!("NBD {what}: {e}");

    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| err("connect", e))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| err("timeout", e))?;
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).map_err(|e| err("greeting", e))?;
    if &hello[..8] != NBDMAGIC || u64::from_be_bytes(hello[8..16].try_into().unwrap()) != IHAVEOPT {
        return Err(format!("not a newstyle NBD greeting: {hello:02x?}"));
    }
    let server_flags = u16::from_be_bytes([hello[16], hello[17]]);
    let mut client_flags = NBD_FLAG_C_FIXED_NEWSTYLE;
    if server_flags & NBD_FLAG_NO_ZEROES != 0 {
        client_flags |= NBD_FLAG_C_NO_ZEROES;
    }
    let mut msg = client_flags.to_be_bytes().to_vec();
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&NBD_OPT_EXPORT_NAME.to_be_bytes());
    msg.extend_from_slice(&(export.len() as u32).to_be_bytes());
    msg.extend_from_slice(export.as_bytes());
    s.write_all(&msg).map_err(|e| err("option", e))?;
    let mut info = [0u8; 10];
    s.read_exact(&mut info)
        .map_err(|e| err("export info (the server may have refused the name)", e))?;
    let transmission_flags = u16::from_be_bytes([info[8], info[9]]);
    if client_flags & NBD_FLAG_C_NO_ZEROES == 0 {
        let mut zeros = [0u8; 124];
        s.read_exact(&mut zeros).map_err(|e| err("padding", e))?;
    }

    let mut req = REQUEST_MAGIC.to_be_bytes().to_vec();
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&NBD_CMD_WRITE.to_be_bytes());
    req.extend_from_slice(&0x5eed_u64.to_be_bytes());
    req.extend_from_slice(&offset.to_be_bytes());
    req.extend_from_slice(&(data.len() as u32).to_be_bytes());
    req.extend_from_slice(data);
    s.write_all(&req).map_err(|e| err("write request", e))?;
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply)
        .map_err(|e| err("write reply", e))?;
    let magic = u32::from_be_bytes(reply[0..4].try_into().unwrap());
    if magic != SIMPLE_REPLY_MAGIC {
        return Err(format!("unexpected reply magic {magic:#x}: {reply:02x?}"));
    }
    let error = u32::from_be_bytes(reply[4..8].try_into().unwrap());
    let mut disc = REQUEST_MAGIC.to_be_bytes().to_vec();
    disc.extend_from_slice(&0u16.to_be_bytes());
    disc.extend_from_slice(&NBD_CMD_DISC.to_be_bytes());
    disc.extend_from_slice(&[0u8; 20]);
    let _ = s.write_all(&disc);
    Ok(NbdWriteReply {
        transmission_flags,
        error,
    })
}

/// GET_VDI_INFO opcode.
const GET_VDI_INFO: u8 = 0x14;
/// READ_OBJ opcode.
const READ_OBJ: u8 = 0x02;
/// Offset of `data_vdi_id[]` in the inode.
const INDEX_OFFSET: u64 = 4664;

/// One request on a fresh connection; returns the reply header and up to `rlen` bytes.
fn sd_request(port: u16, hdr: &[u8; 48], payload: &[u8], rlen: usize) -> ([u8; 48], Vec<u8>) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut msg = hdr.to_vec();
    msg.extend_from_slice(payload);
    s.write_all(&msg).expect("send a request");
    let mut rsp = [0u8; 48];
    s.read_exact(&mut rsp).expect("reply header");
    let n = (u32::from_le_bytes(rsp[12..16].try_into().unwrap()) as usize).min(rlen);
    let mut data = vec![0u8; n];
    s.read_exact(&mut data).expect("reply data");
    (rsp, data)
}

/// GET_VDI_INFO of `name` (with `tag` or `snapid` for a snapshot) through the data port
/// `port`: `Ok(vid)` or `Err(result code)`.
pub fn lookup(port: u16, name: &str, tag: &str, snapid: u32) -> Result<u32, u32> {
    let mut hdr = [0u8; 48];
    hdr[0] = 0x02;
    hdr[1] = GET_VDI_INFO;
    hdr[2..4].copy_from_slice(&1u16.to_le_bytes()); // WRITE
    hdr[12..16].copy_from_slice(&512u32.to_le_bytes());
    hdr[32..36].copy_from_slice(&snapid.to_le_bytes());
    let mut payload = vec![0u8; 512];
    payload[..name.len()].copy_from_slice(name.as_bytes());
    payload[256..256 + tag.len()].copy_from_slice(tag.as_bytes());
    let (rsp, _) = sd_request(port, &hdr, &payload, 0);
    match u32::from_le_bytes(rsp[16..20].try_into().unwrap()) {
        0 => Ok(u32::from_le_bytes(rsp[24..28].try_into().unwrap())),
        code => Err(code),
    }
}

/// `READ_OBJ` of `len` bytes at `offset` of object `oid` through `port`.
pub fn read_object(port: u16, oid: u64, offset: u64, len: u32) -> Result<Vec<u8>, u32> {
    let mut hdr = [0u8; 48];
    hdr[0] = 0x02;
    hdr[1] = READ_OBJ;
    hdr[12..16].copy_from_slice(&len.to_le_bytes());
    hdr[16..24].copy_from_slice(&oid.to_le_bytes());
    hdr[40..44].copy_from_slice(&(offset as u32).to_le_bytes());
    let (rsp, data) = sd_request(port, &hdr, &[], len as usize);
    match u32::from_le_bytes(rsp[16..20].try_into().unwrap()) {
        0 => Ok(data),
        code => Err(code),
    }
}

/// The 4664-byte inode header of `vid`.
pub fn read_header(port: u16, vid: u32) -> Vec<u8> {
    let oid = (1u64 << 63) | (u64::from(vid) << 32);
    read_object(port, oid, 0, INDEX_OFFSET as u32)
        .unwrap_or_else(|code| panic!("READ_OBJ of the header of {vid:#x}: result {code:#x}"))
}

/// `data_vdi_id[0..nr]` of `vid`.
pub fn read_index(port: u16, vid: u32, nr: u64) -> Vec<u32> {
    let oid = (1u64 << 63) | (u64::from(vid) << 32);
    let raw = read_object(port, oid, INDEX_OFFSET, (4 * nr) as u32)
        .unwrap_or_else(|code| panic!("READ_OBJ of the index of {vid:#x}: result {code:#x}"));
    raw.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// One line of `dog vdi list -r`: `FLAG NAME ID SIZE USED SHARED CTIME VID COPIES TAG BSS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVdi {
    /// `s`, `c` or `=`.
    pub flag: char,
    /// Name.
    pub name: String,
    /// snap_id for snapshots, 0 for working VDIs.
    pub id: u32,
    /// vdi_size.
    pub size: u64,
    /// Own objects in bytes.
    pub used: u64,
    /// Shared objects in bytes.
    pub shared: u64,
    /// Creation time (Unix seconds).
    pub ctime: i64,
    /// vid.
    pub vid: u32,
    /// Redundancy.
    pub copies: String,
    /// Tag (may be empty).
    pub tag: String,
    /// block_size_shift.
    pub bss: u8,
}

/// Parses `dog vdi list -r` (names without spaces).
pub fn parse_vdi_list_raw(out: &str) -> Vec<RawVdi> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            fn bad<T>(l: &str) -> T {
                panic!("unexpected dog vdi list -r line {l:?}")
            }
            if f.len() != 11 || f[0].chars().count() != 1 {
                bad::<()>(l);
            }
            RawVdi {
                flag: f[0].chars().next().unwrap(),
                name: f[1].to_owned(),
                id: f[2].parse().unwrap_or_else(|_| bad(l)),
                size: f[3].parse().unwrap_or_else(|_| bad(l)),
                used: f[4].parse().unwrap_or_else(|_| bad(l)),
                shared: f[5].parse().unwrap_or_else(|_| bad(l)),
                ctime: f[6].parse().unwrap_or_else(|_| bad(l)),
                vid: u32::from_str_radix(f[7], 16).unwrap_or_else(|_| bad(l)),
                copies: f[8].to_owned(),
                tag: f[9].to_owned(),
                bss: f[10].parse().unwrap_or_else(|_| bad(l)),
            }
        })
        .collect()
}

/// `dog vdi list -r` through node `node`, parsed.
pub fn vdi_list(cluster: &Cluster, node: usize) -> Vec<RawVdi> {
    parse_vdi_list_raw(&cluster.dog_ok(node, &["vdi", "list", "-r"]))
}

/// The data objects (file names) every live VDI references, from their inodes' indexes read
/// through node `node`, and the inode object names of those VDIs.
pub fn referenced_objects(cluster: &Cluster, node: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut data = BTreeSet::new();
    let mut inodes = BTreeSet::new();
    for v in vdi_list(cluster, node) {
        inodes.insert(format!("{:016x}", (1u64 << 63) | (u64::from(v.vid) << 32)));
        let nr = v.size.div_ceil(1 << v.bss);
        for (idx, owner) in read_index(cluster.port(node), v.vid, nr)
            .into_iter()
            .enumerate()
        {
            if owner != 0 {
                data.insert(data_oid_name(owner, idx as u32));
            }
        }
    }
    (data, inodes)
}

/// Object file name -> number of running nodes whose store holds it.
pub fn stored_objects(cluster: &Cluster) -> BTreeMap<String, usize> {
    let sets: Vec<BTreeSet<String>> = cluster
        .running_nodes()
        .into_iter()
        .map(|i| cluster.count_objects(i))
        .collect();
    data::replica_counts(&sets)
}

/// Waits (bounded) until the stores hold exactly the data and inode objects the live VDIs
/// reference (read from their inodes through node 0), each on exactly `copies` nodes:
/// nothing leaked by a delete, nothing lost.
pub fn assert_stores_hold_referenced(cluster: &Cluster, copies: usize, what: &str) {
    poll_until(
        &format!("{what}: stores to hold exactly the referenced objects"),
        Duration::from_secs(15),
        || {
            let (data, inodes) = referenced_objects(cluster, 0);
            let stored = stored_objects(cluster);
            let want: BTreeSet<String> = data.union(&inodes).cloned().collect();
            let have: BTreeSet<String> = stored.keys().cloned().collect();
            let missing: Vec<&String> = want.difference(&have).collect();
            let extra: Vec<&String> = have.difference(&want).collect();
            let wrong: Vec<(&String, &usize)> =
                stored.iter().filter(|(_, &n)| n != copies).collect();
            if missing.is_empty() && extra.is_empty() && wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "missing {missing:?}, not referenced {extra:?}, not on {copies} nodes \
                     {wrong:?}"
                ))
            }
        },
    );
}

/// Waits (bounded) until no node's store holds a data object (`00...`) or an inode object
/// (`80...`).
pub fn assert_no_objects_left(cluster: &Cluster, what: &str) {
    poll_until(
        &format!("{what}: every data and inode object to be gone"),
        Duration::from_secs(15),
        || {
            let left: Vec<String> = stored_objects(cluster)
                .into_keys()
                .filter(|n| data::is_data_object(n) || data::is_inode_object(n))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} left: {left:?}", left.len()))
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_overlays_writes_on_the_base_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base");
        std::fs::write(&path, [1u8; 100]).unwrap();
        let mut m = Model::from_file(&path, 200);
        m.apply(&[Write::new(90, vec![2; 20]), Write::new(95, vec![3; 2])]);
        let b = m.bytes();
        assert_eq!(&b[..90], &[1; 90][..]);
        assert_eq!(&b[90..95], &[2; 5]);
        assert_eq!(&b[95..97], &[3; 2]);
        assert_eq!(&b[97..110], &[2; 13]);
        assert_eq!(&b[110..], &[0; 90][..]);
        assert_eq!(m.range(96, 2), vec![3, 2]);
        assert_eq!(m.written_objects(), BTreeSet::from([0]));
        let w = Write::new(OBJ - 1, vec![0; 2]);
        assert_eq!(w.objects().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn parses_raw_vdi_list() {
        let v = parse_vdi_list_raw(
            "s base 1 4096 4194304 0 1700000000 54c278 2 snap 22\n= base 0 4096 0 4194304 1700000001 54c279 2  22\n",
        );
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].flag, v[0].id, v[0].vid), ('s', 1, 0x54c278));
        assert_eq!(v[0].tag, "snap");
        assert_eq!(
            (v[1].flag, v[1].tag.as_str(), v[1].shared),
            ('=', "", 4194304)
        );
    }
}
