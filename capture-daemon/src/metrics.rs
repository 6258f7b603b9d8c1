//! The Prometheus text endpoint (`GET /metrics`) and the client side of `capture-daemon status`.
//!
//! A deliberately small HTTP/1.0 server on one thread: one short request at a time, loopback by
//! default. It sleeps on the listener and the stop fd, so it costs nothing between scrapes.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::stop::{self, Stop};

/// Serves `render()` at `/metrics` until `stop` is raised.
pub fn serve(
    listener: TcpListener,
    stop: Stop,
    render: impl Fn() -> String + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        loop {
            let [_, stopped] = stop::wait_readable(
                [listener.as_raw_fd(), stop.fd().as_raw_fd()],
                Duration::from_secs(60),
            );
            if stopped || stop.is_raised() {
                return;
            }
            // One connection at a time, each with a deadline for the whole request, and the
            // stop signal looked at in between and while waiting: a slow or idle client can
            // delay a scrape, never the daemon's shutdown or reload.
            while !stop.is_raised() {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Err(e) = answer(conn, &stop, &render) {
                            log::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // Out of descriptors, say: the listener stays readable, so pause
                        // rather than spin.
                        log::debug!("metrics: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
    })
}

/// How long one client may take to send its request and take the answer.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

fn answer(mut conn: TcpStream, stop: &Stop, render: &impl Fn() -> String) -> io::Result<()> {
    let deadline = std::time::Instant::now() + REQUEST_DEADLINE;
    conn.set_nonblocking(true)?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let [_, stopped] = stop::wait_readable([conn.as_raw_fd(), stop.fd().as_raw_fd()], left);
        if stopped {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    conn.set_nonblocking(false)?;
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    conn.set_write_timeout(Some(left.max(Duration::from_millis(100))))?;
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", render()),
        (Some("GET"), Some("/")) => ("200 OK", "capture-daemon: see /metrics\n".to_owned()),
        _ => ("404 Not Found", "not found: try GET /metrics\n".to_owned()),
    };
    write!(
        conn,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Builds the text exposition format: `# HELP`/`# TYPE` once per metric, then all its samples
/// together (the format wants each metric's lines in one group, whatever order they come in).
#[derive(Default)]
pub struct Exposition {
    /// Per metric, in order of first use: its name and its lines so far.
    families: Vec<(&'static str, String)>,
}

impl Exposition {
    pub fn sample(
        &mut self,
        name: &'static str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        use std::fmt::Write as _;
        let i = match self.families.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                self.families.push((name, format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")));
                self.families.len() - 1
            }
        };
        let out = &mut self.families[i].1;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    pub fn finish(self) -> String {
        self.families.into_iter().map(|(_, lines)| lines).collect()
    }
}

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
    fn exposition_round_trips_through_the_parser() {
        let mut e = Exposition::default();
        e.sample(
            "capture_x_total",
            "counter",
            "X.",
            &[("interface", "eth0"), ("target", "a\"b")],
            3.0,
        );
        e.sample("capture_up", "gauge", "Up.", &[], 1.0);
        e.sample("capture_x_total", "counter", "X.", &[("interface", "eth1")], 4.0);
        let text = e.finish();
        assert_eq!(text.matches("# TYPE capture_x_total counter").count(), 1);
        // Each metric's lines stay together, though eth1's sample came after capture_up.
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .collect();
        assert_eq!(names, ["capture_x_total", "capture_x_total", "capture_up"], "{text}");
        let samples = parse(&text);
        assert_eq!(samples["capture_up"], 1.0);
        let key = samples.keys().find(|k| k.contains("eth0")).unwrap();
        assert_eq!(label(key, "interface").as_deref(), Some("eth0"));
        assert_eq!(label(key, "target").as_deref(), Some("a\"b"), "unescaped");
        let tricky = r#"capture_current_file{path="/srv/pcap,hv1/x=\"y\"",interface="e,1"}"#;
        assert_eq!(label(tricky, "path").as_deref(), Some("/srv/pcap,hv1/x=\"y\""));
        assert_eq!(label(tricky, "interface").as_deref(), Some("e,1"));
        assert_eq!(label(tricky, "nope"), None);
        assert_eq!(samples[key], 3.0);
    }

    #[test]
    fn an_idle_client_delays_neither_other_scrapes_for_long_nor_the_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Stop::new().unwrap();
        let server = serve(listener, stop.clone(), || "capture_up 1\n".to_owned()).unwrap();
        // Sends a byte now and then, never a whole request.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"G").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        assert_eq!(scrape(addr).unwrap()["capture_up"], 1.0, "answered after the idle one");
        assert!(start.elapsed() < REQUEST_DEADLINE * 2);
        let _idle2 = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        stop.raise();
        server.join().unwrap();
        // Not a speed test: without the stop fd in the wait this took the idle clients' 2 s.
        assert!(start.elapsed() < Duration::from_secs(1), "stopped without waiting for them");
    }

    #[test]
    fn serves_metrics_and_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Stop::new().unwrap();
        let server = serve(listener, stop.clone(), || "capture_up 1\n".to_owned()).unwrap();
        assert_eq!(scrape(addr).unwrap()["capture_up"], 1.0);
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /nope HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
        stop.raise();
        server.join().unwrap();
    }
}
