//! Client-generated unique message ids (`UNIQ_KEY`), laid out like Java's `MessageClientIDSetter`
//! (docs/protocol.md §5.6) so tools that parse them keep working:
//!
//! ```text
//! IP (4 or 16 bytes) | pid u16 | per-process hash u32 | ms since start of month u32 | counter u16
//! ```
//!
//! rendered as upper-case hex: 32 characters for an IPv4 host, 56 for IPv6. The first three
//! fields are fixed per generator and rendered once; each id costs a clock read, a counter
//! increment and 12 hex digits, written into a caller's `String` (no other allocation).
//!
//! Uniqueness: the counter is shared by every generator of the process and wraps every 65 536
//! ids, so two ids collide only if the same process makes more than 65 536 of them within one
//! millisecond. The per-process hash tells apart processes that reuse a pid. Java measures the
//! month in the local time zone; this uses UTC (no time-zone database), which only shifts the
//! epoch of the time field.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

use std::cell::Cell;

use ringmq_common::now_ms;

const HEX: &[u8; 16] = b"0123456789ABCDEF";
const MS_PER_DAY: i64 = 86_400_000;

/// Shared by every generator of the process, as Java's static counter is.
static COUNTER: AtomicU16 = AtomicU16::new(0);

/// A random value fixed for the life of the process (Java uses its class loader's hash).
fn process_hash() -> u32 {
    static HASH: OnceLock<u32> = OnceLock::new();
    *HASH.get_or_init(|| {
        let seed = (std::process::id(), now_ms(), "ringmq-uniq-key");
        std::collections::hash_map::RandomState::new().hash_one(seed) as u32
    })
}

/// Makes `UNIQ_KEY`s for one host address.
#[derive(Debug)]
pub(crate) struct UniqueIdGenerator {
    /// Hex of IP, pid and process hash.
    prefix: String,
    /// Start of the current month (UTC), ms since the epoch.
    month_start_ms: Cell<i64>,
    /// Start of the next month. Outside `[month_start_ms, next_month_ms)` (a new month, or a
    /// clock stepped back across a month boundary) the bounds are recomputed.
    next_month_ms: Cell<i64>,
}

impl UniqueIdGenerator {
    /// A generator for ids made on `ip`.
    pub fn new(ip: IpAddr) -> Self {
        let mut prefix = String::with_capacity(2 * (16 + 2 + 4));
        match ip {
            IpAddr::V4(v4) => push_hex(&mut prefix, &v4.octets()),
            IpAddr::V6(v6) => push_hex(&mut prefix, &v6.octets()),
        }
        push_hex(&mut prefix, &(std::process::id() as u16).to_be_bytes());
        push_hex(&mut prefix, &process_hash().to_be_bytes());
        let (start, next) = month_bounds(now_ms());
        Self {
            prefix,
            month_start_ms: Cell::new(start),
            next_month_ms: Cell::new(next),
        }
    }

    /// Characters of every id this generator makes.
    pub fn id_len(&self) -> usize {
        self.prefix.len() + 12
    }

    /// A new id.
    pub fn next_id(&self) -> String {
        let mut id = String::with_capacity(self.id_len());
        self.append_id(&mut id);
        id
    }

    /// Appends a new id to `out`.
    pub fn append_id(&self, out: &mut String) {
        self.append_id_at(out, now_ms());
    }

    fn append_id_at(&self, out: &mut String, now_ms: i64) {
        if now_ms >= self.next_month_ms.get() || now_ms < self.month_start_ms.get() {
            let (start, next) = month_bounds(now_ms);
            self.month_start_ms.set(start);
            self.next_month_ms.set(next);
        }
        // Past day 24 the value exceeds i32 and wraps, exactly as Java's cast does.
        let since_month_ms = (now_ms - self.month_start_ms.get()) as u32;
        out.push_str(&self.prefix);
        push_hex(out, &since_month_ms.to_be_bytes());
        push_hex(out, &COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
}

/// Start of the UTC month containing `ms` and start of the next one, both ms since the epoch.
fn month_bounds(ms: i64) -> (i64, i64) {
    let (year, month, _) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    (
        days_from_civil(year, month, 1) * MS_PER_DAY,
        days_from_civil(next_year, next_month, 1) * MS_PER_DAY,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ipv4_ids_have_java_layout() {
        let generator = UniqueIdGenerator::new("192.168.0.10".parse().unwrap());
        let id = generator.next_id();
        assert_eq!(id.len(), 32);
        assert_eq!(generator.id_len(), 32);
        assert!(id.starts_with("C0A8000A"), "{id}");
        let pid = format!("{:04X}", std::process::id() as u16);
        assert_eq!(&id[8..12], pid);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        let v6 = UniqueIdGenerator::new("::1".parse().unwrap());
        assert_eq!(v6.next_id().len(), 56);
    }

    #[test]
    fn ids_are_unique_and_carry_time_since_month_start() {
        let generator = UniqueIdGenerator::new("10.0.0.1".parse().unwrap());
        let ids: HashSet<String> = (0..50_000).map(|_| generator.next_id()).collect();
        assert_eq!(ids.len(), 50_000);

        // 2024-03-05T00:00:01.5Z is 4 days + 1.5 s after 2024-03-01.
        let now_ms = 1_709_596_801_500;
        let mut id = String::new();
        generator.append_id_at(&mut id, now_ms);
        let since = u32::from_str_radix(&id[20..28], 16).unwrap();
        assert_eq!(i64::from(since), 4 * MS_PER_DAY + 1_500);
    }

    #[test]
    fn month_bounds_follow_the_calendar() {
        // 2024-02-29T12:00Z (leap year), 2023-12-31T23:59Z.
        let (start, next) = month_bounds(1_709_208_000_000);
        assert_eq!(start, 1_706_745_600_000, "2024-02-01");
        assert_eq!(next, 1_709_251_200_000, "2024-03-01");
        let (start, next) = month_bounds(1_704_067_140_000);
        assert_eq!(start, 1_701_388_800_000, "2023-12-01");
        assert_eq!(next, 1_704_067_200_000, "2024-01-01");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
