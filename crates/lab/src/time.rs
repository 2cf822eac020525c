//! UTC timestamps: ISO 8601 text <-> unix milliseconds, without a date crate.

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parse `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z`, `+00:00` or nothing (UTC assumed); a
/// space may replace the `T`. Returns unix milliseconds.
pub fn parse_utc(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a UTC timestamp like 2025-10-10T21:15:00Z");
    let t = s.trim();
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00")).unwrap_or(t);
    if t.len() < 16 {
        return Err(bad());
    }
    let b = t.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|x| x.parse::<u32>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?);
    let (mut sec, mut ms) = (0u32, 0u32);
    if t.len() > 16 {
        if b[16] != b':' || t.len() < 19 {
            return Err(bad());
        }
        sec = num(17..19)?;
        if t.len() > 19 {
            if b[19] != b'.' {
                return Err(bad());
            }
            let frac = &t[20..];
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let padded = format!("{frac:0<3}");
            ms = padded[..3].parse().map_err(|_| bad())?;
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 || y < 1970 {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec);
    u64::try_from(secs * 1000 + i64::from(ms)).map_err(|_| bad())
}

/// `2025-10-10T21:15:00Z` (milliseconds shown only when not zero).
pub fn format_utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let frac = ms % 1000;
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

/// `21:15` or `10-10 21:15` for chart axes.
pub fn format_short(ms: u64, with_date: bool) -> String {
    let full = format_utc(ms);
    if with_date {
        format!("{} {}", &full[5..10], &full[11..16])
    } else {
        full[11..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["1970-01-01T00:00:00Z", "2025-10-10T21:15:00Z", "2020-02-29T23:59:59.123Z", "2000-03-01T00:00:00Z"] {
            assert_eq!(format_utc(parse_utc(s).unwrap()), s);
        }
        assert_eq!(parse_utc("2025-10-10T16:00:00.003Z").unwrap() % 1000, 3);
        assert_eq!(parse_utc("2020-03-12 10:00:00+00:00").unwrap(), parse_utc("2020-03-12T10:00:00Z").unwrap());
        assert_eq!(parse_utc("2025-10-10T21:15:00Z").unwrap(), 1_760_130_900_000);
        assert!(parse_utc("2025-13-10T21:15:00Z").is_err());
        assert!(parse_utc("yesterday").is_err());
    }
}
