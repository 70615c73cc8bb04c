//! [`Qemu`]: QEMU 5.2's Sheepdog client as `block/sheepdog.c` drives snapshots. It opens an
//! image and runs QEMU's request sequences, recording every request with the connection it used
//! (the wire format is in [`crate::wire`]).

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sheepfold_tests::text::sd_hash_vdi;

use crate::wire::*;

/// A short connection (`connect_to_sdog`).
pub(crate) struct Conn {
    pub(crate) id: u32,
    pub(crate) s: TcpStream,
}

/// What [`Qemu::snapshot_list`] reports per snapshot (`QEMUSnapshotInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapInfo {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) date_sec: u32,
    pub(crate) date_nsec: u32,
}

/// QEMU 5.2's `BDRVSheepdogState`, reduced to what the snapshot paths use.
pub(crate) struct Qemu {
    pub(crate) addr: SocketAddr,
    pub(crate) name: String,
    pub(crate) inode: Vec<u8>,
    pub(crate) is_snapshot: bool,
    pub(crate) io: TcpStream,
    pub(crate) next_id: u32,
    pub(crate) conns: u32,
    pub(crate) cache_flags: u16,
    pub(crate) log: Vec<Wire>,
}

pub(crate) type Res<T> = Result<T, String>;

impl Qemu {
    pub(crate) fn connect(addr: SocketAddr) -> Res<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// `connect_to_sdog`.
    pub(crate) fn short(&mut self) -> Res<Conn> {
        self.conns += 1;
        Ok(Conn {
            id: self.conns,
            s: Self::connect(self.addr)?,
        })
    }

    /// Sends a header and payload on `s`, reads the reply header and `min(rlen, rsp len)`
    /// bytes, records it all.
    pub(crate) fn exchange(
        log: &mut Vec<Wire>,
        conn: u32,
        s: &mut TcpStream,
        hdr: [u8; 48],
        payload: &[u8],
        rlen: usize,
    ) -> Res<(Wire, Vec<u8>)> {
        let mut msg = hdr.to_vec();
        msg.extend_from_slice(payload);
        s.write_all(&msg).map_err(|e| format!("send: {e}"))?;
        let mut rsp = [0u8; 48];
        s.read_exact(&mut rsp)
            .map_err(|e| format!("reply to op {:#04x}: {e}", hdr[1]))?;
        let n = (u32_at(&rsp, 12) as usize).min(rlen);
        let mut data = vec![0u8; n];
        s.read_exact(&mut data)
            .map_err(|e| format!("reply data of op {:#04x}: {e}", hdr[1]))?;
        let w = Wire {
            conn,
            hdr,
            payload: payload[..payload.len().min(8192)].to_vec(),
            payload_len: payload.len(),
            rsp,
            data_len: n,
        };
        log.push(w.clone());
        Ok((w, data))
    }

    pub(crate) fn on(
        &mut self,
        c: &mut Conn,
        hdr: [u8; 48],
        payload: &[u8],
        rlen: usize,
    ) -> Res<(Wire, Vec<u8>)> {
        Self::exchange(&mut self.log, c.id, &mut c.s, hdr, payload, rlen)
    }

    pub(crate) fn on_io(
        &mut self,
        mut hdr: [u8; 48],
        payload: &[u8],
        rlen: usize,
    ) -> Res<(Wire, Vec<u8>)> {
        let id = self.next_id;
        self.next_id += 1;
        hdr[8..12].copy_from_slice(&id.to_le_bytes());
        Self::exchange(&mut self.log, 0, &mut self.io, hdr, payload, rlen)
    }

    // -- inode fields --
    pub(crate) fn vid(&self) -> u32 {
        u32_at(&self.inode, 560)
    }
    pub(crate) fn vdi_size(&self) -> u64 {
        u64_at(&self.inode, 536)
    }
    pub(crate) fn nr_copies(&self) -> u8 {
        self.inode[554]
    }
    pub(crate) fn copy_policy(&self) -> u8 {
        self.inode[552]
    }
    pub(crate) fn block_size_shift(&self) -> u8 {
        self.inode[555]
    }
    pub(crate) fn object_size(&self) -> u64 {
        1 << self.block_size_shift()
    }
    pub(crate) fn data_vdi_id(&self, idx: u64) -> u32 {
        u32_at(&self.inode, HEADER + 4 * idx as usize)
    }
    pub(crate) fn set_data_vdi_id(&mut self, idx: u64, vid: u32) {
        let o = HEADER + 4 * idx as usize;
        self.inode[o..o + 4].copy_from_slice(&vid.to_le_bytes());
    }

    /// `find_vdi_name`: LOCK_VDI (lock) or GET_VDI_INFO, proto 1, name[256] + tag[256].
    pub(crate) fn find_vdi_name(&mut self, snapid: u32, tag: &str, lock: bool) -> Res<u32> {
        let mut c = self.short()?;
        let mut data = fixed(&self.name, 256);
        data.extend_from_slice(&fixed(tag, 256));
        let (op, lock_type) = if lock {
            (LOCK_VDI, 0)
        } else {
            (GET_VDI_INFO, 0)
        };
        let hdr = vdi_req(
            QEMU_PROTO_VER,
            op,
            FLAG_WRITE,
            512,
            Vdi {
                snapid,
                lock_type,
                ..Vdi::default()
            },
        );
        let (w, _) = self.on(&mut c, hdr, &data, 0)?;
        match w.result() {
            SUCCESS => Ok(w.vdi_id()),
            r => Err(format!(
                "cannot get vdi info, result {r:#04x}, {} {snapid} {tag}",
                self.name
            )),
        }
    }

    /// `sd_open` of `sheepdog://ADDR/NAME[#snapid|#tag]`.
    pub(crate) fn open(addr: SocketAddr, name: &str, snapid: u32, tag: &str) -> Res<Self> {
        let io = Self::connect(addr)?;
        let mut q = Qemu {
            addr,
            name: name.to_owned(),
            inode: Vec::new(),
            is_snapshot: snapid != 0 || !tag.is_empty(),
            io,
            next_id: 0,
            conns: 0,
            cache_flags: FLAG_CACHE,
            log: Vec::new(),
        };
        let vid = q.find_vdi_name(snapid, tag, true)?;
        let mut c = q.short()?;
        let hdr = obj_req(
            READ_OBJ,
            q.cache_flags,
            0,
            QEMU_INODE_SIZE as u32,
            inode_oid(vid),
            0,
            0,
            0,
        );
        let (w, data) = q.on(&mut c, hdr, &[], QEMU_INODE_SIZE)?;
        if w.result() != SUCCESS || data.len() != QEMU_INODE_SIZE {
            return Err(format!("Can't read snapshot inode: {}", w.describe()));
        }
        q.inode = data;
        Ok(q)
    }

    /// `reload_inode(snapid, tag)`: its own connection first, then find_vdi_name (no lock) on
    /// another, then the 4664-byte header on the first; the header replaces ours if the vid
    /// changed, the index stays.
    pub(crate) fn reload_inode(&mut self, snapid: u32, tag: &str) -> Res<()> {
        let mut c = self.short()?;
        let vid = self.find_vdi_name(snapid, tag, false)?;
        let copies = self.nr_copies();
        let flags = self.cache_flags;
        let hdr = obj_req(
            READ_OBJ,
            flags,
            0,
            HEADER as u32,
            inode_oid(vid),
            0,
            copies,
            0,
        );
        let (w, data) = self.on(&mut c, hdr, &[], HEADER)?;
        if w.result() != SUCCESS {
            return Err(format!("reload_inode: {}", w.describe()));
        }
        if u32_at(&data, 560) != self.vid() {
            self.inode[..HEADER].copy_from_slice(&data);
        }
        Ok(())
    }

    /// `sd_delete`: DEL_VDI of the working VDI, name only, base_vdi_id = our vid.
    pub(crate) fn sd_delete(&mut self) -> Res<bool> {
        let mut c = self.short()?;
        let hdr = vdi_req(
            0,
            DEL_VDI,
            FLAG_WRITE,
            256,
            Vdi {
                base_vdi_id: self.vid(),
                ..Vdi::default()
            },
        );
        let name = fixed(&self.name, 256);
        let (w, _) = self.on(&mut c, hdr, &name, 0)?;
        Ok(matches!(w.result(), SUCCESS | NO_VDI))
    }

    /// `do_sd_create`: NEW_VDI, base = our vid, our size/copies/policy/shift.
    pub(crate) fn do_sd_create(&mut self, snapshot: u32) -> Res<u32> {
        let mut c = self.short()?;
        let hdr = vdi_req(
            0,
            NEW_VDI,
            FLAG_WRITE,
            256,
            Vdi {
                vdi_size: self.vdi_size(),
                base_vdi_id: self.vid(),
                copies: self.nr_copies(),
                copy_policy: self.copy_policy(),
                block_size_shift: self.block_size_shift(),
                snapid: snapshot,
                lock_type: 0,
            },
        );
        let name = fixed(&self.name, 256);
        let (w, _) = self.on(&mut c, hdr, &name, 0)?;
        match w.result() {
            SUCCESS => Ok(w.vdi_id()),
            r => Err(format!("NEW_VDI: result {r:#04x}, {}", self.name)),
        }
    }

    /// `sd_create_branch`.
    pub(crate) fn create_branch(&mut self) -> Res<()> {
        let deleted = self.sd_delete()?;
        let vid = self.do_sd_create(u32::from(!deleted))?;
        let mut c = self.short()?;
        let (copies, flags) = (self.nr_copies(), self.cache_flags);
        let hdr = obj_req(
            READ_OBJ,
            flags,
            0,
            QEMU_INODE_SIZE as u32,
            inode_oid(vid),
            0,
            copies,
            0,
        );
        let (w, data) = self.on(&mut c, hdr, &[], QEMU_INODE_SIZE)?;
        if w.result() != SUCCESS || data.len() != QEMU_INODE_SIZE {
            return Err(format!("create_branch: {}", w.describe()));
        }
        self.inode = data;
        self.is_snapshot = false;
        Ok(())
    }

    /// Reads `len` bytes at `offset` (unallocated objects are zeros, no request).
    pub(crate) fn read(&mut self, offset: u64, len: u64) -> Res<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        let os = self.object_size();
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let (idx, off) = (pos / os, pos % os);
            let n = (os - off).min(len - done);
            let owner = self.data_vdi_id(idx);
            if owner != 0 {
                let (copies, flags) = (self.nr_copies(), self.cache_flags);
                let hdr = obj_req(
                    READ_OBJ,
                    flags,
                    0,
                    n as u32,
                    data_oid(owner, idx),
                    0,
                    copies,
                    off,
                );
                let (w, data) = self.on_io(hdr, &[], n as usize)?;
                if w.result() != SUCCESS || data.len() != n as usize {
                    return Err(format!("read: {}", w.describe()));
                }
                out[done as usize..(done + n) as usize].copy_from_slice(&data);
            }
            done += n;
        }
        Ok(out)
    }

    /// `sd_co_writev`: branches first if opened on a snapshot; one request per object, re-sent
    /// after SD_RES_READONLY; then one index update for the objects created.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Res<()> {
        if self.is_snapshot {
            self.create_branch()?;
        }
        let os = self.object_size();
        let (mut min, mut max) = (u64::MAX, 0u64);
        let mut done = 0u64;
        let len = data.len() as u64;
        while done < len {
            let pos = offset + done;
            let (idx, off) = (pos / os, pos % os);
            let n = (os - off).min(len - done);
            let piece = &data[done as usize..(done + n) as usize];
            // sd_co_rw_vector: create / copy-on-write / plain write.
            let owner = self.data_vdi_id(idx);
            let (mut create, mut flags, mut cow) = (false, 0u16, 0u64);
            let mut oid = data_oid(owner, idx);
            if owner == 0 {
                create = true;
            } else if owner != self.vid() {
                create = true;
                cow = oid;
                flags = FLAG_COW;
            }
            if create {
                oid = data_oid(self.vid(), idx);
            }
            loop {
                let op = if create {
                    CREATE_AND_WRITE_OBJ
                } else {
                    WRITE_OBJ
                };
                let copies = self.nr_copies();
                let hdr = obj_req(
                    op,
                    FLAG_WRITE | flags | self.cache_flags,
                    0,
                    n as u32,
                    oid,
                    cow,
                    copies,
                    off,
                );
                let (w, _) = self.on_io(hdr, piece, 0)?;
                match w.result() {
                    SUCCESS => break,
                    READONLY => {
                        // aio_read_response: reload if the object is ours, retarget, resend.
                        if self.vid() == oid_vid(oid) {
                            self.reload_inode(0, "")?;
                        }
                        oid = data_oid(self.vid(), idx);
                        // resend_aioreq: the request may become copy-on-write.
                        create = false;
                        if self.data_vdi_id(idx) != self.vid() {
                            if self.data_vdi_id(idx) != 0 {
                                cow = data_oid(self.data_vdi_id(idx), idx);
                                flags |= FLAG_COW;
                            }
                            create = true;
                        }
                    }
                    r => return Err(format!("write: result {r:#04x}: {}", w.describe())),
                }
            }
            if create {
                self.set_data_vdi_id(idx, self.vid());
                min = min.min(idx);
                max = max.max(idx);
            }
            done += n;
        }
        if min <= max {
            // sd_write_done.
            let off = HEADER + 4 * min as usize;
            let len = 4 * (max - min + 1) as usize;
            let (copies, flags) = (self.nr_copies(), self.cache_flags);
            let hdr = obj_req(
                WRITE_OBJ,
                FLAG_WRITE | flags,
                0,
                len as u32,
                inode_oid(self.vid()),
                0,
                copies,
                off as u64,
            );
            let payload = self.inode[off..off + len].to_vec();
            let (w, _) = self.on_io(hdr, &payload, 0)?;
            if w.result() != SUCCESS {
                return Err(format!("index update: {}", w.describe()));
            }
        }
        Ok(())
    }

    /// `sd_snapshot_create`.
    pub(crate) fn snapshot_create(&mut self, tag: &str) -> Res<u32> {
        if self.is_snapshot {
            return Err("You can't create a snapshot of a snapshot VDI".into());
        }
        self.inode[544..552].fill(0); // vm_state_size
        self.inode[528..536].fill(0); // vm_clock_nsec
        self.inode[256..512].copy_from_slice(&fixed(tag, 256));
        let mut c = self.short()?;
        let (vid, copies, flags) = (self.vid(), self.nr_copies(), self.cache_flags);
        let hdr = obj_req(
            WRITE_OBJ,
            FLAG_WRITE | flags,
            0,
            HEADER as u32,
            inode_oid(vid),
            0,
            copies,
            0,
        );
        let header = self.inode[..HEADER].to_vec();
        let (w, _) = self.on(&mut c, hdr, &header, 0)?;
        if w.result() != SUCCESS {
            return Err(format!(
                "failed to write snapshot's inode: {}",
                w.describe()
            ));
        }
        let new_vid = self.do_sd_create(1)?;
        let hdr = obj_req(
            READ_OBJ,
            flags,
            0,
            HEADER as u32,
            inode_oid(new_vid),
            0,
            copies,
            0,
        );
        let (w, data) = self.on(&mut c, hdr, &[], HEADER)?;
        if w.result() != SUCCESS {
            return Err(format!("failed to read new inode info: {}", w.describe()));
        }
        self.inode[..HEADER].copy_from_slice(&data);
        Ok(new_vid)
    }

    /// `sd_snapshot_list`.
    pub(crate) fn snapshot_list(&mut self) -> Res<Vec<SnapInfo>> {
        let mut c = self.short()?;
        let hdr = header(0, READ_VDIS, 0, 0, VDI_BITMAP_BYTES as u32);
        let (w, bitmap) = self.on(&mut c, hdr, &[], VDI_BITMAP_BYTES)?;
        if w.result() != SUCCESS || bitmap.len() != VDI_BITMAP_BYTES {
            return Err(format!(
                "READ_VDIS: {} ({} bytes)",
                w.describe(),
                bitmap.len()
            ));
        }
        drop(c);
        let mut c = self.short()?;
        let mut found = Vec::new();
        let mut vid = sd_hash_vdi(&self.name);
        while found.len() < 1024 {
            if bitmap[(vid / 8) as usize] & (1 << (vid % 8)) == 0 {
                break;
            }
            let flags = self.cache_flags;
            let hdr = obj_req(READ_OBJ, flags, 0, HEADER as u32, inode_oid(vid), 0, 0, 0);
            let (w, h) = self.on(&mut c, hdr, &[], HEADER)?;
            if w.result() == SUCCESS && h.len() == HEADER {
                let name_end = h[..256].iter().position(|&b| b == 0).unwrap_or(256);
                let snap_ctime = u64_at(&h, 520);
                if h[..name_end] == *self.name.as_bytes() && snap_ctime != 0 {
                    let tag_end = 256 + h[256..512].iter().position(|&b| b == 0).unwrap_or(256);
                    found.push(SnapInfo {
                        id: u32_at(&h, 556),
                        name: String::from_utf8_lossy(&h[256..tag_end]).into_owned(),
                        date_sec: (snap_ctime >> 32) as u32,
                        date_nsec: snap_ctime as u32,
                    });
                }
            }
            vid = (vid + 1) % NR_VDIS;
        }
        Ok(found)
    }

    /// `sd_snapshot_goto` with a tag (or an id if `id_or_tag` is all digits).
    pub(crate) fn snapshot_goto(&mut self, id_or_tag: &str) -> Res<()> {
        let (snapid, tag) = match id_or_tag.parse::<u32>() {
            Ok(id) => (id, ""),
            Err(_) => (0, id_or_tag),
        };
        let saved = (self.inode.clone(), self.is_snapshot);
        let r = self
            .reload_inode(snapid, tag)
            .and_then(|_| self.create_branch());
        if r.is_err() {
            (self.inode, self.is_snapshot) = saved;
        }
        r
    }

    /// `sd_snapshot_delete` by numeric id: `remove_objects` on the open inode, LOCK_VDI,
    /// DEL_VDI with name + empty tag and snapid.
    pub(crate) fn snapshot_delete(&mut self, snapshot_id: &str) -> Res<()> {
        let mut c = self.short()?;
        let nr_objs = self.vdi_size().div_ceil(self.object_size()) as usize;
        let mut i = 0;
        while i < nr_objs {
            while i < nr_objs && self.data_vdi_id(i as u64) == 0 {
                i += 1;
            }
            let start = i;
            let mut filled = 0;
            while i < nr_objs && filled < NR_BATCHED_DISCARD {
                if self.data_vdi_id(i as u64) != 0 {
                    self.set_data_vdi_id(i as u64, 0);
                    filled += 1;
                }
                i += 1;
            }
            let (vid, copies, flags) = (self.vid(), self.nr_copies(), self.cache_flags);
            let len = (i - start) * 4;
            let off = HEADER + 4 * start;
            let hdr = obj_req(
                WRITE_OBJ,
                FLAG_WRITE | flags,
                0,
                len as u32,
                inode_oid(vid),
                0,
                copies,
                off as u64,
            );
            let payload = self.inode[off..off + len].to_vec();
            let (w, _) = self.on(&mut c, hdr, &payload, 0)?;
            if w.result() != SUCCESS {
                return Err(format!(
                    "Failed to discard snapshot inode: {}",
                    w.describe()
                ));
            }
        }
        drop(c);
        let snap_id: u32 = snapshot_id
            .parse()
            .map_err(|_| format!("Invalid snapshot ID: {snapshot_id}"))?;
        let mut buf = fixed(&self.name, 256);
        buf.extend_from_slice(&[0u8; 256]);
        self.find_vdi_name(snap_id, "", true)?;
        let mut c = self.short()?;
        let hdr = vdi_req(
            0,
            DEL_VDI,
            FLAG_WRITE,
            512,
            Vdi {
                snapid: snap_id,
                ..Vdi::default()
            },
        );
        let (w, _) = self.on(&mut c, hdr, &buf, 0)?;
        match w.result() {
            SUCCESS => Ok(()),
            NO_VDI => Err("Can't find the snapshot".into()),
            r => Err(format!("DEL_VDI: result {r:#04x}")),
        }
    }
}
