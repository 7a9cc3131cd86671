//! Accepting what fastjson accepts and other clients send: maps with integer keys written with
//! the keys unquoted (`{"brokerAddrs":{0:"10.0.0.1:10911"}}`), which no JSON parser accepts, and
//! integers written as strings (the Go client's `"codeSet":["2598919"]`), which fastjson reads
//! into int fields.

use serde::{Deserialize, Deserializer, de::Error as _};

/// Returns `json` with every bare integer object key quoted, or `None` if there was none.
///
/// A bare integer is a key exactly when it follows `{` or `,` outside a string and is followed by
/// `:`; array elements are never followed by `:`, so they are left alone. The scan tracks string
/// and escape state, so digits inside strings are never touched.
pub fn quote_numeric_keys(json: &[u8]) -> Option<Vec<u8>> {
    let mut insertions = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut index = 0;
    while index < json.len() {
        let byte = json[index];
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            index += 1;
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b',' => {
                let mut start = index + 1;
                while start < json.len() && json[start].is_ascii_whitespace() {
                    start += 1;
                }
                let mut end = start;
                if end < json.len() && json[end] == b'-' {
                    end += 1;
                }
                while end < json.len() && json[end].is_ascii_digit() {
                    end += 1;
                }
                let mut colon = end;
                while colon < json.len() && json[colon].is_ascii_whitespace() {
                    colon += 1;
                }
                let has_digits = end > start && json[end - 1].is_ascii_digit();
                if has_digits && colon < json.len() && json[colon] == b':' {
                    insertions.push((start, end));
                    index = end;
                    continue;
                }
            }
            _ => {}
        }
        index += 1;
    }
    if insertions.is_empty() {
        return None;
    }
    let mut quoted = Vec::with_capacity(json.len() + insertions.len() * 2);
    let mut copied = 0;
    for (start, end) in insertions {
        quoted.extend_from_slice(&json[copied..start]);
        quoted.push(b'"');
        quoted.extend_from_slice(&json[start..end]);
        quoted.push(b'"');
        copied = end;
    }
    quoted.extend_from_slice(&json[copied..]);
    Some(quoted)
}

/// Deserializes a list of `i32` whose elements may be JSON numbers or strings holding one
/// (`[2598919]` or `["2598919"]`), as fastjson reads them.
pub(crate) fn i32_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(i32),
        Text(String),
    }
    Vec::<NumberOrText>::deserialize(deserializer)?
        .into_iter()
        .map(|element| match element {
            NumberOrText::Number(number) => Ok(number),
            NumberOrText::Text(text) => text.trim().parse().map_err(|_| {
                D::Error::custom(format!("invalid type: string {text:?}, expected i32"))
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_bare_integer_keys() {
        let json = br#"{"a":{0:"x", 1 :"y",-2:"z"},"b":[1,2],"c":"{3:4}"}"#;
        let quoted = quote_numeric_keys(json).unwrap();
        assert_eq!(
            String::from_utf8(quoted).unwrap(),
            r#"{"a":{"0":"x", "1" :"y","-2":"z"},"b":[1,2],"c":"{3:4}"}"#
        );
        assert_eq!(quote_numeric_keys(br#"{"a":[1,2],"s":"\"{1:2}"}"#), None);
    }
}
