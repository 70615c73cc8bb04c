//! [`SheepdogImage`]: an open image, as QEMU 5.2 keeps it: its inode, one I/O connection with
//! many requests in flight matched by id, and the request sequences of read, write (allocating
//! and copy-on-write), flush, discard and close.

use super::*;

/// What [`SheepdogImage::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// FLUSH_VDI was answered SUCCESS.
    Flushed,
    /// FLUSH_VDI was answered INVALID_PARMS: the image switched to SD_FLAG_CMD_DIRECT.
    CacheDisabled,
    /// Nothing was sent: the image already uses SD_FLAG_CMD_DIRECT.
    NotSent,
}

/// One request sent on the I/O socket, as recorded for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Request id.
    pub id: u32,
    /// Opcode.
    pub opcode: u8,
    /// Flags.
    pub flags: u16,
    /// Object id.
    pub oid: u64,
    /// Offset in the object.
    pub offset: u64,
    /// data_length.
    pub len: u32,
}

/// One request of a pipelined batch.
struct AioReq {
    hdr: [u8; 48],
    payload: Vec<u8>,
}

impl AioReq {
    fn id(&self) -> u32 {
        u32_at(&self.hdr, 8)
    }
    fn is_read(&self) -> bool {
        self.hdr[1] == opcode::READ_OBJ
    }
    fn data_length(&self) -> u32 {
        u32_at(&self.hdr, 12)
    }
}

/// An open image: QEMU's `BDRVSheepdogState`.
#[derive(Debug)]
pub struct SheepdogImage {
    addr: SocketAddr,
    name: String,
    vid: u32,
    inode: Vec<u8>,
    io: TcpStream,
    next_id: u32,
    cache_flags: u16,
    discard_supported: bool,
    sent: Vec<Sent>,
    max_in_flight: usize,
}

impl SheepdogImage {
    /// `sd_open` of `sheepdog://ADDR/NAME` with the default (writeback) cache mode.
    pub fn open(addr: SocketAddr, name: &str) -> Result<Self, SdError> {
        // The I/O socket first (get_sheep_fd), then the lock on a short connection.
        let io = connect(addr)?;
        let mut data = fixed_name(name, NAME_LEN);
        data.extend_from_slice(&fixed_name("", NAME_LEN)); // tag
        let hdr = vdi_request(
            QEMU_PROTO_VER,
            opcode::LOCK_VDI,
            flag::WRITE,
            (2 * NAME_LEN) as u32,
            VdiFields {
                snapid: 0,
                lock_type: LOCK_TYPE_NORMAL,
                ..VdiFields::default()
            },
        );
        let (rsp, _) = do_req(addr, &hdr, &data, 0)?;
        if rsp.result() != result::SUCCESS {
            return Err(SdError::Result {
                op: "LOCK_VDI",
                result: rsp.result(),
            });
        }
        let vid = rsp.vdi_id();

        // The inode, QEMU's size of it, with the cache flag, on another short connection.
        let cache_flags = flag::CACHE;
        let hdr = obj_request(
            opcode::READ_OBJ,
            cache_flags,
            0,
            QEMU_INODE_SIZE as u32,
            ObjFields {
                oid: inode_oid(vid),
                ..ObjFields::default()
            },
        );
        let (rsp, inode) = do_req(addr, &hdr, &[], QEMU_INODE_SIZE)?;
        if rsp.result() != result::SUCCESS {
            return Err(SdError::Result {
                op: "READ_OBJ (inode)",
                result: rsp.result(),
            });
        }
        if inode.len() != QEMU_INODE_SIZE {
            return Err(SdError::Protocol(format!(
                "inode read returned {} bytes, QEMU needs {QEMU_INODE_SIZE}",
                inode.len()
            )));
        }
        let img = Self {
            addr,
            name: name.to_owned(),
            vid,
            inode,
            io,
            next_id: 0,
            cache_flags,
            discard_supported: true,
            sent: Vec::new(),
            max_in_flight: 0,
        };
        if img.inode_vid() != vid {
            return Err(SdError::Protocol(format!(
                "inode of vid {vid:#x} says vdi_id {:#x}",
                img.inode_vid()
            )));
        }
        Ok(img)
    }

    /// The vid LOCK_VDI returned.
    pub fn vid(&self) -> u32 {
        self.vid
    }

    /// `inode.vdi_size`.
    pub fn size(&self) -> u64 {
        u64_at(&self.inode, 536)
    }

    /// `inode.nr_copies`.
    pub fn nr_copies(&self) -> u8 {
        self.inode[554]
    }

    /// `1 << inode.block_size_shift`.
    pub fn object_size(&self) -> u64 {
        1 << self.inode[555]
    }

    /// `inode.vdi_id`.
    fn inode_vid(&self) -> u32 {
        u32_at(&self.inode, 560)
    }

    /// `inode.data_vdi_id[idx]` as this client knows it.
    pub fn data_vdi_id(&self, idx: u64) -> u32 {
        u32_at(&self.inode, INODE_HEADER_SIZE + 4 * idx as usize)
    }

    fn set_data_vdi_id(&mut self, idx: u64, vid: u32) {
        let off = INODE_HEADER_SIZE + 4 * idx as usize;
        self.inode[off..off + 4].copy_from_slice(&vid.to_le_bytes());
    }

    /// The cache flag every I/O request carries now (CACHE, or DIRECT after a refused flush).
    pub fn cache_flags(&self) -> u16 {
        self.cache_flags
    }

    /// Every request sent on the I/O socket so far, in order.
    pub fn sent(&self) -> &[Sent] {
        &self.sent
    }

    /// The most requests that were on the wire without a reply at one time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// `(idx, offset in object, length, offset in the caller's buffer)` per object touched.
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64, u64, usize)>, SdError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size()) {
            return Err(SdError::Protocol(format!(
                "request {offset}+{len} beyond the image size {}",
                self.size()
            )));
        }
        let os = self.object_size();
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let n = (os - pos % os).min(len - done);
            out.push((pos / os, pos % os, n, done as usize));
            done += n;
        }
        Ok(out)
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    fn obj_req(&mut self, op: u8, flags: u16, f: ObjFields, payload: Vec<u8>, len: u32) -> AioReq {
        let id = self.next_id();
        let hdr = obj_request(op, flags, id, len, f);
        self.sent.push(Sent {
            id,
            opcode: op,
            flags,
            oid: f.oid,
            offset: f.offset,
            len,
        });
        AioReq { hdr, payload }
    }

    /// Sends every request (from a writer thread) while reading replies on this thread,
    /// matched by id. Returns `(reply, data)` in request order.
    fn pipeline(&mut self, reqs: Vec<AioReq>) -> Result<Vec<(Reply, Vec<u8>)>, SdError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let index: HashMap<u32, usize> =
            reqs.iter().enumerate().map(|(i, r)| (r.id(), i)).collect();
        let mut writer = self.io.try_clone()?;
        let mut reader = self.io.try_clone()?;
        let sent = AtomicUsize::new(0);
        let mut results: Vec<Option<(Reply, Vec<u8>)>> = vec![None; reqs.len()];
        let mut max_in_flight = 0;
        let outcome = std::thread::scope(|s| {
            let sent = &sent;
            let reqs = &reqs;
            let w = s.spawn(move || -> io::Result<()> {
                for r in reqs {
                    let mut msg = r.hdr.to_vec();
                    msg.extend_from_slice(&r.payload);
                    writer.write_all(&msg)?;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            });
            let mut read_all = || -> Result<(), SdError> {
                for received in 0..reqs.len() {
                    let rsp = read_reply(&mut reader)?;
                    max_in_flight = max_in_flight.max(sent.load(Ordering::SeqCst) - received);
                    let Some(&i) = index.get(&rsp.id()) else {
                        return Err(SdError::Protocol(format!(
                            "reply with unknown id {} (header {:02x?})",
                            rsp.id(),
                            rsp.raw
                        )));
                    };
                    if results[i].is_some() {
                        return Err(SdError::Protocol(format!(
                            "second reply for id {}",
                            rsp.id()
                        )));
                    }
                    let req = &reqs[i];
                    if rsp.opcode() != req.hdr[1] {
                        return Err(SdError::Protocol(format!(
                            "reply to id {} echoes opcode {:#04x}, request had {:#04x}",
                            rsp.id(),
                            rsp.opcode(),
                            req.hdr[1]
                        )));
                    }
                    // QEMU reads rsp.data_length bytes for a read and nothing otherwise.
                    let n = if req.is_read() {
                        rsp.data_length() as usize
                    } else {
                        0
                    };
                    if !req.is_read() && rsp.data_length() != 0 {
                        return Err(SdError::Protocol(format!(
                            "reply to write id {} announces {} data bytes; QEMU would desync",
                            rsp.id(),
                            rsp.data_length()
                        )));
                    }
                    if n > req.data_length() as usize {
                        return Err(SdError::Protocol(format!(
                            "reply to read id {} carries {n} bytes, {} were asked",
                            rsp.id(),
                            req.data_length()
                        )));
                    }
                    let mut data = vec![0u8; n];
                    reader.read_exact(&mut data).map_err(|e| {
                        SdError::Protocol(format!("reading {n} data bytes of id {}: {e}", rsp.id()))
                    })?;
                    results[i] = Some((rsp, data));
                }
                Ok(())
            };
            let read = read_all();
            if read.is_err() {
                // Unblock the writer if the server stopped reading.
                let _ = self.io.shutdown(std::net::Shutdown::Both);
            }
            let wrote = w.join().expect("writer thread");
            read.and(wrote.map_err(SdError::from))
        });
        self.max_in_flight = self.max_in_flight.max(max_in_flight);
        outcome?;
        Ok(results
            .into_iter()
            .map(|r| r.expect("every reply read"))
            .collect())
    }

    /// Reads `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, SdError> {
        Ok(self.read_batch(&[(offset, len)])?.remove(0))
    }

    /// Several reads in flight together; returns their data in order.
    pub fn read_batch(&mut self, reads: &[(u64, usize)]) -> Result<Vec<Vec<u8>>, SdError> {
        let mut bufs: Vec<Vec<u8>> = reads.iter().map(|&(_, len)| vec![0u8; len]).collect();
        let mut reqs = Vec::new();
        let mut targets = Vec::new(); // (read, position in its buffer, length)
        for (r, &(offset, len)) in reads.iter().enumerate() {
            for (idx, obj_off, n, pos) in self.pieces(offset, len as u64)? {
                let owner = self.data_vdi_id(idx);
                if owner == 0 {
                    continue; // unallocated: zeros, no request
                }
                let f = ObjFields {
                    oid: data_oid(owner, idx),
                    cow_oid: 0,
                    copies: self.nr_copies(),
                    offset: obj_off,
                };
                let flags = self.cache_flags;
                reqs.push(self.obj_req(opcode::READ_OBJ, flags, f, Vec::new(), n as u32));
                targets.push((r, pos, n as usize));
            }
        }
        let replies = self.pipeline(reqs)?;
        for ((rsp, data), (r, pos, n)) in replies.into_iter().zip(targets) {
            if rsp.result() != result::SUCCESS {
                return Err(SdError::Result {
                    op: "READ_OBJ",
                    result: rsp.result(),
                });
            }
            if data.len() != n {
                return Err(SdError::Protocol(format!(
                    "READ_OBJ id {} returned {} of {n} bytes",
                    rsp.id(),
                    data.len()
                )));
            }
            bufs[r][pos..pos + n].copy_from_slice(&data);
        }
        Ok(bufs)
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SdError> {
        self.write_batch(&[(offset, data)])
    }

    /// Several writes in flight together, then one inode update for the objects they created.
    /// No two writes of a batch may touch the same object (QEMU serialises those).
    pub fn write_batch(&mut self, writes: &[(u64, &[u8])]) -> Result<(), SdError> {
        let mut reqs = Vec::new();
        let mut created = Vec::new(); // (idx) per request, Some if it creates
        let mut touched = std::collections::BTreeSet::new();
        for &(offset, data) in writes {
            for (idx, obj_off, n, pos) in self.pieces(offset, data.len() as u64)? {
                assert!(
                    touched.insert(idx),
                    "a write batch touches object {idx} twice; QEMU would serialise that"
                );
                let owner = self.data_vdi_id(idx);
                let (op, cow_flag, cow_oid) = if owner == 0 {
                    (opcode::CREATE_AND_WRITE_OBJ, 0, 0)
                } else if owner != self.vid {
                    (
                        opcode::CREATE_AND_WRITE_OBJ,
                        flag::COW,
                        data_oid(owner, idx),
                    )
                } else {
                    (opcode::WRITE_OBJ, 0, 0)
                };
                let f = ObjFields {
                    oid: data_oid(self.vid, idx),
                    cow_oid,
                    copies: self.nr_copies(),
                    offset: obj_off,
                };
                let flags = flag::WRITE | cow_flag | self.cache_flags;
                let payload = data[pos..pos + n as usize].to_vec();
                reqs.push(self.obj_req(op, flags, f, payload, n as u32));
                created.push((op == opcode::CREATE_AND_WRITE_OBJ).then_some(idx));
            }
        }
        let replies = self.pipeline(reqs)?;
        let (mut min, mut max) = (u64::MAX, 0);
        let mut failure = None;
        for ((rsp, _), idx) in replies.iter().zip(created) {
            if rsp.result() != result::SUCCESS {
                failure.get_or_insert(SdError::Result {
                    op: if idx.is_some() {
                        "CREATE_AND_WRITE_OBJ"
                    } else {
                        "WRITE_OBJ"
                    },
                    result: rsp.result(),
                });
                continue;
            }
            if let Some(idx) = idx {
                if self.data_vdi_id(idx) != self.vid {
                    self.set_data_vdi_id(idx, self.vid);
                    min = min.min(idx);
                    max = max.max(idx);
                }
            }
        }
        if min <= max {
            // sd_write_done: one WRITE_OBJ of data_vdi_id[min..=max] to the inode.
            let off = INODE_HEADER_SIZE + 4 * min as usize;
            let len = 4 * (max - min + 1) as usize;
            let f = ObjFields {
                oid: inode_oid(self.vid),
                cow_oid: 0,
                copies: self.nr_copies(),
                offset: off as u64,
            };
            let flags = flag::WRITE | self.cache_flags;
            let payload = self.inode[off..off + len].to_vec();
            let req = self.obj_req(opcode::WRITE_OBJ, flags, f, payload, len as u32);
            let (rsp, _) = self.pipeline(vec![req])?.remove(0);
            if rsp.result() != result::SUCCESS {
                failure.get_or_insert(SdError::Result {
                    op: "WRITE_OBJ (inode index)",
                    result: rsp.result(),
                });
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// `bdrv_flush`: FLUSH_VDI while in cache mode; see [`FlushOutcome`].
    pub fn flush(&mut self) -> Result<FlushOutcome, SdError> {
        if self.cache_flags != flag::CACHE {
            return Ok(FlushOutcome::NotSent);
        }
        let f = ObjFields {
            oid: inode_oid(self.vid),
            cow_oid: 0,
            copies: self.nr_copies(),
            offset: 0,
        };
        let flags = self.cache_flags;
        let req = self.obj_req(opcode::FLUSH_VDI, flags, f, Vec::new(), 0);
        let (rsp, _) = self.pipeline(vec![req])?.remove(0);
        match rsp.result() {
            result::SUCCESS => Ok(FlushOutcome::Flushed),
            result::INVALID_PARMS => {
                self.cache_flags = flag::DIRECT;
                Ok(FlushOutcome::CacheDisabled)
            }
            other => Err(SdError::Result {
                op: "FLUSH_VDI",
                result: other,
            }),
        }
    }

    /// `bdrv_pdiscard` (512-byte aligned). Returns how many objects were discarded.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<usize, SdError> {
        assert!((offset | len) & 511 == 0, "QEMU asserts sector alignment");
        if !self.discard_supported {
            return Ok(0);
        }
        let os = self.object_size();
        let mut reqs = Vec::new();
        for (idx, _, n, _) in self.pieces(offset, len)? {
            if n != os || self.data_vdi_id(idx) == 0 {
                continue; // only whole, allocated objects
            }
            self.set_data_vdi_id(idx, 0);
            let f = ObjFields {
                oid: inode_oid(self.vid),
                cow_oid: 0,
                copies: self.nr_copies(),
                offset: (INODE_HEADER_SIZE + 4 * idx as usize) as u64,
            };
            let flags = flag::WRITE | self.cache_flags;
            reqs.push(self.obj_req(opcode::WRITE_OBJ, flags, f, vec![0u8; 4], 4));
        }
        let count = reqs.len();
        for (rsp, _) in self.pipeline(reqs)? {
            match rsp.result() {
                result::SUCCESS => {}
                result::INVALID_PARMS => self.discard_supported = false,
                other => {
                    return Err(SdError::Result {
                        op: "WRITE_OBJ (discard)",
                        result: other,
                    })
                }
            }
        }
        Ok(count)
    }

    /// `bdrv_close`: flush (as the block layer does), RELEASE_VDI, close the I/O socket.
    pub fn close(mut self) -> Result<(), SdError> {
        self.flush()?;
        let mut data = self.name.as_bytes().to_vec();
        data.push(0);
        let hdr = vdi_request(
            0,
            opcode::RELEASE_VDI,
            flag::WRITE,
            data.len() as u32,
            VdiFields {
                base_vdi_id: self.vid,
                lock_type: LOCK_TYPE_NORMAL,
                ..VdiFields::default()
            },
        );
        let (rsp, _) = do_req(self.addr, &hdr, &data, 0)?;
        match rsp.result() {
            result::SUCCESS | result::VDI_NOT_LOCKED => Ok(()),
            other => Err(SdError::Result {
                op: "RELEASE_VDI",
                result: other,
            }),
        }
    }
}
