//! The HTTP side of the metrics endpoint: `GET /metrics`, HTTP/1.0, one answer per connection.
//!
//! One thread polls the listener, the stop fd and every open connection, so clients are
//! served side by side: one that connects and says nothing holds a slot until its request
//! head is overdue, and delays no one else. Connections beyond a cap are closed at once
//! rather than queued. The thread sleeps in poll(2), so it costs nothing between scrapes.
//! (An HTTP crate would bring a thread per connection or an async runtime for one request
//! every few seconds; this is the whole protocol the endpoint needs.)

use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stop::Stop;

/// How much the server lets its clients take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// From accepting a connection to having its request head. A scraper sends its request
    /// with the connection; a silent client is dropped after this.
    pub head_deadline: Duration,
    /// From the request to the last byte of the answer taken by the client.
    pub answer_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            head_deadline: Duration::from_secs(1),
            answer_deadline: Duration::from_secs(10),
        }
    }
}

/// A request head longer than this is refused (a scrape's is about 100 bytes).
const MAX_HEAD: usize = 8192;

/// How often refused connections are logged, at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Serves `render()` at `/metrics` with the default [`Limits`] until `stop` is raised.
pub fn serve(
    listener: TcpListener,
    stop: Stop,
    render: impl Fn() -> String + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    serve_with(listener, stop, Limits::default(), render)
}

/// Serves `render()` at `/metrics` until `stop` is raised.
pub fn serve_with(
    listener: TcpListener,
    stop: Stop,
    limits: Limits,
    render: impl Fn() -> String + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let server = Server {
        listener,
        stop,
        limits,
        conns: Vec::new(),
        accept_paused_until: None,
        refused: 0,
        refusal_logged: None,
    };
    std::thread::Builder::new().name("metrics".into()).spawn(move || server.run(&render))
}

struct Server {
    listener: TcpListener,
    stop: Stop,
    limits: Limits,
    conns: Vec<Conn>,
    /// Accepting failed (out of descriptors, say): the listener stays readable, so it is
    /// left out of the poll until then rather than spun on.
    accept_paused_until: Option<Instant>,
    /// Connections refused since the last log line about it.
    refused: u64,
    refusal_logged: Option<Instant>,
}

struct Conn {
    stream: TcpStream,
    /// When the current phase (head, then answer) must be over.
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    /// Reading the request head: what came so far.
    Head(Vec<u8>),
    /// Writing the answer: all of it, and how much the client took.
    Answer(Vec<u8>, usize),
}

/// What a connection needs after some progress.
#[derive(PartialEq, Eq)]
enum Next {
    Wait,
    Close,
}

impl Server {
    fn run(mut self, render: &impl Fn() -> String) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            let now = Instant::now();
            self.conns.retain(|c| {
                let alive = c.deadline > now;
                if !alive {
                    let what = if matches!(c.phase, Phase::Head(_)) { "request" } else { "answer" };
                    log::debug!("metrics: closing a connection whose {what} is overdue");
                }
                alive
            });
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
            }
            let accepting = self.accept_paused_until.is_none();

            let pollfd = |fd, events| libc::pollfd { fd, events, revents: 0 };
            fds.clear();
            fds.push(pollfd(self.stop.fd().as_raw_fd(), libc::POLLIN));
            // A paused listener is polled for nothing (negative fds are skipped).
            fds.push(pollfd(if accepting { self.listener.as_raw_fd() } else { -1 }, libc::POLLIN));
            for c in &self.conns {
                let events = match c.phase {
                    Phase::Head(_) => libc::POLLIN,
                    Phase::Answer(..) => libc::POLLOUT,
                };
                fds.push(pollfd(c.stream.as_raw_fd(), events));
            }
            let wake = (self.conns.iter().map(|c| c.deadline))
                .chain(self.accept_paused_until)
                .min()
                .map_or(Duration::from_secs(60), |t| t.saturating_duration_since(now));
            // Rounded up: waking just before a deadline would only poll again.
            let ms = i32::try_from(wake.as_millis() + 1).unwrap_or(i32::MAX);
            let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
            // SAFETY: `fds` holds `nfds` initialised pollfd structs.
            if unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("metrics: poll: {e}; the endpoint stops");
                    return;
                }
                continue;
            }
            if fds[0].revents != 0 || self.stop.is_raised() {
                return;
            }
            // Connections first (their fds follow the two above), so that those accepted
            // below are not matched with this round's results.
            let mut i = 0;
            self.conns.retain_mut(|c| {
                let revents = fds[2 + i].revents;
                i += 1;
                revents == 0 || progress(c, &self.limits, render) == Next::Wait
            });
            if fds[1].revents != 0 {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.conns.len() >= self.limits.max_connections {
                        // Closed at once: the client sees the connection end now, instead of
                        // waiting behind the others.
                        drop(stream);
                        self.refused += 1;
                        if self.refusal_logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                            log::warn!(
                                "metrics: refused {} connection(s) (the last from {peer}): {} \
                                 are open, the most served at once",
                                self.refused,
                                self.limits.max_connections
                            );
                            self.refused = 0;
                            self.refusal_logged = Some(Instant::now());
                        }
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::debug!("metrics: {e}");
                        continue;
                    }
                    let deadline = Instant::now() + self.limits.head_deadline;
                    self.conns.push(Conn { stream, deadline, phase: Phase::Head(Vec::new()) });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    log::debug!("metrics: accept: {e}");
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            }
        }
    }
}

/// Reads what the client sent or writes what it can take, as poll said it may.
fn progress(c: &mut Conn, limits: &Limits, render: &impl Fn() -> String) -> Next {
    if let Phase::Head(head) = &mut c.phase {
        let mut buf = [0u8; 1024];
        loop {
            match c.stream.read(&mut buf) {
                // Gone without asking anything.
                Ok(0) if head.is_empty() => return Next::Close,
                // The client stopped sending: answer what it asked.
                Ok(0) => break,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_HEAD {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        c.phase = Phase::Answer(answer(head, render), 0);
        c.deadline = Instant::now() + limits.answer_deadline;
    }
    let Phase::Answer(bytes, sent) = &mut c.phase else { return Next::Close };
    while *sent < bytes.len() {
        match c.stream.write(&bytes[*sent..]) {
            Ok(0) => return Next::Close,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
    Next::Close
}

/// The whole HTTP answer to a request head.
fn answer(head: &[u8], render: &impl Fn() -> String) -> Vec<u8> {
    let line = String::from_utf8_lossy(head);
    let mut words = line.split_whitespace();
    let method = words.next();
    let path = words.next().map(|p| p.split('?').next().unwrap_or(p));
    let (status, body) = if head.len() > MAX_HEAD {
        ("431 Request Header Fields Too Large", "request head too long\n".to_owned())
    } else {
        match (method, path) {
            (Some("GET"), Some("/metrics")) => ("200 OK", render()),
            (Some("GET"), Some("/")) => ("200 OK", "capture-daemon: see /metrics\n".to_owned()),
            _ => ("404 Not Found", "not found: try GET /metrics\n".to_owned()),
        }
    };
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::client::scrape;
    use std::net::SocketAddr;

    /// Far above any deadline of the server: a test that waits this long has failed.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn start(limits: Limits, render: fn() -> String) -> (SocketAddr, Stop, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Stop::new().unwrap();
        let server = serve_with(listener, stop.clone(), limits, render).unwrap();
        (addr, stop, server)
    }

    fn up() -> String {
        "capture_up 1\n".to_owned()
    }

    /// A client that waits for the server for as long as a patient scraper would.
    fn connect(addr: SocketAddr) -> TcpStream {
        let conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        conn
    }

    /// Sends a request and reads the whole answer.
    fn get(conn: &mut TcpStream, path: &str) -> String {
        write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("an answer before the client gives up");
        answer
    }

    /// True when the server closed the connection (EOF or reset) without answering.
    fn closed_unanswered(conn: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        match conn.read(&mut buf) {
            Ok(0) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Ok(_) => false,
            Err(e) => panic!("still waiting after {PATIENCE:?}: {e}"),
        }
    }

    #[test]
    fn serves_metrics_and_stops() {
        let (addr, stop, server) = start(Limits::default(), up);
        assert_eq!(scrape(addr).unwrap()["capture_up"], 1.0);
        let answer = get(&mut connect(addr), "/nope");
        assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
        let answer = get(&mut connect(addr), "/metrics?x=1");
        assert!(answer.starts_with("HTTP/1.0 200") && answer.ends_with("capture_up 1\n"));
        stop.raise();
        server.join().unwrap();
    }

    #[test]
    fn idle_clients_do_not_hold_up_a_scrape() {
        let (addr, stop, server) = start(Limits::default(), up);
        // Silent clients, and clients that sent part of a request: one at a time with a 2 s
        // deadline each, as the endpoint was, they would hold a scrape up for 50 s.
        let idle: Vec<TcpStream> = (0..25)
            .map(|i| {
                let mut c = connect(addr);
                if i % 2 == 0 {
                    c.write_all(b"GET /met").unwrap();
                }
                c
            })
            .collect();
        let answer = get(&mut connect(addr), "/metrics");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        // The idle ones are dropped once their head is overdue, not kept for ever.
        for mut c in idle {
            assert!(closed_unanswered(&mut c));
        }
        stop.raise();
        server.join().unwrap();
    }

    #[test]
    fn connections_beyond_the_cap_are_closed_at_once() {
        // A head deadline the test never reaches: only the cap can close a connection.
        let limits = Limits {
            max_connections: 4,
            head_deadline: Duration::from_secs(600),
            answer_deadline: Duration::from_secs(600),
        };
        let (addr, stop, server) = start(limits, up);
        let mut held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
        let mut extra = connect(addr);
        assert!(closed_unanswered(&mut extra), "the fifth connection is closed, not queued");
        // Those within the cap are still served, and a slot that frees up is used again.
        let answer = get(&mut held[0], "/metrics");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        held.remove(0);
        // The server notices the free slot once the answer is written; retry until then.
        let answered = (0..100).any(|_| {
            let mut c = connect(addr);
            let mut answer = String::new();
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_ok()
                && c.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.0 200")
        });
        assert!(answered, "a freed slot serves a new client");
        stop.raise();
        server.join().unwrap();
    }

    #[test]
    fn a_client_that_does_not_read_its_answer_delays_no_one() {
        fn big() -> String {
            // Larger than what loopback socket buffers hold.
            "x".repeat(64 << 20)
        }
        let (addr, stop, server) = start(Limits::default(), big);
        let mut stuck = connect(addr);
        stuck.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut other = connect(addr);
        other.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("see /metrics\n"), "{answer}");
        stop.raise();
        server.join().unwrap();
    }

    #[test]
    fn an_overlong_head_is_refused() {
        let (addr, stop, server) = start(Limits::default(), up);
        let mut c = connect(addr);
        c.write_all(&[b'a'; MAX_HEAD + 10]).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.0 431"), "{answer}");
        stop.raise();
        server.join().unwrap();
    }
}
