//! Expected `dog` output (reference section 5.3), UTC time formatting and masking helpers.
//!
//! The formats are transcribed from Sheepdog's printf strings so tests compare whole lines,
//! byte for byte. Times are rendered in UTC because the harness runs dog with `TZ=UTC`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `dog node list` header.
pub const NODE_LIST_HEADER: &str = "  Id   Host:Port         V-Nodes       Zone";

/// `dog vdi list` header.
pub const VDI_LIST_HEADER: &str =
    "  Name        Id    Size    Used  Shared    Creation time   VDI id  Copies  Tag   Block Size Shift";

/// `dog cluster info` header above the epoch lines.
pub const EPOCH_HEADER: &str = "Epoch Time           Version [Host:Port:V-Nodes,,,]";

/// First line of `dog cluster info` on a formatted, running cluster.
pub const STATUS_RUNNING: &str = "Cluster status: running, auto-recovery enabled";

/// Sheepdog's default vnode count.
pub const DEFAULT_VNODES: u16 = 128;

/// Default zone of a sheep advertising 127.0.0.1 (last 4 address bytes read LE).
pub const LOCALHOST_ZONE: u32 = 16_777_343;

/// A plain `dog node list` row: `"%4d   %-20s\t%2d%11u"`.
pub fn node_list_row(id: usize, port: u16, vnodes: u16, zone: u32) -> String {
    format!(
        "{id:4}   {:<20}\t{vnodes:2}{zone:11}",
        format!("127.0.0.1:{port}")
    )
}

/// A raw (`-r`) `dog node list` row: `"%d %s %d %u"`.
pub fn node_list_raw_row(id: usize, port: u16, vnodes: u16, zone: u32) -> String {
    format!("{id} 127.0.0.1:{port} {vnodes} {zone}")
}

/// One node of an epoch line: `127.0.0.1:PORT:VNODES`.
pub fn epoch_node(port: u16, vnodes: u16) -> String {
    format!("127.0.0.1:{port}:{vnodes}")
}

/// dog's human-readable size (`strnumber`): MiB scaled through MB..YB, `%.0lf` from 10 up,
/// else `%.1lf`.
pub fn strnumber(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64 / (1024.0 * 1024.0);
    let mut unit = 0;
    while unit < UNITS.len() - 1 && size >= 1024.0 {
        unit += 1;
        size /= 1024.0;
    }
    if size >= 10.0 {
        format!("{size:.0} {}", UNITS[unit])
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// Sheepdog's VDI name hash: 64-bit FNV-1a over the name's bytes, masked to 24 bits, 0 -> 1.
/// A new VDI gets this vid unless the slot (or the ones after it) are taken.
pub fn sd_hash_vdi(name: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    match (h & 0x00ff_ffff) as u32 {
        0 => 1,
        vid => vid,
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year, e.g. 2018.
    pub year: i64,
    /// Month 1..=12.
    pub month: u32,
    /// Day of month 1..=31.
    pub day: u32,
    /// Hour 0..=23.
    pub hour: u32,
    /// Minute 0..=59.
    pub minute: u32,
    /// Second 0..=59.
    pub second: u32,
    /// Day of week, 0 = Sunday.
    pub weekday: u32,
}

impl UtcTime {
    /// Breaks down Unix seconds (days-from-civil inverse, Howard Hinnant's algorithm).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097) as u64;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe as i64 + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// `%Y-%m-%d %H:%M` (dog vdi list).
    pub fn to_minute(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }

    /// `%Y-%m-%d %H:%M:%S` (dog cluster info epoch lines).
    pub fn to_second(&self) -> String {
        format!("{}:{:02}", self.to_minute(), self.second)
    }

    /// ctime(3) without the newline: `Mon Jan  1 00:00:00 2018`.
    pub fn to_ctime(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{} {}{:3} {:02}:{:02}:{:02} {}",
            DAYS[self.weekday as usize],
            MONTHS[self.month as usize - 1],
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.year
        )
    }
}

/// Shape of `%Y-%m-%d %H:%M` for [`mask_shape`].
pub const MINUTE_SHAPE: &str = "####-##-## ##:##";

/// Shape of `%Y-%m-%d %H:%M:%S` for [`mask_shape`].
pub const SECOND_SHAPE: &str = "####-##-## ##:##:##";

/// Finds the first substring of `line` matching `shape` (`#` = one ASCII digit, any other
/// character matches itself) and returns the line with that substring replaced by `mask`,
/// plus the substring. A tiny regex for fixed-width timestamps.
pub fn mask_shape(line: &str, shape: &str, mask: &str) -> Option<(String, String)> {
    let (bytes, pat) = (line.as_bytes(), shape.as_bytes());
    if pat.len() > bytes.len() {
        return None;
    }
    (0..=bytes.len() - pat.len()).find_map(|start| {
        let hit = pat.iter().zip(&bytes[start..]).all(|(&p, &b)| {
            if p == b'#' {
                b.is_ascii_digit()
            } else {
                p == b
            }
        });
        hit.then(|| {
            let end = start + pat.len();
            (
                format!("{}{mask}{}", &line[..start], &line[end..]),
                line[start..end].to_owned(),
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rows_match_golden() {
        // tests/functional/036.out: "   0   127.0.0.1:7000      \t128          0"
        assert_eq!(
            node_list_row(0, 7000, 128, 0),
            "   0   127.0.0.1:7000      \t128          0"
        );
        assert_eq!(
            node_list_raw_row(2, 7002, 128, LOCALHOST_ZONE),
            "2 127.0.0.1:7002 128 16777343"
        );
        assert!(node_list_row(1, 7001, 0, 1).ends_with("\t 0          1"));
    }

    #[test]
    fn strnumber_matches_dog() {
        assert_eq!(strnumber(0), "0.0 MB");
        assert_eq!(strnumber(4 << 20), "4.0 MB");
        assert_eq!(strnumber(40 << 20), "40 MB");
        assert_eq!(strnumber(4 << 30), "4.0 GB");
        assert_eq!(strnumber(100 << 20), "100 MB");
    }

    #[test]
    fn vdi_hash_vectors() {
        assert_eq!(sd_hash_vdi("test"), 0x7c2b25);
        assert_eq!(sd_hash_vdi("alpha"), 0xed202b);
        assert_eq!(sd_hash_vdi("test1"), 0xfd32fc);
        assert_eq!(sd_hash_vdi("test0"), 0xfd34af);
    }

    #[test]
    fn utc_formatting() {
        let t = UtcTime::from_unix(1_514_764_800);
        assert_eq!(t.to_ctime(), "Mon Jan  1 00:00:00 2018");
        assert_eq!(t.to_second(), "2018-01-01 00:00:00");
        let t = UtcTime::from_unix(951_782_400 + 3_723); // 2000-02-29 01:02:03, a Tuesday
        assert_eq!(t.to_second(), "2000-02-29 01:02:03");
        assert_eq!(t.to_ctime(), "Tue Feb 29 01:02:03 2000");
        assert_eq!(UtcTime::from_unix(0).to_ctime(), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn masking() {
        let (masked, hit) =
            mask_shape("x 2018-01-01 00:00   7c2b25", MINUTE_SHAPE, "DATE").unwrap();
        assert_eq!(masked, "x DATE   7c2b25");
        assert_eq!(hit, "2018-01-01 00:00");
        assert!(mask_shape("no date here", MINUTE_SHAPE, "DATE").is_none());
    }
}
