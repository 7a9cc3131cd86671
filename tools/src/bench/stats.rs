//! Accounting: what each client thread records, the per-second progress line, and the final
//! summary (text for stdout, JSON for `--json`).
//!
//! Latencies are recorded in microseconds into HDR histograms (1 µs to 60 s, 3 significant
//! digits); a value past the top is clamped to it rather than lost, so a stalled request still
//! shows in `max`. MB are 10^6 payload bytes (message bodies only, not headers or framing).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;
use ringmq_protocol::ResponseCode;
use serde::Serialize;

use super::args::{Mode, Params};

/// Highest latency a histogram holds: 60 s in µs.
const MAX_LATENCY_US: u64 = 60_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Microseconds of `elapsed`, saturating.
pub fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Counters and histograms of one client thread, or the sum of several.
///
/// Worker connections lock their thread's recorder once per received chunk of responses, and the
/// reporter takes it over once a second ([`Recorder::drain_into`]), so the lock is uncontended.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Messages acknowledged with SUCCESS.
    pub sent_messages: u64,
    /// Body bytes of those.
    pub sent_bytes: u64,
    /// Messages received by pulls.
    pub received_messages: u64,
    /// Body bytes of those.
    pub received_bytes: u64,
    /// Send request round trips (a batch request is one sample).
    pub send_latency: Histogram<u64>,
    /// Pull request round trips (long-polling holds included).
    pub pull_latency: Histogram<u64>,
    /// Send-to-receipt time per message (e2e).
    pub e2e_latency: Histogram<u64>,
    /// Non-SUCCESS responses by code (pull's expected NOT_FOUND/RETRY/OFFSET_MOVED are not errors).
    pub errors: BTreeMap<i32, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            sent_messages: 0,
            sent_bytes: 0,
            received_messages: 0,
            received_bytes: 0,
            send_latency: new_histogram(),
            pull_latency: new_histogram(),
            e2e_latency: new_histogram(),
            errors: BTreeMap::new(),
        }
    }

    /// Records one acknowledged send request of `messages` messages.
    pub fn record_sent(&mut self, messages: u64, bytes: u64, latency_us: u64) {
        self.sent_messages += messages;
        self.sent_bytes += bytes;
        self.send_latency.saturating_record(latency_us.max(1));
    }

    /// Records one pull's round trip.
    pub fn record_pull(&mut self, latency_us: u64) {
        self.pull_latency.saturating_record(latency_us.max(1));
    }

    /// Records received messages.
    pub fn record_received(&mut self, messages: u64, bytes: u64) {
        self.received_messages += messages;
        self.received_bytes += bytes;
    }

    /// Records one message's send-to-receipt time.
    pub fn record_e2e(&mut self, latency_us: u64) {
        self.e2e_latency.saturating_record(latency_us.max(1));
    }

    /// Counts a response code as an error.
    pub fn record_error(&mut self, code: i32) {
        *self.errors.entry(code).or_insert(0) += 1;
    }

    /// Adds everything in `self` to `into` and empties `self` (histogram storage is kept).
    pub fn drain_into(&mut self, into: &mut Self) {
        into.add(self);
        self.sent_messages = 0;
        self.sent_bytes = 0;
        self.received_messages = 0;
        self.received_bytes = 0;
        self.send_latency.reset();
        self.pull_latency.reset();
        self.e2e_latency.reset();
        self.errors.clear();
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Self) {
        self.sent_messages += other.sent_messages;
        self.sent_bytes += other.sent_bytes;
        self.received_messages += other.received_messages;
        self.received_bytes += other.received_bytes;
        for (into, from) in [
            (&mut self.send_latency, &other.send_latency),
            (&mut self.pull_latency, &other.pull_latency),
            (&mut self.e2e_latency, &other.e2e_latency),
        ] {
            into.add(from)
                .expect("histograms with identical bounds always add");
        }
        for (code, count) in &other.errors {
            *self.errors.entry(*code).or_insert(0) += count;
        }
    }

    /// The figures that count for `mode`: messages, payload bytes and the main latency.
    pub fn headline(&self, mode: Mode) -> (u64, u64, &Histogram<u64>) {
        match mode {
            Mode::Produce => (self.sent_messages, self.sent_bytes, &self.send_latency),
            Mode::Consume => (
                self.received_messages,
                self.received_bytes,
                &self.pull_latency,
            ),
            Mode::E2e => (
                self.received_messages,
                self.received_bytes,
                &self.e2e_latency,
            ),
        }
    }

    /// Total error responses.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What the headline latency of a mode measures.
pub const fn latency_kind(mode: Mode) -> &'static str {
    match mode {
        Mode::Produce => "send round trip",
        Mode::Consume => "pull round trip",
        Mode::E2e => "send to receipt",
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            samples: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// Error responses of one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub code: i32,
    pub name: &'static str,
    pub count: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: Mode,
    /// The broker benchmarked.
    pub broker: String,
    /// Messages counted for the mode (produce: acknowledged; consume and e2e: received).
    pub messages: u64,
    /// Measured wall time (warm-up excluded).
    pub seconds: f64,
    pub msgs_per_sec: f64,
    /// Payload MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// What `latency_us` measures.
    pub latency: &'static str,
    pub latency_us: LatencySummary,
    /// e2e: send round trips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_latency_us: Option<LatencySummary>,
    /// e2e: messages acknowledged by the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_messages: Option<u64>,
    /// Error responses by code.
    pub errors: Vec<ErrorCount>,
    /// The run ended inside the warm-up, so the warm-up is included in the figures.
    pub warmup_included: bool,
    /// The settings of the run.
    pub params: Params,
}

/// `count / seconds`, 0 for an empty interval.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

impl Summary {
    /// Builds the summary of a run from its measured totals.
    pub fn new(
        params: &Params,
        broker: String,
        total: &Recorder,
        measured: Duration,
        warmup_included: bool,
    ) -> Self {
        let mode = params.mode;
        let seconds = measured.as_secs_f64();
        let (messages, bytes, latency) = total.headline(mode);
        let e2e = mode == Mode::E2e;
        Self {
            mode,
            broker,
            messages,
            seconds,
            msgs_per_sec: per_second(messages, seconds),
            mb_per_sec: per_second(bytes, seconds) / 1e6,
            latency: latency_kind(mode),
            latency_us: LatencySummary::of(latency),
            send_latency_us: e2e.then(|| LatencySummary::of(&total.send_latency)),
            sent_messages: e2e.then_some(total.sent_messages),
            errors: total
                .errors
                .iter()
                .map(|(&code, &count)| ErrorCount {
                    code,
                    name: ResponseCode::from_i32(code).name(),
                    count,
                })
                .collect(),
            warmup_included,
            params: params.clone(),
        }
    }

    /// Total error responses.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().map(|e| e.count).sum()
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the summary serializes")
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn latency_line(latency: &LatencySummary) -> String {
    if latency.samples == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({} samples)",
        ms(latency.p50),
        ms(latency.p99),
        ms(latency.p999),
        ms(latency.max),
        thousands(latency.samples)
    )
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.params;
        writeln!(f, "mode        {}", self.mode)?;
        writeln!(
            f,
            "broker      {}  topic {} ({} queues)",
            self.broker, p.topic, p.queues
        )?;
        if self.mode == Mode::Consume {
            writeln!(
                f,
                "load        {} connection(s), one pull of up to 32 messages per queue in flight \
                 (at most {} per connection), {} thread(s)",
                p.connections.min(p.queues as usize),
                p.inflight,
                p.threads
            )?;
        } else {
            writeln!(
                f,
                "load        {} connections x {} in flight, {}-byte bodies, batch {}, {} thread(s){}",
                p.connections,
                p.inflight,
                p.size,
                p.batch,
                p.threads,
                if p.rate > 0 {
                    format!(", rate {} msgs/s", thousands(p.rate))
                } else {
                    String::new()
                }
            )?;
        }
        writeln!(
            f,
            "messages    {} in {:.2} s{}",
            thousands(self.messages),
            self.seconds,
            if self.warmup_included {
                " (run ended during warm-up: warm-up included)"
            } else {
                ""
            }
        )?;
        if let Some(sent) = self.sent_messages {
            writeln!(f, "sent        {} acknowledged", thousands(sent))?;
        }
        writeln!(
            f,
            "throughput  {} msgs/s  {:.1} MB/s (payload, 1 MB = 10^6 bytes)",
            thousands(self.msgs_per_sec.round() as u64),
            self.mb_per_sec
        )?;
        writeln!(
            f,
            "latency     {}: {}",
            self.latency,
            latency_line(&self.latency_us)
        )?;
        if let Some(send) = &self.send_latency_us {
            writeln!(f, "send        send round trip: {}", latency_line(send))?;
        }
        let mut errors = String::new();
        for error in &self.errors {
            if !errors.is_empty() {
                errors.push_str(", ");
            }
            let _ = write!(
                errors,
                "{}({}) x {}",
                error.name,
                error.code,
                thousands(error.count)
            );
        }
        writeln!(
            f,
            "errors      {}",
            if errors.is_empty() { "none" } else { &errors }
        )
    }
}

/// The progress line of one interval, e.g. `   3s  312,402 msgs/s  305.1 MB/s  p99 1.23 ms`.
pub fn progress_line(
    mode: Mode,
    elapsed_secs: u64,
    interval: &Recorder,
    interval_secs: f64,
    warmup: bool,
) -> String {
    let (messages, bytes, latency) = interval.headline(mode);
    let mut line = format!(
        "{elapsed_secs:>4}s  {} msgs/s  {:.1} MB/s  p99 {}",
        thousands(per_second(messages, interval_secs).round() as u64),
        per_second(bytes, interval_secs) / 1e6,
        if latency.is_empty() {
            "-".to_owned()
        } else {
            format!("{} ms", ms(latency.value_at_quantile(0.99)))
        }
    );
    if mode == Mode::E2e {
        let _ = write!(
            line,
            "  (sent {} msgs/s)",
            thousands(per_second(interval.sent_messages, interval_secs).round() as u64)
        );
    }
    let errors = interval.error_count();
    if errors > 0 {
        let _ = write!(line, "  {} errors", thousands(errors));
    }
    if warmup {
        line.push_str("  (warm-up)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::Args;
    use clap::Parser as _;

    fn params(line: &str) -> Params {
        Args::try_parse_from(line.split_whitespace())
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(312_402), "312,402");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn recorder_accounts_per_mode() {
        let mut recorder = Recorder::new();
        recorder.record_sent(4, 4096, 1500);
        recorder.record_sent(1, 1024, 0);
        recorder.record_received(3, 300);
        recorder.record_pull(800);
        recorder.record_e2e(2500);
        recorder.record_error(2);
        recorder.record_error(2);
        recorder.record_error(17);
        let (messages, bytes, latency) = recorder.headline(Mode::Produce);
        assert_eq!((messages, bytes, latency.len()), (5, 5120, 2));
        assert_eq!(latency.min(), 1, "zero is recorded as 1 µs");
        let (messages, bytes, latency) = recorder.headline(Mode::Consume);
        assert_eq!((messages, bytes, latency.len()), (3, 300, 1));
        let (_, _, latency) = recorder.headline(Mode::E2e);
        assert_eq!(latency.len(), 1);
        assert_eq!(recorder.error_count(), 3);
    }

    #[test]
    fn drain_moves_everything_and_empties_the_source() {
        let mut interval = Recorder::new();
        interval.record_sent(1, 10, 100);
        interval.record_error(1);
        interval.record_sent(1, 10, u64::MAX);
        let mut total = Recorder::new();
        total.record_sent(1, 10, 200);
        interval.drain_into(&mut total);
        assert_eq!((total.sent_messages, total.sent_bytes), (3, 30));
        assert_eq!(total.send_latency.len(), 3);
        let top = total.send_latency.max();
        assert!(
            top >= MAX_LATENCY_US * 999 / 1000,
            "saturated, not dropped: {top}"
        );
        assert_eq!(total.errors[&1], 1);
        assert_eq!(interval.sent_messages, 0);
        assert!(interval.send_latency.is_empty() && interval.errors.is_empty());
    }

    #[test]
    fn summary_rates_use_measured_seconds_and_decimal_megabytes() {
        let params = params("ringmq-bench produce --broker h:1 --size 1000");
        let mut total = Recorder::new();
        for latency in 1..=1000 {
            total.record_sent(1, 1000, latency);
        }
        total.record_error(2);
        let summary = Summary::new(
            &params,
            "h:1".into(),
            &total,
            Duration::from_millis(500),
            false,
        );
        assert_eq!(summary.messages, 1000);
        assert!((summary.msgs_per_sec - 2000.0).abs() < 1e-9);
        assert!(
            (summary.mb_per_sec - 2.0).abs() < 1e-9,
            "2e6 bytes/s = 2 MB/s"
        );
        assert_eq!(summary.latency_us.p50, 500);
        assert_eq!(summary.latency_us.p99, 990);
        assert_eq!(summary.latency_us.p999, 999);
        assert_eq!(summary.latency_us.max, 1000);
        assert_eq!(summary.error_count(), 1);
        assert_eq!(summary.send_latency_us, None);
    }

    #[test]
    fn summary_json_has_the_documented_fields() {
        let params = params("ringmq-bench e2e --broker h:1 --rate 100");
        let mut total = Recorder::new();
        total.record_sent(10, 10_240, 300);
        total.record_received(10, 10_240);
        total.record_e2e(1200);
        total.record_error(2);
        let summary = Summary::new(&params, "h:1".into(), &total, Duration::from_secs(2), false);
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["mode"], "e2e");
        assert_eq!(json["messages"], 10);
        assert_eq!(json["seconds"], 2.0);
        assert_eq!(json["msgs_per_sec"], 5.0);
        assert_eq!(json["mb_per_sec"], 0.00512);
        for key in ["p50", "p99", "p999", "max"] {
            assert!(json["latency_us"][key].is_u64(), "{key}");
        }
        assert_eq!(json["latency_us"]["max"], 1200);
        assert_eq!(json["send_latency_us"]["max"], 300);
        assert_eq!(json["sent_messages"], 10);
        assert_eq!(json["errors"][0]["code"], 2);
        assert_eq!(json["errors"][0]["name"], "SYSTEM_BUSY");
        assert_eq!(json["errors"][0]["count"], 1);
        assert_eq!(json["params"]["rate"], 100);
        assert_eq!(json["params"]["topic"], "BenchTopic");
    }

    #[test]
    fn summary_text_names_units() {
        let params = params("ringmq-bench consume --broker h:1");
        let mut total = Recorder::new();
        total.record_received(2_000_000, 2_048_000_000);
        total.record_pull(1230);
        let text =
            Summary::new(&params, "h:1".into(), &total, Duration::from_secs(4), false).to_string();
        assert!(text.contains("messages    2,000,000 in 4.00 s"), "{text}");
        assert!(
            text.contains("throughput  500,000 msgs/s  512.0 MB/s (payload, 1 MB = 10^6 bytes)"),
            "{text}"
        );
        assert!(text.contains("pull round trip: p50 1.23 ms"), "{text}");
        assert!(text.contains("errors      none"), "{text}");
        let empty = Summary::new(
            &params,
            "h:1".into(),
            &Recorder::new(),
            Duration::ZERO,
            true,
        );
        assert!(empty.msgs_per_sec.abs() < f64::EPSILON);
        let text = empty.to_string();
        assert!(
            text.contains("no samples") && text.contains("warm-up included"),
            "{text}"
        );
    }

    #[test]
    fn progress_line_shape() {
        let mut interval = Recorder::new();
        for _ in 0..312_402 {
            interval.record_sent(1, 1000, 1230);
        }
        let line = progress_line(Mode::Produce, 3, &interval, 1.0, false);
        assert_eq!(line, "   3s  312,402 msgs/s  312.4 MB/s  p99 1.23 ms");
        interval.record_error(2);
        let line = progress_line(Mode::E2e, 1, &interval, 1.0, true);
        assert_eq!(
            line,
            "   1s  0 msgs/s  0.0 MB/s  p99 -  (sent 312,402 msgs/s)  1 errors  (warm-up)"
        );
    }
}
