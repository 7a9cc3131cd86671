//! Rendering: the catalogue's values as Prometheus text exposition format 0.0.4.
//!
//! The output is byte-for-byte what dashboards and the tests expect (`testdata/exposition.txt`
//! pins it): one `# HELP` and one `# TYPE` line per family before its samples, per-shard samples
//! labelled `shard="N"`, histogram bounds and sums in seconds written exactly from integer
//! microseconds.

use std::fmt;

use super::{
    catalogue::{
        BROKER_INFO, BrokerMetrics, DISK_AVAILABLE_BYTES, DISK_TOTAL_BYTES, DISK_USED_RATIO,
        Family, REQUESTS_TOTAL, RequestKind, SHARD_COUNTERS, SHARD_GAUGES, SHARD_HISTOGRAMS,
        UPTIME,
    },
    primitives::{HistogramSnapshot, LATENCY_BUCKET_BOUNDS_US},
};

impl BrokerMetrics {
    /// Appends every metric to `out` in the Prometheus text format 0.0.4. Allocates only to
    /// grow `out`; reuse the buffer across scrapes.
    pub fn render(&self, out: &mut String) {
        let result = self.write_metrics(out);
        // `String`'s `fmt::Write` never fails, and nothing written here has a failing `Display`.
        debug_assert!(result.is_ok(), "formatting into a String failed");
    }

    fn write_metrics<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        write_family_header(out, BROKER_INFO)?;
        out.write_str("ringmq_broker_info{broker=\"")?;
        write_label_value(out, &self.broker_name)?;
        writeln!(out, "\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))?;

        write_family_header(out, UPTIME)?;
        out.write_str("ringmq_uptime_seconds ")?;
        let uptime_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        write_seconds_from_us(out, uptime_us)?;
        out.write_char('\n')?;

        write_family_header(out, REQUESTS_TOTAL)?;
        for (shard_index, shard) in self.shards.iter().enumerate() {
            for kind in RequestKind::ALL {
                writeln!(
                    out,
                    "ringmq_requests_total{{shard=\"{shard_index}\",kind=\"{}\"}} {}",
                    kind.name(),
                    shard.request(kind).get()
                )?;
            }
        }

        for family in SHARD_COUNTERS {
            write_header(out, family.name, family.help, "counter")?;
            for (shard_index, shard) in self.shards.iter().enumerate() {
                let value = (family.get)(shard).get();
                writeln!(out, "{}{{shard=\"{shard_index}\"}} {value}", family.name)?;
            }
        }
        for family in SHARD_GAUGES {
            write_header(out, family.name, family.help, "gauge")?;
            for (shard_index, shard) in self.shards.iter().enumerate() {
                let value = (family.get)(shard).get();
                writeln!(out, "{}{{shard=\"{shard_index}\"}} {value}", family.name)?;
            }
        }
        for family in SHARD_HISTOGRAMS {
            write_header(out, family.name, family.help, "histogram")?;
            for (shard_index, shard) in self.shards.iter().enumerate() {
                write_histogram(
                    out,
                    family.name,
                    shard_index,
                    &(family.get)(shard).snapshot(),
                )?;
            }
        }

        for (name, help, gauge) in self.broker_gauges() {
            write_header(out, name, help, "gauge")?;
            writeln!(out, "{name} {}", gauge.get())?;
        }
        for (name, help, counter) in self.broker_counters() {
            write_header(out, name, help, "counter")?;
            writeln!(out, "{name} {}", counter.get())?;
        }

        self.write_disk_usage(out)
    }

    /// Disk usage of the filesystem holding the store directory, measured now. Skipped silently
    /// when `statvfs` fails: the directory may not exist yet (first start), and a scrape must
    /// not fail because of it.
    fn write_disk_usage<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let Ok(stat) = rustix::fs::statvfs(&self.store_dir) else {
            return Ok(());
        };
        // Block counts are in units of the fragment size. "Available" excludes the blocks
        // reserved for root, which the broker cannot use; "used" is what `df` calls used.
        let total_bytes = stat.f_blocks.saturating_mul(stat.f_frsize);
        let available_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
        let used_bytes = stat
            .f_blocks
            .saturating_sub(stat.f_bfree)
            .saturating_mul(stat.f_frsize);

        write_family_header(out, DISK_TOTAL_BYTES)?;
        writeln!(out, "ringmq_disk_total_bytes {total_bytes}")?;
        write_family_header(out, DISK_AVAILABLE_BYTES)?;
        writeln!(out, "ringmq_disk_available_bytes {available_bytes}")?;

        // Same as `df`'s Use%: used over what non-root users can ever have (used + available).
        // A pseudo-filesystem can report zero blocks; a ratio would then be meaningless.
        let usable_bytes = used_bytes.saturating_add(available_bytes);
        if usable_bytes > 0 {
            write_family_header(out, DISK_USED_RATIO)?;
            // Past 2^53 bytes the conversion rounds, which a ratio does not notice.
            #[allow(clippy::cast_precision_loss)]
            let ratio = used_bytes as f64 / usable_bytes as f64;
            writeln!(out, "ringmq_disk_used_ratio {ratio}")?;
        }
        Ok(())
    }
}

fn write_family_header<W: fmt::Write>(out: &mut W, family: Family) -> fmt::Result {
    write_header(out, family.name, family.help, family.kind)
}

/// Writes the `# HELP` and `# TYPE` lines of a family. Help texts are constants without
/// backslashes or newlines, so they need no escaping.
fn write_header<W: fmt::Write>(
    out: &mut W,
    name: &str,
    help: &str,
    metric_type: &str,
) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {metric_type}")
}

/// Writes one shard's histogram: cumulative `_bucket` lines up to `+Inf`, then `_sum` and
/// `_count`, with bounds and sum converted from µs to seconds.
fn write_histogram<W: fmt::Write>(
    out: &mut W,
    name: &str,
    shard_index: usize,
    snapshot: &HistogramSnapshot,
) -> fmt::Result {
    let mut cumulative: u64 = 0;
    for (bound_us, count) in LATENCY_BUCKET_BOUNDS_US.iter().zip(snapshot.bucket_counts) {
        cumulative += count;
        write!(out, "{name}_bucket{{shard=\"{shard_index}\",le=\"")?;
        write_seconds_from_us(out, *bound_us)?;
        writeln!(out, "\"}} {cumulative}")?;
    }
    let count = snapshot.count();
    writeln!(
        out,
        "{name}_bucket{{shard=\"{shard_index}\",le=\"+Inf\"}} {count}"
    )?;
    write!(out, "{name}_sum{{shard=\"{shard_index}\"}} ")?;
    write_seconds_from_us(out, snapshot.sum_us)?;
    writeln!(out, "\n{name}_count{{shard=\"{shard_index}\"}} {count}")
}

/// Writes `value_us` as decimal seconds, exactly (integer arithmetic, no float rounding), with
/// no trailing zeros: 1 → `0.000001`, 1500 → `0.0015`, 2_000_000 → `2`.
fn write_seconds_from_us<W: fmt::Write>(out: &mut W, value_us: u64) -> fmt::Result {
    let whole_seconds = value_us / 1_000_000;
    let mut fraction = value_us % 1_000_000;
    if fraction == 0 {
        return write!(out, "{whole_seconds}");
    }
    let mut digits = 6;
    while fraction % 10 == 0 {
        fraction /= 10;
        digits -= 1;
    }
    write!(out, "{whole_seconds}.{fraction:0digits$}")
}

/// Writes a label value with the escapes the text format requires (`\\`, `\"`, `\n`).
fn write_label_value<W: fmt::Write>(out: &mut W, value: &str) -> fmt::Result {
    for character in value.chars() {
        match character {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            other => out.write_char(other)?,
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use super::*;
    use crate::metrics::{
        LATENCY_BUCKET_COUNT,
        test_support::{metrics, rendered, sample},
    };

    #[test]
    fn histogram_renders_cumulative_buckets_in_seconds() {
        let metrics = metrics(2);
        let latency = &metrics.shard(1).send_latency;
        for value_us in [1, 4, 5, 700, 2_500_000, 20_000_000] {
            latency.record_us(value_us);
        }
        let text = rendered(&metrics);
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("ringmq_send_latency_seconds_bucket{{shard=\"1\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.000001"), Some(1.0));
        assert_eq!(bucket("0.000002"), Some(1.0));
        assert_eq!(bucket("0.000005"), Some(3.0));
        assert_eq!(bucket("0.0005"), Some(3.0));
        assert_eq!(bucket("0.001"), Some(4.0));
        assert_eq!(bucket("2"), Some(4.0));
        assert_eq!(bucket("5"), Some(5.0));
        assert_eq!(bucket("10"), Some(5.0));
        assert_eq!(bucket("+Inf"), Some(6.0));
        assert_eq!(
            sample(&text, "ringmq_send_latency_seconds_count{shard=\"1\"}"),
            Some(6.0)
        );
        assert!(text.contains("ringmq_send_latency_seconds_sum{shard=\"1\"} 22.50071\n"));
        // The other shard is rendered too, all zero.
        assert_eq!(
            sample(
                &text,
                "ringmq_send_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"}"
            ),
            Some(0.0)
        );
        assert!(text.contains("ringmq_send_latency_seconds_sum{shard=\"0\"} 0\n"));

        // Buckets never decrease from one bound to the next.
        let counts: Vec<f64> = text
            .lines()
            .filter(|line| line.starts_with("ringmq_send_latency_seconds_bucket{shard=\"1\""))
            .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(counts.len(), LATENCY_BUCKET_COUNT);
        assert!(counts.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn seconds_are_written_exactly_without_trailing_zeros() {
        for (value_us, expected) in [
            (0, "0"),
            (1, "0.000001"),
            (10, "0.00001"),
            (1_500, "0.0015"),
            (1_000_000, "1"),
            (2_500_001, "2.500001"),
            (10_000_000, "10"),
        ] {
            let mut out = String::new();
            write_seconds_from_us(&mut out, value_us).unwrap();
            assert_eq!(out, expected, "{value_us} µs");
        }
    }

    /// Splits `name{labels} value` (labels optional) and checks each part's syntax.
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        let name_ok = name.starts_with("ringmq_")
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':');
        assert!(name_ok, "bad name: {line}");
        let labels = if labels.is_empty() {
            Vec::new()
        } else {
            labels
                .split(',')
                .map(|pair| {
                    let (key, quoted) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    let unquoted = quoted
                        .strip_prefix('"')
                        .and_then(|rest| rest.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label: {line}"));
                    assert!(
                        key.bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'),
                        "bad label name: {line}"
                    );
                    (key.to_owned(), unquoted.to_owned())
                })
                .collect()
        };
        (name.to_owned(), labels, value)
    }

    /// Checks the structure of a whole exposition: one HELP then one TYPE per family, every
    /// sample after its family's TYPE and parsable. Returns the families.
    fn check_exposition(text: &str) -> HashSet<String> {
        let mut helped = HashSet::new();
        let mut typed = HashSet::new();
        let mut histograms = HashSet::new();
        let mut sample_count = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_owned()), "HELP twice: {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, metric_type) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {name}");
                assert!(
                    matches!(metric_type, "counter" | "gauge" | "histogram"),
                    "{line}"
                );
                assert!(typed.insert(name.to_owned()), "TYPE twice: {name}");
                if metric_type == "histogram" {
                    histograms.insert(name.to_owned());
                }
            } else {
                let (name, labels, _value) = parse_sample(line);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|family| histograms.contains(*family))
                    })
                    .unwrap_or(&name);
                assert!(typed.contains(family), "sample before its TYPE: {line}");
                if name.ends_with("_bucket") {
                    assert_eq!(labels.last().unwrap().0, "le", "{line}");
                }
                sample_count += 1;
            }
        }
        assert!(sample_count > 100, "{sample_count} samples");
        typed
    }

    #[test]
    fn render_gives_every_family_help_and_type_and_every_line_parses() {
        let metrics = metrics(3);
        metrics.shard(0).request(RequestKind::Send).add(5);
        metrics.shard(2).request(RequestKind::Pull).inc();
        metrics.shard(2).request(RequestKind::Pull).inc();
        metrics.shard(1).bytes_received_total.add(1_234);
        metrics.shard(1).connections.set(7);
        metrics.shard(1).connections.dec();
        metrics.shard(0).parked_pulls.sub(2);
        metrics
            .shard(2)
            .flush_latency
            .record(Duration::from_micros(1_700));
        metrics.topics.set(12);
        metrics.namesrv_registrations_failed_total.inc();
        let text = rendered(&metrics);

        let typed = check_exposition(&text);
        for family in [
            "ringmq_broker_info",
            "ringmq_uptime_seconds",
            "ringmq_requests_total",
            "ringmq_request_errors_total",
            "ringmq_bytes_received_total",
            "ringmq_bytes_sent_total",
            "ringmq_messages_stored_total",
            "ringmq_messages_delivered_total",
            "ringmq_connections",
            "ringmq_inflight_requests",
            "ringmq_cross_shard_queue_depth",
            "ringmq_parked_pulls",
            "ringmq_slave_wait_failures_total",
            "ringmq_replica_slaves",
            "ringmq_replica_lag_bytes",
            "ringmq_replica_lag_ms",
            "ringmq_send_latency_seconds",
            "ringmq_pull_latency_seconds",
            "ringmq_flush_latency_seconds",
            "ringmq_topics",
            "ringmq_consumer_groups",
            "ringmq_producer_groups",
            "ringmq_namesrv_registrations_ok_total",
            "ringmq_namesrv_registrations_failed_total",
            "ringmq_metadata_syncs_ok_total",
            "ringmq_metadata_syncs_failed_total",
            "ringmq_disk_used_ratio",
            "ringmq_disk_total_bytes",
            "ringmq_disk_available_bytes",
        ] {
            assert!(typed.contains(family), "missing {family}");
        }

        for (series, expected) in [
            ("ringmq_requests_total{shard=\"0\",kind=\"send\"}", 5.0),
            ("ringmq_requests_total{shard=\"2\",kind=\"pull\"}", 2.0),
            (
                "ringmq_requests_total{shard=\"1\",kind=\"send_batch\"}",
                0.0,
            ),
            ("ringmq_bytes_received_total{shard=\"1\"}", 1_234.0),
            ("ringmq_connections{shard=\"1\"}", 6.0),
            ("ringmq_parked_pulls{shard=\"0\"}", -2.0),
            (
                "ringmq_flush_latency_seconds_bucket{shard=\"2\",le=\"0.002\"}",
                1.0,
            ),
            ("ringmq_topics", 12.0),
            ("ringmq_namesrv_registrations_failed_total", 1.0),
            ("ringmq_namesrv_registrations_ok_total", 0.0),
        ] {
            assert_eq!(sample(&text, series), Some(expected), "{series}");
        }
        // Every request kind for every shard.
        for shard_index in 0..3 {
            for kind in RequestKind::ALL {
                let series = format!(
                    "ringmq_requests_total{{shard=\"{shard_index}\",kind=\"{}\"}}",
                    kind.name()
                );
                assert!(sample(&text, &series).is_some(), "{series}");
            }
        }
        let ratio = sample(&text, "ringmq_disk_used_ratio").unwrap();
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        assert!(sample(&text, "ringmq_disk_total_bytes").unwrap() > 0.0);
    }

    #[test]
    fn disk_usage_is_skipped_when_the_store_directory_does_not_exist() {
        let missing = std::env::temp_dir().join(format!(
            "ringmq-metrics-missing-{}/store",
            std::process::id()
        ));
        let metrics = BrokerMetrics::new(1, missing, "broker-a".into());
        let text = rendered(&metrics);
        assert!(!text.contains("ringmq_disk_"), "{text}");
        assert!(text.contains("ringmq_uptime_seconds "));
    }

    #[test]
    fn broker_name_label_is_escaped() {
        let metrics = BrokerMetrics::new(1, std::env::temp_dir(), "a\"b\\c\nd".into());
        let text = rendered(&metrics);
        assert!(
            text.contains("ringmq_broker_info{broker=\"a\\\"b\\\\c\\nd\",version=\""),
            "{text}"
        );
    }

    /// The whole exposition, byte for byte, against the text the broker rendered before the
    /// metrics module was split (uptime and disk samples vary and are compared by name only).
    #[test]
    fn exposition_is_byte_compatible() {
        let metrics = BrokerMetrics::new(2, std::env::temp_dir(), "broker-\"a".into());
        metrics.shard(0).request(RequestKind::Send).add(5);
        metrics.shard(1).request(RequestKind::Other).add(3);
        metrics.shard(1).bytes_received_total.add(77);
        metrics.shard(0).connections.set(4);
        metrics.shard(1).replica_lag_ms.set(-3);
        metrics.shard(0).send_latency.record_us(1500);
        metrics.shard(1).flush_latency.record_us(20_000_001);
        metrics.topics.set(9);
        metrics.metadata_syncs_failed_total.inc();
        let comparable = |text: &str| -> String {
            text.lines()
                .map(|line| {
                    let varies = line.starts_with("ringmq_uptime_seconds ")
                        || line.starts_with("ringmq_disk_");
                    match line.rsplit_once(' ') {
                        Some((series, _)) if varies => format!("{series} <value>"),
                        _ => line.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let expected =
            include_str!("testdata/exposition.txt").replace("{version}", env!("CARGO_PKG_VERSION"));
        assert_eq!(comparable(&rendered(&metrics)), comparable(&expected));
    }
}
