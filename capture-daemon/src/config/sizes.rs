//! Sizes as admins write them: "64 MiB", "1.5 GiB", or a plain number of bytes.

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;

/// Parses a size: a plain number of bytes, or a number (integer or decimal) with a unit.
///
/// Units are case-insensitive: B; k/kB = 1000, KiB = 1024; M/MB, MiB; G/GB, GiB; T/TB, TiB.
/// Fractions of a unit are rounded down to whole bytes ("1.1 KiB" = 1126); a fraction of a byte
/// is an error.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "empty size; write a number of bytes with an optional unit, e.g. \"64 MiB\"".to_owned()
        );
    }
    if t.starts_with('-') {
        return Err(format!("invalid size \"{s}\": sizes cannot be negative"));
    }
    let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..num_end], t[num_end..].trim_start());
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || (number.contains('.') && !all_digits(frac)) {
        return Err(format!(
            "invalid size \"{s}\": expected a number (like 64 or 1.5) and an optional unit (like MiB)"
        ));
    }
    let multiplier = size_unit(unit).ok_or_else(|| {
        format!(
            "invalid size \"{s}\": unknown unit \"{unit}\"; use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, \
             T, TB or TiB"
        )
    })?;
    let too_large = || format!("invalid size \"{s}\": larger than the maximum, {} bytes", u64::MAX);
    // Exact decimal arithmetic, so "1.5 GiB" is exactly 1610612736 bytes.
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let mut total = int.checked_mul(u128::from(multiplier)).ok_or_else(too_large)?;
    // Digits past the 18th cannot change the result by a whole byte at any unit up to TiB.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        if multiplier == 1 && frac.bytes().any(|b| b != b'0') {
            return Err(format!("invalid size \"{s}\": a number of bytes must be whole"));
        }
        let digits = u32::try_from(frac.len()).map_err(|_| too_large())?;
        let frac: u128 = frac.parse().map_err(|_| too_large())?;
        total += frac * u128::from(multiplier) / 10u128.pow(digits);
    }
    u64::try_from(total).map_err(|_| too_large())
}

pub(super) fn size_unit(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => KIB,
        "m" | "mb" => 1000 * 1000,
        "mib" => MIB,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => GIB,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1024 * GIB,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_accepts_units() {
        for (s, want) in [
            ("0", 0),
            ("1", 1),
            ("4096", 4096),
            ("7 B", 7),
            ("7b", 7),
            ("1k", 1000),
            ("1 kB", 1000),
            ("1 KB", 1000),
            ("1 KiB", 1024),
            ("1kib", 1024),
            ("2 M", 2_000_000),
            ("2 MB", 2_000_000),
            ("64 MiB", 64 << 20),
            ("64MiB", 64 << 20),
            ("  64 mib  ", 64 << 20),
            ("1 G", 1_000_000_000),
            ("1 GB", 1_000_000_000),
            ("1 GiB", 1 << 30),
            ("1.5 GiB", 3 << 29),
            ("0.5 KiB", 512),
            ("1.1 KiB", 1126),
            ("1.0 B", 1),
            ("1 T", 1_000_000_000_000),
            ("1 TB", 1_000_000_000_000),
            ("1 TiB", 1 << 40),
            ("2.25 TiB", 9 << 38),
            ("18446744073709551615", u64::MAX),
            ("16777215.999999999999999999999 TiB", u64::MAX),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn parse_size_rejects_nonsense() {
        let unit_list = "use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB";
        let number = "expected a number (like 64 or 1.5) and an optional unit (like MiB)";
        let max = format!("larger than the maximum, {} bytes", u64::MAX);
        for (s, want) in [
            (
                "",
                "empty size; write a number of bytes with an optional unit, e.g. \"64 MiB\""
                    .to_owned(),
            ),
            (
                "   ",
                "empty size; write a number of bytes with an optional unit, e.g. \"64 MiB\""
                    .to_owned(),
            ),
            ("-1", "invalid size \"-1\": sizes cannot be negative".to_owned()),
            ("-1 MiB", "invalid size \"-1 MiB\": sizes cannot be negative".to_owned()),
            ("MiB", format!("invalid size \"MiB\": {number}")),
            ("+5", format!("invalid size \"+5\": {number}")),
            (".5 KiB", format!("invalid size \".5 KiB\": {number}")),
            ("1. KiB", format!("invalid size \"1. KiB\": {number}")),
            ("1.2.3 KiB", format!("invalid size \"1.2.3 KiB\": {number}")),
            ("1,5 KiB", format!("invalid size \"1,5 KiB\": unknown unit \",5 KiB\"; {unit_list}")),
            ("5 XB", format!("invalid size \"5 XB\": unknown unit \"XB\"; {unit_list}")),
            ("5 Mi", format!("invalid size \"5 Mi\": unknown unit \"Mi\"; {unit_list}")),
            (
                "5 MiB extra",
                format!("invalid size \"5 MiB extra\": unknown unit \"MiB extra\"; {unit_list}"),
            ),
            ("1.5", "invalid size \"1.5\": a number of bytes must be whole".to_owned()),
            ("1.5 B", "invalid size \"1.5 B\": a number of bytes must be whole".to_owned()),
            ("18446744073709551616", format!("invalid size \"18446744073709551616\": {max}")),
            ("16777216 TiB", format!("invalid size \"16777216 TiB\": {max}")),
            (
                "99999999999999999999999999999999999999999 B",
                format!("invalid size \"99999999999999999999999999999999999999999 B\": {max}"),
            ),
        ] {
            assert_eq!(parse_size(s), Err(want), "{s:?}");
        }
    }
}
