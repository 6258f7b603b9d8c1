//! The client side of the metrics endpoint, for `capture-daemon status`: one scrape, parsed
//! into samples.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Samples of a scrape: `name{labels}` (as written) -> value.
pub type Samples = BTreeMap<String, f64>;

/// Fetches and parses `http://addr/metrics`.
pub fn scrape(addr: SocketAddr) -> io::Result<Samples> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "unexpected answer: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(parse(body))
}

pub fn parse(body: &str) -> Samples {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of label `label` in a sample key such as `name{a="x",b="y\"z"}`, unescaped.
/// Values are read as the format writes them (quoted, with `\\`, `\"` and `\n` escapes), so
/// a comma, quote or `=` inside one (a path, an interface name) is read right.
pub fn label(key: &str, label: &str) -> Option<String> {
    let mut rest = key.split_once('{')?.1;
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        if name.trim_start_matches(',') == label {
            return Some(value);
        }
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_commas_quotes_and_equals_are_read_right() {
        let tricky = r#"capture_current_file{path="/srv/pcap,hv1/x=\"y\"",interface="e,1"}"#;
        assert_eq!(label(tricky, "path").as_deref(), Some("/srv/pcap,hv1/x=\"y\""));
        assert_eq!(label(tricky, "interface").as_deref(), Some("e,1"));
        assert_eq!(label(tricky, "nope"), None);
    }
}
