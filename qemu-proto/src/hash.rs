//! FNV-1a based hashes used for VDI ids and consistent-hash placement
//! (reference §2.4, §3 and Appendix A).
//!
//! Owns `fnv_64a_buf`, `fnv_64a_64`, `sd_hash*` and `sd_hash_vdi`. Invariant:
//! results are bit-identical to sheep's `include/sheepdog_proto.h` helpers
//! (checked against the Appendix A vectors), except that `sd_hash_vdi` never
//! returns 0 (vid 0 is reserved).

/// FNV-1a 64-bit offset basis.
pub const FNV1A_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV 64-bit prime.
pub const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `buf`, continuing from `hval`.
pub fn fnv_64a_buf(buf: &[u8], hval: u64) -> u64 {
    buf.iter()
        .fold(hval, |h, &b| (h ^ b as u64).wrapping_mul(FNV_64_PRIME))
}

/// FNV-1a over the 8 little-endian bytes of `x`, continuing from `hval`.
pub fn fnv_64a_64(x: u64, hval: u64) -> u64 {
    fnv_64a_buf(&x.to_le_bytes(), hval)
}

/// sheep's `sd_hash`: FNV-1a of `buf` from the basis, then one mixing round
/// (`fnv_64a_64(h, h)`).
pub fn sd_hash(buf: &[u8]) -> u64 {
    let h = fnv_64a_buf(buf, FNV1A_64_INIT);
    fnv_64a_64(h, h)
}

/// Next hash in a vnode chain (`fnv_64a_64(h, h)`).
pub fn sd_hash_next(h: u64) -> u64 {
    fnv_64a_64(h, h)
}

/// Ring position of an object id; equal to `sd_hash(&oid.to_le_bytes())`.
pub fn sd_hash_oid(oid: u64) -> u64 {
    let h = fnv_64a_64(oid, FNV1A_64_INIT);
    fnv_64a_64(h, h)
}

/// The vid a VDI name hashes to: FNV-1a over the name bytes masked to 24 bits;
/// a result of 0 becomes 1 because vid 0 is never used.
pub fn sd_hash_vdi(name: &str) -> u32 {
    let v = (fnv_64a_buf(name.as_bytes(), FNV1A_64_INIT) & 0x00ff_ffff) as u32;
    if v == 0 {
        1
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn appendix_a_vdi_vectors() {
        let vectors = [
            ("test", 0x7c2b25),
            ("test0", 0xfd34af),
            ("test1", 0xfd32fc),
            ("test2", 0xfd3815),
            ("test3", 0xfd3662),
            ("test4", 0xfd2de3),
            ("test5", 0xfd2c30),
            ("test9", 0xfd4094),
            ("alpha", 0xed202b),
            ("base", 0x54c278),
        ];
        for (name, vid) in vectors {
            assert_eq!(sd_hash_vdi(name), vid, "{name}");
        }
    }

    #[test]
    fn appendix_a_oid_vector() {
        assert_eq!(sd_hash_oid(0x807c2b2500000000), 0x8b4b18c243befa1a);
    }

    #[test]
    fn appendix_a_node_vector() {
        let mut key = [0u8; 18];
        key[12..16].copy_from_slice(&[127, 0, 0, 1]);
        key[16..18].copy_from_slice(&7000u16.to_le_bytes());
        let h = sd_hash(&key);
        assert_eq!(h, 0x9cb3d6dd0a4c0f9f);
        assert_eq!(sd_hash_next(h), 0x3af2cba6e538cdf3);
    }

    #[test]
    fn fnv_basics() {
        assert_eq!(fnv_64a_buf(b"", FNV1A_64_INIT), FNV1A_64_INIT);
        // Standard FNV-1a-64 vector.
        assert_eq!(fnv_64a_buf(b"a", FNV1A_64_INIT), 0xaf63dc4c8601ec8c);
    }

    proptest! {
        #[test]
        fn oid_hash_matches_buffer_hash(oid in any::<u64>()) {
            prop_assert_eq!(sd_hash_oid(oid), sd_hash(&oid.to_le_bytes()));
        }

        #[test]
        fn vdi_hash_in_range(name in ".{0,40}") {
            let v = sd_hash_vdi(&name);
            prop_assert!((1..(1 << 24)).contains(&v));
        }
    }
}
