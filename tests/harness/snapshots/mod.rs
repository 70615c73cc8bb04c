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

mod stores;
pub use stores::*;

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
