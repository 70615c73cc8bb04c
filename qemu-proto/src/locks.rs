//! The reply of Sheepfold's `SD_OP_LIST_LOCKS` (0xe2): every attachment of
//! every VDI, for `dog vdi lock list`.
//!
//! Layout (little-endian, as the rest of the protocol): a u32 count, then per
//! entry a u32 vid, a u8 mode (0 read-write, 1 read-only), a u8 state (0
//! active, 1 pending migration destination) and five strings, each a u16
//! length and UTF-8 bytes: VDI name, attachment id, host, node address
//! (`ip:port`), and the source attachment of a pending destination (empty
//! otherwise). Decoding never panics; a truncated buffer is an error.

use crate::error::ProtoError;

/// One attachment as `dog vdi lock list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockEntry {
    /// The working VDI's vid.
    pub vid: u32,
    /// True for a read-only attachment.
    pub read_only: bool,
    /// True for a pending live-migration destination.
    pub pending: bool,
    /// The VDI name.
    pub name: String,
    /// The attachment id.
    pub id: String,
    /// The host the panel named.
    pub host: String,
    /// The sheep serving it (`ip:port`).
    pub node: String,
    /// A pending destination's source attachment ("" otherwise).
    pub from: String,
}

/// Encodes a lock list. Strings longer than 65535 bytes are cut (names and
/// ids are far shorter).
pub fn encode_lock_list(entries: &[LockEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.vid.to_le_bytes());
        out.push(u8::from(e.read_only));
        out.push(u8::from(e.pending));
        for s in [&e.name, &e.id, &e.host, &e.node, &e.from] {
            let b = s.as_bytes();
            let n = b.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&b[..n]);
        }
    }
    out
}

/// Decodes a lock list.
pub fn decode_lock_list(b: &[u8]) -> Result<Vec<LockEntry>, ProtoError> {
    let mut cur = b;
    let mut take = |n: usize| -> Result<&[u8], ProtoError> {
        if cur.len() < n {
            return Err(ProtoError::Truncated {
                need: n,
                have: cur.len(),
            });
        }
        let (head, tail) = cur.split_at(n);
        cur = tail;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut out = Vec::new();
    for _ in 0..count {
        let vid = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let flags = take(2)?;
        let (read_only, pending) = (flags[0] != 0, flags[1] != 0);
        let mut strings = Vec::with_capacity(5);
        for _ in 0..5 {
            let n = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
            strings.push(String::from_utf8_lossy(take(n)?).into_owned());
        }
        let mut s = strings.into_iter();
        let mut next = || s.next().unwrap_or_default();
        out.push(LockEntry {
            vid,
            read_only,
            pending,
            name: next(),
            id: next(),
            host: next(),
            node: next(),
            from: next(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let list = vec![
            LockEntry {
                vid: 0x7c2b25,
                name: "vm1".into(),
                id: "a-0123456789abcdef".into(),
                host: "hv-a".into(),
                node: "127.0.0.1:7000".into(),
                ..LockEntry::default()
            },
            LockEntry {
                vid: 0x7c2b25,
                pending: true,
                name: "vm1".into(),
                id: "a-1111111111111111".into(),
                host: "hv-b".into(),
                node: "127.0.0.1:7001".into(),
                from: "a-0123456789abcdef".into(),
                ..LockEntry::default()
            },
        ];
        let b = encode_lock_list(&list);
        assert_eq!(decode_lock_list(&b).unwrap(), list);
        assert_eq!(decode_lock_list(&encode_lock_list(&[])).unwrap(), vec![]);
        for cut in 0..b.len() {
            assert!(decode_lock_list(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
