//! Java `.properties` text (what `broker.conf` is): `key=value` or `key: value` or `key value`
//! lines, `#`/`!` comments, backslash line continuation and the usual escapes, as
//! `java.util.Properties.load` reads them. The last occurrence of a key wins.

/// One `key = value` entry with the line it started on (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses properties text into entries, in file order.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes continues.
        let mut logical = String::from(trimmed);
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        entries.push(Entry {
            key: unescape(key),
            value: unescape(value),
            line: index + 1,
        });
    }
    entries
}

fn ends_with_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or whitespace; separators around it are skipped.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => at += 1,
        }
    }
    let at = at.min(bytes.len());
    let key = &line[..at];
    let mut rest = line[at..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Some(decoded) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(decoded);
                } else {
                    out.push_str("\\u");
                    out.push_str(&hex);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).into_iter().map(|e| (e.key, e.value)).collect()
    }

    #[test]
    fn reads_what_java_reads() {
        let text = "# comment\n! also a comment\n\nbrokerName = broker-a\nbrokerId:0\nlistenPort 10911\n  namesrvAddr=127.0.0.1:9876;\\\n    127.0.0.2:9876\nstorePathRootDir=/data/store\\\\\nempty=\nspaced\\ key=v\\u0041\n";
        assert_eq!(
            pairs(text),
            [
                ("brokerName", "broker-a"),
                ("brokerId", "0"),
                ("listenPort", "10911"),
                ("namesrvAddr", "127.0.0.1:9876;127.0.0.2:9876"),
                ("storePathRootDir", "/data/store\\"),
                ("empty", ""),
                ("spaced key", "vA"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(parse("a=1\n\nb=2\n")[1].line, 3);
    }
}
