//! Parsing of option values exactly as Sheepdog's dog does.
//!
//! Covers the global `-a/-p` (and `SHEEPDOG_DOG_ADDR/PORT`), the copies
//! option `-c N` / `-c D:P` (`parse_copy` in `dog/common.c`), the object
//! size option `-z SHIFT`, and the snapshot selector `-s ID|TAG`. Each
//! failure carries dog's message and exit code.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use qemu_proto::consts::SD_MAX_COPIES;

use crate::error::{exit, DogError};

/// Largest number of EC strips (`SD_EC_MAX_STRIP`).
const SD_EC_MAX_STRIP: i64 = 16;

/// C `strtol(s, &end, 10)`: leading whitespace, optional sign, digits.
/// Returns the value (saturated) and the unparsed rest; without digits the
/// value is 0 and the rest is the whole input.
pub fn strtol(s: &str) -> (i64, &str) {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let ndigits = body.bytes().take_while(u8::is_ascii_digit).count();
    if ndigits == 0 {
        return (0, s);
    }
    let mut v: i64 = 0;
    for d in body[..ndigits].bytes() {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    (if neg { -v } else { v }, &body[ndigits..])
}

/// C `atoi`: `strtol` ignoring the rest, truncated to `int`.
pub fn atoi(s: &str) -> i32 {
    strtol(s).0 as i32
}

/// dog's `is_numeric`: non-empty and only ASCII digits.
pub fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Validates a port from `-p` or `SHEEPDOG_DOG_PORT` (1..=65535, digits only).
pub fn parse_port(s: &str) -> Result<u16, DogError> {
    let (v, _) = strtol(s);
    if !is_numeric(s) || !(1..=i64::from(u16::MAX)).contains(&v) {
        return Err(DogError::Exit {
            message: format!("Invalid port number '{s}'"),
            code: exit::USAGE,
        });
    }
    Ok(v as u16)
}

/// Resolves `-a` / `SHEEPDOG_DOG_ADDR` (names work, like getaddrinfo). An
/// IPv4 result is preferred so that `localhost` reaches a sheep bound to
/// 0.0.0.0. Failure: "Invalid ip address %s", exit 1.
pub fn resolve_address(s: &str) -> Result<IpAddr, DogError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    let invalid = || DogError::failure(format!("Invalid ip address {s}"));
    if s.is_empty() {
        return Err(invalid());
    }
    let addrs: Vec<IpAddr> = (s, 0u16)
        .to_socket_addrs()
        .map_err(|_| invalid())?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(invalid)
}

/// The default daemon address, 127.0.0.1.
pub const DEFAULT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A redundancy level from `-c`: `copies` is the number of copies (for
/// erasure coding data + parity strips) and `policy` the EC policy byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Copies {
    /// Copies on the wire (0 = cluster default).
    pub copies: u8,
    /// Copy policy byte: 0 for replication, `(data/2) << 4 | parity` for EC.
    pub policy: u8,
}

/// Parses `-c N` or `-c D:P` like `parse_copy`; the error text is dog's.
pub fn parse_copies(s: &str) -> Result<Copies, DogError> {
    let invalid = || {
        DogError::failure(format!(
            "Invalid parameter {s}\n\
             To create replicated vdi, set -c x\n  \
             x(1 to {SD_MAX_COPIES})   - number of replicated copies\n\
             To create erasure coded vdi, set -c x:y\n  \
             x(2,4,8,16)  - number of data strips\n  \
             y(1 to 15)   - number of parity strips"
        ))
    };
    // strtok(":") semantics: empty tokens are skipped.
    let mut tokens = s.split(':').filter(|t| !t.is_empty());
    let n1 = tokens.next();
    let n2 = tokens.next();
    let Some(n1) = n1 else { return Err(invalid()) };
    if !is_numeric(n1) || n2.is_some_and(|t| !is_numeric(t)) {
        return Err(invalid());
    }
    let copy = strtol(n1).0 as u8;
    if copy > SD_MAX_COPIES {
        return Err(invalid());
    }
    let Some(n2) = n2 else {
        return if copy == 0 {
            Err(invalid())
        } else {
            Ok(Copies {
                copies: copy,
                policy: 0,
            })
        };
    };
    if ![2, 4, 8, 16].contains(&copy) {
        return Err(invalid());
    }
    let parity = strtol(n2).0 as u8;
    if i64::from(parity) >= SD_EC_MAX_STRIP || parity == 0 {
        return Err(invalid());
    }
    Ok(Copies {
        copies: copy + parity,
        policy: ((copy / 2) << 4) + parity,
    })
}

/// Data strips and parity strips of an EC policy byte (`ec_policy_to_dp`).
pub fn ec_policy_to_dp(policy: u8) -> (u32, u32) {
    (u32::from(policy >> 4) * 2, u32::from(policy & 0x0f))
}

/// The redundancy column: `"3"` for replication, `"4:2"` for EC.
pub fn redundancy_scheme(copies: u8, policy: u8) -> String {
    if policy > 0 {
        let (d, p) = ec_policy_to_dp(policy);
        format!("{d}:{p}")
    } else {
        copies.to_string()
    }
}

/// Parses `-z SHIFT`. `vdi` options cast `atoi` to `uint8_t` first, `cluster`
/// options to `uint32_t` (`as_u8` selects the former). Range 20..=31, exit 1.
pub fn parse_block_size_shift(s: &str, as_u8: bool) -> Result<u8, DogError> {
    let v = atoi(s);
    let shift = if as_u8 { u32::from(v as u8) } else { v as u32 };
    if shift > 31 {
        Err(DogError::failure(
            "Object Size is limited to 2^31. Please set shift bit lower than 31",
        ))
    } else if shift < 20 {
        Err(DogError::failure(
            "Object Size is larger than 2^20. Please set shift bit larger than 20",
        ))
    } else {
        Ok(shift as u8)
    }
}

/// A snapshot selector from `-s`: an id (> 0) or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotSel {
    /// Snapshot id, 0 for none (printed with `%d`).
    pub id: i32,
    /// Snapshot tag, empty for none.
    pub tag: String,
}

/// Parses `-s ID|TAG`: a full decimal number is an id (0 is an error, exit
/// 1), anything else a tag (truncated to 255 bytes like `pstrcpy`).
pub fn parse_snapshot(s: &str) -> Result<SnapshotSel, DogError> {
    let (v, rest) = strtol(s);
    if rest.len() == s.len() || !rest.is_empty() {
        let mut tag = s.to_string();
        if tag.len() > 255 {
            let mut end = 255;
            while !tag.is_char_boundary(end) {
                end -= 1;
            }
            tag.truncate(end);
        }
        return Ok(SnapshotSel { id: 0, tag });
    }
    if v == 0 {
        return Err(DogError::failure(
            "The snapshot id must be larger than zero",
        ));
    }
    Ok(SnapshotSel {
        id: v as i32,
        tag: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("7000").unwrap(), 7000);
        assert_eq!(parse_port("65535").unwrap(), 65535);
        for bad in ["0", "65536", "", "70a", "-1", " 7000", "+7"] {
            let e = parse_port(bad).unwrap_err();
            assert_eq!(e.to_string(), format!("Invalid port number '{bad}'"));
            assert_eq!(e.code(), 64);
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(resolve_address("127.0.0.1").unwrap(), DEFAULT_ADDR);
        assert_eq!(
            resolve_address("::1").unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve_address("localhost").unwrap(), DEFAULT_ADDR);
        let e = resolve_address("").unwrap_err();
        assert_eq!(e.to_string(), "Invalid ip address ");
        assert_eq!(e.code(), 1);
    }

    #[test]
    fn copies() {
        assert_eq!(
            parse_copies("3").unwrap(),
            Copies {
                copies: 3,
                policy: 0
            }
        );
        assert_eq!(parse_copies("31").unwrap().copies, 31);
        assert_eq!(
            parse_copies("4:2").unwrap(),
            Copies {
                copies: 6,
                policy: 0x22
            }
        );
        assert_eq!(parse_copies("16:15").unwrap().policy, 0x8f);
        for bad in ["0", "32", "x", "", "3:1", "4:0", "4:16", "4:x", "256"] {
            let e = parse_copies(bad).unwrap_err();
            assert_eq!(e.code(), 1, "{bad}");
            assert!(e
                .to_string()
                .starts_with(&format!("Invalid parameter {bad}\n")));
        }
        assert_eq!(
            parse_copies("0").unwrap_err().to_string(),
            "Invalid parameter 0\nTo create replicated vdi, set -c x\n  x(1 to 31)   - number of \
             replicated copies\nTo create erasure coded vdi, set -c x:y\n  x(2,4,8,16)  - number \
             of data strips\n  y(1 to 15)   - number of parity strips"
        );
    }

    #[test]
    fn redundancy() {
        assert_eq!(redundancy_scheme(3, 0), "3");
        assert_eq!(redundancy_scheme(6, 0x22), "4:2");
    }

    #[test]
    fn block_size_shift() {
        assert_eq!(parse_block_size_shift("22", true).unwrap(), 22);
        assert_eq!(parse_block_size_shift("20", false).unwrap(), 20);
        assert_eq!(parse_block_size_shift("31", false).unwrap(), 31);
        // (uint8_t)276 == 20 for vdi options.
        assert_eq!(parse_block_size_shift("276", true).unwrap(), 20);
        assert!(parse_block_size_shift("276", false).is_err());
        assert_eq!(
            parse_block_size_shift("32", true).unwrap_err().to_string(),
            "Object Size is limited to 2^31. Please set shift bit lower than 31"
        );
        assert_eq!(
            parse_block_size_shift("abc", true).unwrap_err().to_string(),
            "Object Size is larger than 2^20. Please set shift bit larger than 20"
        );
    }

    #[test]
    fn snapshots() {
        assert_eq!(
            parse_snapshot("2").unwrap(),
            SnapshotSel {
                id: 2,
                tag: String::new()
            }
        );
        assert_eq!(parse_snapshot("snap1").unwrap().tag, "snap1");
        assert_eq!(parse_snapshot("1a").unwrap().tag, "1a");
        assert_eq!(
            parse_snapshot("0").unwrap_err().to_string(),
            "The snapshot id must be larger than zero"
        );
    }

    #[test]
    fn strtol_like_c() {
        assert_eq!(strtol("12ab"), (12, "ab"));
        assert_eq!(strtol("  -3"), (-3, ""));
        assert_eq!(strtol("x"), (0, "x"));
        assert_eq!(strtol("-"), (0, "-"));
    }
}
