//! What the live VDIs reference and what the stores hold: VDI lookups and inode indexes read
//! over the Sheepdog protocol, `dog vdi list -r` parsed, and the object files on every node.

use super::*;

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
