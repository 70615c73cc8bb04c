//! Size arguments and human-readable sizes.
//!
//! [`parse_size`] follows Sheepdog's `option_parse_size` (`lib/option.c`): a
//! `strtod` number with at most one suffix character B, K, M, G, T or P (any
//! case, powers of 1024), truncated to an integer. [`strnumber`] is dog's
//! `strnumber_raw`: decimal bytes in raw mode, otherwise the value in MiB
//! scaled through MB..YB with one decimal below 10.

use crate::error::DogError;

/// Parses a size argument such as `10M`, `1G`, `1.5T` or `4096`.
///
/// Like Sheepdog, fractions are truncated after scaling. Unlike Sheepdog, a
/// size without any digit (the empty string, a bare suffix; Sheepdog reads
/// those as 0) and a negative number (an undefined cast in C) are rejected.
pub fn parse_size(value: &str) -> Result<u64, DogError> {
    let invalid = || {
        DogError::usage(format!(
            "Invalid size '{value}'\nYou may use B, K, M, G, T or P suffixes for bytes, \
             kilobytes, megabytes, gigabytes, terabytes and petabytes."
        ))
    };
    let (number, postfix) = split_strtod(value);
    if postfix.len() > 1 || postfix.len() == value.len() {
        return Err(invalid());
    }
    let shift = match postfix.as_bytes().first().map(u8::to_ascii_uppercase) {
        None | Some(b'B') => 0,
        Some(b'K') => 1,
        Some(b'M') => 2,
        Some(b'G') => 3,
        Some(b'T') => 4,
        Some(b'P') => 5,
        Some(_) => return Err(invalid()),
    };
    let mut size = number;
    if !size.is_finite() || size.is_sign_negative() && size != 0.0 {
        return Err(invalid());
    }
    for _ in 0..shift {
        size *= 1024.0;
    }
    // `as` truncates toward zero and saturates, like a well-defined C cast.
    Ok(size as u64)
}

/// Splits `s` like C `strtod` (decimal forms only): the parsed value and the
/// unparsed rest. Without any digit nothing is consumed and the value is 0.
fn split_strtod(s: &str) -> (f64, &str) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let start = i;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        let frac_start = i + 1;
        let mut j = frac_start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        digits += j - frac_start;
        if digits > 0 {
            i = j;
        }
    }
    if digits == 0 {
        return (0.0, s);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    // The slice is a valid Rust float literal: [sign] digits [. digits] [e [sign] digits].
    let value = s[start..i].parse::<f64>().unwrap_or(0.0);
    (value, &s[i..])
}

/// Formats a byte count as dog does: decimal bytes when `raw`, otherwise
/// `"%.0lf %s"` (value >= 10) or `"%.1lf %s"` of the size in MB, GB, ... YB.
pub fn strnumber(bytes: u64, raw: bool) -> String {
    const UNITS: [&str; 7] = ["MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    if raw {
        return bytes.to_string();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10M").unwrap(), 10 * K * K);
        assert_eq!(parse_size("10m").unwrap(), 10 * K * K);
        assert_eq!(parse_size("1G").unwrap(), K * K * K);
        assert_eq!(parse_size("4T").unwrap(), 4 * K * K * K * K);
        assert_eq!(parse_size("1P").unwrap(), K * K * K * K * K);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("7b").unwrap(), 7);
        assert_eq!(parse_size("7B").unwrap(), 7);
    }

    #[test]
    fn parses_like_strtod() {
        assert_eq!(parse_size("1.5G").unwrap(), 3 * 512 * K * K);
        assert_eq!(parse_size("1.1G").unwrap(), 1_181_116_006);
        assert_eq!(parse_size("0.5").unwrap(), 0);
        assert_eq!(parse_size(" 8").unwrap(), 8);
        assert_eq!(parse_size("+8").unwrap(), 8);
        assert_eq!(parse_size("1e3").unwrap(), 1000);
        assert_eq!(parse_size("1e3K").unwrap(), 1_024_000);
        assert_eq!(parse_size(".5K").unwrap(), 512);
        assert_eq!(parse_size("4.M").unwrap(), 4 * K * K);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("-0").unwrap(), 0);
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in [
            "10MB", "1GiB", "abc", "10X", "1 G", "-1", "-1G", "inf", "nan", "0x10", "--", "", "G",
            "k", " ", "10Q", "1e",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert_eq!(err.code(), 64, "{bad}");
            assert_eq!(
                err.to_string(),
                format!(
                    "Invalid size '{bad}'\nYou may use B, K, M, G, T or P suffixes for bytes, \
                     kilobytes, megabytes, gigabytes, terabytes and petabytes."
                )
            );
        }
    }

    #[test]
    fn strnumber_human() {
        assert_eq!(strnumber(0, false), "0.0 MB");
        assert_eq!(strnumber(4 * K * K, false), "4.0 MB");
        assert_eq!(strnumber(40 * K * K, false), "40 MB");
        assert_eq!(strnumber(4 * K * K * K, false), "4.0 GB");
        assert_eq!(strnumber(4095, false), "0.0 MB");
        assert_eq!(strnumber(100 * K * K, false), "100 MB");
        assert_eq!(strnumber(1023 * K * K, false), "1023 MB");
        assert_eq!(strnumber(1024 * K * K, false), "1.0 GB");
        assert_eq!(strnumber(4 * K * K * K * K, false), "4.0 TB");
        assert_eq!(strnumber(16 * K * K * K * K * K, false), "16 PB");
        assert_eq!(strnumber(u64::MAX, false), "16 EB");
        // 9.96 MB is printed with one decimal and rounds up to 10.0.
        assert_eq!(strnumber(10_443_817, false), "10.0 MB");
        // Ties round to even like glibc printf.
        assert_eq!(strnumber(10 * K * K + 512 * K, false), "10 MB");
        assert_eq!(strnumber(11 * K * K + 512 * K, false), "12 MB");
    }

    #[test]
    fn strnumber_raw() {
        assert_eq!(strnumber(0, true), "0");
        assert_eq!(strnumber(4095, true), "4095");
        assert_eq!(strnumber(u64::MAX, true), "18446744073709551615");
    }
}
