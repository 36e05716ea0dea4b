//! The metrics endpoint: a minimal HTTP/1.1 server for one resource,
//! `GET /metrics`, on tokio.
//!
//! The server owns no metrics: each scrape is a [`Scrape`] sent to the run
//! loop, which owns all state and answers with the exposition text. Each
//! connection is a task of its own with a bound on the bytes of its request
//! head, on its whole lifetime and on how many run at once, so a slow, idle
//! or hostile client costs only its own task and never delays the run loop or
//! another scrape beyond that task's share of a poll.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A request for the exposition text, answered on `reply` by whoever owns
/// the metrics.
#[derive(Debug)]
pub struct Scrape {
    /// Where the text goes.
    pub reply: oneshot::Sender<String>,
}

/// What one client may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of request line and headers; a longer head is answered 431.
    pub head_bytes: usize,
    /// A connection's whole life, from accept to close: a client too slow to
    /// send its request or to read the answer is dropped.
    pub deadline: Duration,
    /// Connections served at once; one more is answered 503 and closed.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes: 8 * 1024,
            deadline: Duration::from_secs(5),
            connections: 128,
        }
    }
}

/// The only resource.
const PATH: &str = "/metrics";
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// After the answer, how long and how much of the rest of a request is read
/// and dropped, so that closing with unread bytes does not reset the
/// connection before the client has read the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// Pause after a failed accept (out of descriptors, for instance), so that
/// the failure does not become a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds the endpoint's address. Called before anything is attached, so that
/// a taken or forbidden address stops flowlat before it changes anything;
/// the error is one line that names the address and says why.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let cannot = |e: &io::Error| {
        let why = match e.kind() {
            io::ErrorKind::AddrInUse => {
                "address in use (another exporter, or another flowlat?)".to_string()
            }
            io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
                "permission denied (port {} is below 1024: it needs CAP_NET_BIND_SERVICE; pick a higher port such as 9464)",
                addr.port()
            ),
            io::ErrorKind::AddrNotAvailable => {
                "no interface of this host has that address".to_string()
            }
            _ if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                "IPv6 is disabled on this host".to_string()
            }
            _ => e.to_string(),
        };
        format!("cannot listen on {addr}: {why}")
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| cannot(&e))?;
    listener.set_nonblocking(true).map_err(|e| cannot(&e))?;
    Ok(listener)
}

/// Serves the endpoint with the default [`Limits`] until `tx`'s receiver is
/// dropped. Spawn it on the runtime that runs the loop answering `tx`.
pub async fn serve(
    listener: std::net::TcpListener,
    tx: mpsc::Sender<Scrape>,
) -> Result<(), String> {
    serve_with(listener, tx, Limits::default()).await
}

/// [`serve`] with other limits.
pub async fn serve_with(
    listener: std::net::TcpListener,
    tx: mpsc::Sender<Scrape>,
    limits: Limits,
) -> Result<(), String> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "the metrics address".to_string(), |a| a.to_string());
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tx.closed() => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        limits.deadline,
                        connection(stream, &tx, limits.head_bytes),
                    )
                    .await;
                    drop(slot);
                });
            }
            // Best effort and never waiting: the socket buffer of a fresh
            // connection takes these few bytes.
            Err(_) => {
                let _ = stream.try_write(&Response::text(503, "too many connections\n").bytes());
            }
        }
    }
}

/// One connection: one request, one answer, close.
async fn connection(mut stream: TcpStream, tx: &mpsc::Sender<Scrape>, head_bytes: usize) {
    let response = match read_head(&mut stream, head_bytes).await {
        Ok(Head::Complete(head)) => match parse(&head) {
            Ok(req) => answer(req, tx).await,
            Err(status) => status.response(),
        },
        Ok(Head::TooLong) => Status::HeadTooLong.response(),
        Ok(Head::Cut) => Status::Bad.response(),
        Ok(Head::Empty) | Err(_) => return,
    };
    if stream.write_all(&response.bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    linger(&mut stream).await;
}

async fn linger(stream: &mut TcpStream) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How reading a request head ended.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Request line and headers, up to the empty line.
    Complete(Vec<u8>),
    /// No empty line within the limit.
    TooLong,
    /// The client closed after part of a head.
    Cut,
    /// The client closed without a byte.
    Empty,
}

async fn read_head(stream: &mut TcpStream, limit: usize) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let want = chunk.len().min(limit + 1 - buf.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(if buf.is_empty() {
                Head::Empty
            } else {
                Head::Cut
            });
        }
        // The end may straddle two reads: look again from just before.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, from) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > limit {
            return Ok(Head::TooLong);
        }
    }
}

/// Where the head ends (just past its empty line), searching from `from`.
/// Bare LF line ends are accepted as well as CRLF.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// A request this server can answer.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// HEAD: the GET answer's head without its body.
    head_only: bool,
}

/// A request this server answers with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Bad,
    NotFound,
    MethodNotAllowed,
    HeadTooLong,
    Unavailable,
    VersionNotSupported,
}

impl Status {
    fn response(self) -> Response {
        match self {
            Status::Bad => Response::text(400, "bad request\n"),
            Status::NotFound => Response::text(404, "not found: flowlat serves only /metrics\n"),
            Status::MethodNotAllowed => {
                let mut r = Response::text(405, "method not allowed: use GET or HEAD\n");
                r.allow = true;
                r
            }
            Status::HeadTooLong => Response::text(431, "request header fields too large\n"),
            Status::Unavailable => Response::text(503, "flowlat is stopping\n"),
            Status::VersionNotSupported => Response::text(505, "HTTP/1.0 and HTTP/1.1 only\n"),
        }
    }
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Reads a request head (request line and header lines): what it asks for,
/// or which error answers it. Header fields are checked for shape only;
/// none changes the answer.
fn parse(head: &[u8]) -> Result<Request, Status> {
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        // An empty line before the request line is allowed (RFC 9112, 2.2).
        .skip_while(|l| l.is_empty());
    let line = lines.next().ok_or(Status::Bad)?;
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::Bad);
    };
    if !is_token(method) || target.is_empty() || !target.iter().all(|c| c.is_ascii_graphic()) {
        return Err(Status::Bad);
    }
    match version {
        b"HTTP/1.1" | b"HTTP/1.0" => {}
        v if v.starts_with(b"HTTP/") => return Err(Status::VersionNotSupported),
        _ => return Err(Status::Bad),
    }
    for field in lines.take_while(|l| !l.is_empty()) {
        let name = field.split(|&c| c == b':').next().unwrap_or(field);
        // No colon, no name, whitespace before the colon or a folded line.
        if name.len() == field.len() || !is_token(name) {
            return Err(Status::Bad);
        }
    }
    // The absolute form (`http://host/metrics`) names the same path.
    let target = match target.iter().position(|&c| c == b':') {
        Some(i)
            if target[..i].eq_ignore_ascii_case(b"http")
                || target[..i].eq_ignore_ascii_case(b"https") =>
        {
            let rest = target[i..].strip_prefix(b"://").ok_or(Status::Bad)?;
            rest.iter()
                .position(|&c| c == b'/')
                .map_or(&b"/"[..], |j| &rest[j..])
        }
        _ => target,
    };
    let path = target.split(|&c| c == b'?').next().unwrap_or(target);
    if path != PATH.as_bytes() {
        return Err(Status::NotFound);
    }
    match method {
        b"GET" => Ok(Request { head_only: false }),
        b"HEAD" => Ok(Request { head_only: true }),
        _ => Err(Status::MethodNotAllowed),
    }
}

/// Asks the run loop for the text.
async fn answer(req: Request, tx: &mpsc::Sender<Scrape>) -> Response {
    let (reply, text) = oneshot::channel();
    if tx.send(Scrape { reply }).await.is_err() {
        return Status::Unavailable.response();
    }
    match text.await {
        Ok(body) => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body,
            head_only: req.head_only,
            allow: false,
        },
        Err(_) => Status::Unavailable.response(),
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    head_only: bool,
    /// 405's `Allow` field.
    allow: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            head_only: false,
            allow: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        };
        let allow = if self.allow {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::{sleep, timeout, Instant};

    fn parsed(head: &str) -> Result<Request, Status> {
        parse(head.as_bytes())
    }

    #[test]
    fn get_and_head_of_metrics_are_served_with_or_without_a_query() {
        let get = Ok(Request { head_only: false });
        assert_eq!(parsed("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), get);
        assert_eq!(parsed("GET /metrics?name[]=up HTTP/1.1\r\n\r\n"), get);
        assert_eq!(parsed("GET /metrics HTTP/1.0\n\n"), get, "bare LF");
        assert_eq!(parsed("\r\nGET /metrics HTTP/1.1\r\n\r\n"), get);
        assert_eq!(parsed("GET http://host:9464/metrics HTTP/1.1\r\n\r\n"), get);
        assert_eq!(
            parsed("HEAD /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Ok(Request { head_only: true })
        );
    }

    #[test]
    fn other_paths_methods_and_versions_are_refused_by_name() {
        assert_eq!(parsed("GET / HTTP/1.1\r\n\r\n"), Err(Status::NotFound));
        assert_eq!(
            parsed("GET /metricsx HTTP/1.1\r\n\r\n"),
            Err(Status::NotFound)
        );
        assert_eq!(
            parsed("GET http://host HTTP/1.1\r\n\r\n"),
            Err(Status::NotFound)
        );
        assert_eq!(
            parsed("POST /metrics HTTP/1.1\r\n\r\n"),
            Err(Status::MethodNotAllowed)
        );
        assert_eq!(
            parsed("get /metrics HTTP/1.1\r\n\r\n"),
            Err(Status::MethodNotAllowed)
        );
        assert_eq!(
            parsed("GET /metrics HTTP/2.0\r\n\r\n"),
            Err(Status::VersionNotSupported)
        );
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for head in [
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "GET /met rics HTTP/1.1\r\n\r\n",
            "GET /metrics SPDY/3\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n: x\r\n\r\n",
            "\r\n\r\n",
        ] {
            assert_eq!(parse(head.as_bytes()), Err(Status::Bad), "{head:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line_even_across_reads() {
        let h = b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody";
        assert_eq!(head_end(h, 0), Some(h.len() - 4));
        for from in 0..h.len() - 4 {
            let cut = &h[..from];
            if head_end(cut, 0).is_none() {
                assert_eq!(
                    head_end(h, cut.len().saturating_sub(3)),
                    Some(h.len() - 4),
                    "{from}"
                );
            }
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn answers_carry_length_type_and_close() {
        let r = Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: "a 1\n".to_string(),
            head_only: false,
            allow: false,
        };
        assert_eq!(
            String::from_utf8(r.bytes()).expect("text"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let head = Response {
            head_only: true,
            ..r
        };
        assert!(String::from_utf8(head.bytes())
            .expect("text")
            .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let allow = String::from_utf8(Status::MethodNotAllowed.response().bytes()).expect("text");
        assert!(
            allow.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{allow}"
        );
        assert!(allow.contains("\r\nAllow: GET, HEAD\r\n"), "{allow}");
    }

    #[test]
    fn bind_names_the_address_and_why() {
        let taken = bind("127.0.0.1:0".parse().expect("literal")).expect("free port");
        let addr = taken.local_addr().expect("bound");
        let err = bind(addr).expect_err("taken");
        assert_eq!(
            err,
            format!(
                "cannot listen on {addr}: address in use (another exporter, or another flowlat?)"
            )
        );
        let err = bind("192.0.2.1:9464".parse().expect("literal")).expect_err("not ours");
        assert_eq!(
            err,
            "cannot listen on 192.0.2.1:9464: no interface of this host has that address"
        );
    }

    const BODY: &str = "flowlat_build_info{version=\"test\"} 1\n";

    /// A server on 127.0.0.1 and a run loop answering its scrapes, which it counts.
    async fn server(limits: Limits) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let addr = listener.local_addr().expect("bound");
        let (tx, mut rx) = mpsc::channel::<Scrape>(8);
        let scrapes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&scrapes);
        tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let _ = s.reply.send(BODY.to_string());
            }
        });
        tokio::spawn(serve_with(listener, tx, limits));
        (addr, scrapes)
    }

    /// Sends `request` and closes the sending side; returns all the server
    /// sent until it closed.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("send");
        s.shutdown().await.expect("half close");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn scrape(addr: SocketAddr) -> String {
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await
    }

    /// Scrapes, and checks that the answer is a 200 that came at once.
    async fn scrape_at_once(addr: SocketAddr) {
        let t = Instant::now();
        let got = scrape(addr).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(t.elapsed() < MOMENT, "{:?}", t.elapsed());
    }

    /// Well under any deadline, and well over a scrape on loopback.
    const MOMENT: Duration = Duration::from_millis(200);

    fn fast() -> Limits {
        Limits {
            deadline: Duration::from_millis(500),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn a_scrape_gets_the_run_loops_text() {
        let (addr, scrapes) = server(Limits::default()).await;
        let got = scrape(addr).await;
        assert_eq!(
            got,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{BODY}",
                BODY.len()
            )
        );
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                BODY.len()
            )),
            "{head}"
        );
        assert_eq!(scrapes.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn errors_are_answered_with_their_status() {
        let (addr, scrapes) = server(Limits::default()).await;
        let status = |s: String| s.lines().next().unwrap_or("").to_string();
        assert_eq!(
            status(exchange(addr, b"GET /favicon.ico HTTP/1.1\r\n\r\n").await),
            "HTTP/1.1 404 Not Found"
        );
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(status(post.clone()), "HTTP/1.1 405 Method Not Allowed");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        assert_eq!(
            status(exchange(addr, b"\x00\x01\x02garbage\r\n\r\n").await),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status(exchange(addr, b"GET /metr").await),
            "HTTP/1.1 400 Bad Request",
            "cut short"
        );
        assert_eq!(
            exchange(addr, b"").await,
            "",
            "nothing asked, nothing answered"
        );
        let long = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(8 * 1024)
        );
        assert_eq!(
            status(exchange(addr, long.as_bytes()).await),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert_eq!(scrapes.load(Ordering::Relaxed), 0);
        assert!(scrape(addr).await.starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test]
    async fn a_100_kb_header_is_refused_without_reading_it_all() {
        let (addr, _) = server(Limits::default()).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let (mut rd, mut wr) = s.split();
        let request = format!(
            "GET /metrics HTTP/1.1\r\nCookie: {}\r\n\r\n",
            "c".repeat(100 * 1024)
        );
        // The server stops reading, so the write may fail: only the answer counts.
        let send = async {
            let _ = wr.write_all(request.as_bytes()).await;
        };
        let mut got = Vec::new();
        let recv = rd.read_to_end(&mut got);
        let (_, r) = tokio::join!(send, recv);
        let got = String::from_utf8_lossy(&got);
        assert!(r.is_ok() || !got.is_empty(), "{r:?}");
        assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
    }

    #[tokio::test]
    async fn a_slow_loris_is_dropped_and_delays_no_scrape() {
        let (addr, _) = server(fast()).await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let start = Instant::now();
        let loris = tokio::spawn(async move {
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                sleep(Duration::from_millis(100)).await;
            }
            let mut rest = Vec::new();
            let _ = slow.read_to_end(&mut rest).await;
            rest
        });
        sleep(Duration::from_millis(150)).await;
        scrape_at_once(addr).await;
        let rest = timeout(Duration::from_secs(5), loris)
            .await
            .expect("dropped")
            .expect("task");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        let lived = start.elapsed();
        assert!(
            lived >= Duration::from_millis(500) && lived < Duration::from_millis(1500),
            "{lived:?}"
        );
    }

    #[tokio::test]
    async fn idle_connections_do_not_block_a_scrape() {
        let (addr, _) = server(Limits::default()).await;
        let mut idle = Vec::new();
        for _ in 0..64 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        idle[0]
            .write_all(b"GET /metr")
            .await
            .expect("half a request");
        scrape_at_once(addr).await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_turned_away_at_once() {
        let limits = Limits {
            connections: 4,
            ..fast()
        };
        let (addr, scrapes) = server(limits).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Let the server accept them all before the next one.
        sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let got = scrape(addr).await;
        assert!(
            got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{got}"
        );
        assert!(t.elapsed() < MOMENT, "{:?}", t.elapsed());
        assert_eq!(scrapes.load(Ordering::Relaxed), 0);
        drop(idle);
        sleep(Duration::from_millis(50)).await;
        assert!(scrape(addr).await.starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test]
    async fn concurrent_scrapes_are_each_answered() {
        let (addr, scrapes) = server(Limits::default()).await;
        let clients: Vec<_> = (0..32).map(|_| tokio::spawn(scrape(addr))).collect();
        for c in clients {
            let got = c.await.expect("task");
            assert!(got.ends_with(BODY), "{got}");
        }
        assert_eq!(scrapes.load(Ordering::Relaxed), 32);
    }

    #[tokio::test]
    async fn the_server_stops_with_its_run_loop() {
        let listener = bind("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let addr = listener.local_addr().expect("bound");
        let (tx, rx) = mpsc::channel::<Scrape>(1);
        let server = tokio::spawn(serve(listener, tx));
        // A scrape the run loop drops unanswered.
        let mut rx = rx;
        let client = tokio::spawn(scrape(addr));
        let s = rx.recv().await.expect("a scrape");
        drop(s);
        let got = client.await.expect("task");
        assert!(
            got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{got}"
        );
        drop(rx);
        let done = timeout(Duration::from_secs(1), server)
            .await
            .expect("stopped")
            .expect("task");
        assert_eq!(done, Ok(()));
    }
}
