//! What a command prints: a human-readable text (aligned tables, `key: value` lines) and the
//! same facts as one JSON document for `--json`.

use std::fmt::Write as _;

use ringmq_client::ReceivedMessage;
use serde_json::{Value, json};

/// A command's result, in both forms; the binary prints one of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// For people: ends with a newline unless empty.
    pub text: String,
    /// For scripts: one JSON document.
    pub json: Value,
}

impl Rendered {
    /// Both forms.
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self {
            text: text.into(),
            json,
        }
    }
}

/// A table whose columns are as wide as their widest cell, separated by two spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<const N: usize>(titles: [&str; N]) -> Self {
        Self {
            rows: vec![titles.iter().map(|title| (*title).to_owned()).collect()],
        }
    }

    /// Adds a row (as many cells as titles).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row, trailing spaces trimmed.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                let _ = write!(line, "{cell:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(key, _)| key.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let _ = writeln!(out, "{label:<width$} {value}");
    }
    out
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_time_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A message as JSON (the body as UTF-8, invalid bytes replaced).
pub fn message_json(message: &ReceivedMessage) -> Value {
    json!({
        "topic": message.topic,
        "queueId": message.queue_id,
        "queueOffset": message.queue_offset,
        "commitLogOffset": message.commit_log_offset,
        "msgId": message.msg_id,
        "offsetMsgId": message.offset_msg_id,
        "tags": message.tags,
        "keys": message.keys,
        "properties": message.properties,
        "bornTimestamp": message.born_timestamp_ms,
        "storeTimestamp": message.store_timestamp_ms,
        "bornHost": message.born_host.to_string(),
        "storeHost": message.store_host.to_string(),
        "reconsumeTimes": message.reconsume_times,
        "flag": message.flag,
        "bodyBytes": message.body.len(),
        "body": String::from_utf8_lossy(&message.body),
    })
}

/// A message as `key: value` lines, the body last.
pub fn message_text(message: &ReceivedMessage) -> String {
    let properties: Vec<String> = message
        .properties
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    key_values(&[
        ("Topic".into(), message.topic.clone()),
        ("Queue".into(), message.queue_id.to_string()),
        ("Queue offset".into(), message.queue_offset.to_string()),
        ("Msg id".into(), message.msg_id.clone()),
        ("Offset msg id".into(), message.offset_msg_id.clone()),
        ("Tags".into(), message.tags.clone().unwrap_or_default()),
        ("Keys".into(), message.keys.join(" ")),
        (
            "Born".into(),
            format!(
                "{} from {}",
                format_time_ms(message.born_timestamp_ms),
                message.born_host
            ),
        ),
        (
            "Stored".into(),
            format!(
                "{} on {}",
                format_time_ms(message.store_timestamp_ms),
                message.store_host
            ),
        ),
        (
            "Reconsume times".into(),
            message.reconsume_times.to_string(),
        ),
        ("Properties".into(), properties.join(" ")),
        (
            "Body".into(),
            format!(
                "{} ({} bytes)",
                String::from_utf8_lossy(&message.body),
                message.body.len()
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(["TOPIC", "QUEUES"]);
        table.row(vec!["a-long-topic".into(), "8".into()]);
        table.row(vec!["t".into(), "16".into()]);
        assert_eq!(
            table.render(),
            "TOPIC         QUEUES\na-long-topic  8\nt             16\n"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            format_time_ms(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
    }

    #[test]
    fn key_values_align() {
        let text = key_values(&[("A".into(), "1".into()), ("Long".into(), "2".into())]);
        assert_eq!(text, "A:    1\nLong: 2\n");
    }
}
