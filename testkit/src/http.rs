//! Plain HTTP/1.0 GET, for a broker's Prometheus endpoint, and the samples of a text exposition.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::remoting::REQUEST_TIMEOUT;

/// `GET path` over plain HTTP/1.0; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|error| panic!("connect to the metrics endpoint {addr}: {error}"));
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("set a read timeout");
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|error| panic!("send the HTTP request to {addr}: {error}"));
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let (head_end, content_length) = loop {
        let read = stream.read(&mut chunk).expect("read the HTTP response");
        assert!(read > 0 || !raw.is_empty(), "empty HTTP response");
        raw.extend_from_slice(&chunk[..read]);
        if let Some(at) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let length = head.lines().find_map(|line| {
                line.strip_prefix("content-length:")
                    .and_then(|value| value.trim().parse::<usize>().ok())
            });
            break (at + 4, length);
        }
        assert!(read > 0, "HTTP response ended inside its head");
    };
    // Read the body: up to Content-Length if given, else to EOF.
    loop {
        if content_length.is_some_and(|length| raw.len() >= head_end + length) {
            break;
        }
        let read = stream.read(&mut chunk).expect("read the HTTP body");
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP status line in {head:?}"));
    let mut body = raw[head_end..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|window| window == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = &bytes[(size + 2).min(bytes.len())..];
    }
}

/// The samples of a Prometheus text exposition: series (name with labels) to value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.rfind('}') {
            Some(close) => (&line[..=close], &line[close + 1..]),
            None => match line.split_once(char::is_whitespace) {
                Some(split) => split,
                None => continue,
            },
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        {
            samples.insert(series.trim().to_owned(), value);
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b""), b"");
    }

    #[test]
    fn metrics_text_gives_every_sample() {
        let text = "# HELP ringmq_sends_total Sends.\n\
                    # TYPE ringmq_sends_total counter\n\
                    ringmq_sends_total{shard=\"0\"} 3\n\
                    ringmq_sends_total{shard=\"1\"} 4 1700000000000\n\
                    ringmq_up 1\n\
                    not_a_number x\n";
        let samples = parse_metrics(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert!((samples["ringmq_sends_total{shard=\"1\"}"] - 4.0).abs() < 1e-9);
        assert!((samples["ringmq_up"] - 1.0).abs() < 1e-9);
    }
}
