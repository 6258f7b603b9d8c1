//! Just enough JSON for the benchmark's output files: values written by hand (no serde), and a
//! number lookup for the one-line reports of `writer_bench`.

use std::fmt::{self, Write as _};

/// A JSON value. Non-finite numbers are written as `null`.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs, keeping their order.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    pub fn uint(n: u64) -> Json {
        i64::try_from(n).map_or(Json::Num(n as f64), Json::Int)
    }

    pub fn opt_num(n: Option<f64>) -> Json {
        n.map_or(Json::Null, Json::Num)
    }

    pub fn opt_uint(n: Option<u64>) -> Json {
        n.map_or(Json::Null, Json::uint)
    }
}

/// Writes `s` as a JSON string literal, quotes included.
pub fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) if !n.is_finite() => f.write_str("null"),
            // Integral values print without a fraction; others with enough digits to round-trip.
            Json::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{n:.0}"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Str(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                escape(s, &mut out);
                f.write_str(&out)
            }
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Obj(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    let mut key = String::with_capacity(k.len() + 2);
                    escape(k, &mut key);
                    write!(f, "{key}:{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// The number after `"key":` in a flat one-line JSON object, e.g. `{"pps":1.5e6}`.
pub fn number_field(line: &str, key: &str) -> Option<f64> {
    let pattern = format!("\"{key}\"");
    let at = line.find(&pattern)? + pattern.len();
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_values_and_escapes() {
        let v = Json::obj([
            ("tool", Json::str("tcp\"dump\\\n\u{1}")),
            ("n", Json::Int(-3)),
            ("x", Json::Num(1.5)),
            ("whole", Json::Num(2.0)),
            ("nan", Json::Num(f64::NAN)),
            ("list", Json::Arr(vec![Json::Null, Json::Bool(true), Json::uint(u64::MAX)])),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"tool":"tcp\"dump\\\n\u0001","n":-3,"x":1.5,"whole":2,"nan":null,"list":[null,true,18446744073709552000]}"#
        );
    }

    #[test]
    fn finds_numbers_in_a_line() {
        let line =
            r#"{"size":64,"packets":1000000,"seconds":0.25,"pps":4e6,"bytes_per_sec":2.5E8}"#;
        assert_eq!(number_field(line, "size"), Some(64.0));
        assert_eq!(number_field(line, "pps"), Some(4e6));
        assert_eq!(number_field(line, "bytes_per_sec"), Some(2.5e8));
        assert_eq!(number_field(line, "seconds"), Some(0.25));
        assert_eq!(number_field(line, "missing"), None);
        assert_eq!(number_field(r#"{"pps" : 12 }"#, "pps"), Some(12.0));
    }
}
