//! The accept loop: how connections are let in, kept and let go.
//!
//! `axum::serve` trusts every client to send its request and go away. A flash sale is exactly
//! when someone will not: thousands of connections that send one header byte every few seconds
//! would hold a task and a file descriptor each, for ever, until nobody else gets in. So each
//! connection here is admitted against two caps ([`Admission`]: per client address and in
//! total; beyond either it is closed at once) and watched by a clock of its own ([`Activity`]):
//! - a request head must be complete within the header timeout, counted from the accept or
//!   from the first byte of the next request on a kept-alive connection;
//! - a kept-alive connection that carries nothing for the keep-alive timeout is closed; so is
//!   one whose client stops reading its response.
//!
//! hyper's own `header_read_timeout` is not used: it runs from the moment hyper waits for a
//! head, so between two requests it would close a kept-alive connection after the header
//! timeout, and an idle timeout longer than it could never apply.
//!
//! On shutdown the listener is dropped first, every connection is told to finish its request
//! in flight and close ([`GracefulShutdown`]), and the loop returns once all are gone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower_service::Service;

use crate::metrics::{ConnectionClose, ConnectionRefusal, METRICS};

/// Why the connection layer could not do what it was asked. Never an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot read the open-file limit (RLIMIT_NOFILE)")]
    GetLimit(#[source] io::Error),
    #[error("cannot raise the open-file limit (RLIMIT_NOFILE) from {current} to {target}")]
    SetLimit {
        current: u64,
        target: u64,
        #[source]
        cause: io::Error,
    },
}

/// How connections are capped and timed; from `ServeConfig`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: NonZeroUsize,
    pub max_connections_per_ip: NonZeroUsize,
    pub header_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

/// File descriptors left to the process itself when the total cap is derived from the open-file
/// limit: the store, the backends' connections, logs.
const RESERVED_DESCRIPTORS: u64 = 100;

/// The total cap when none is configured: 90 % of the open-file limit, and never fewer than
/// [`RESERVED_DESCRIPTORS`] left over, so a full house of clients cannot starve the store or a
/// backend of a descriptor.
pub fn default_max_connections(open_files: u64) -> NonZeroUsize {
    let reserve = (open_files / 10).max(RESERVED_DESCRIPTORS);
    let cap = usize::try_from(open_files.saturating_sub(reserve)).unwrap_or(usize::MAX);
    NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN)
}

/// Raises the soft open-file limit to the hard one and returns it: every connection is a
/// descriptor, and the usual soft default (1024) would cap the engine at a thousand clients.
pub fn raise_open_files_limit() -> Result<u64, ConnectionError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(ConnectionError::GetLimit(io::Error::last_os_error()));
    }
    // An unlimited hard limit cannot be the soft one for descriptors (the kernel's nr_open
    // bounds it); a million is what Linux allows by default.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(ConnectionError::SetLimit {
            current: limit.rlim_cur,
            target,
            cause: io::Error::last_os_error(),
        });
    }
    Ok(target)
}

/// Accepts on `listener` and serves `router` until `shutdown` resolves; then drains (see the
/// module's doc). `connect_info`: give each request its peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    connect_info: bool,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Arc::new(Admission::new(limits));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own clock times heads (see the module's doc); hyper's needs a timer we do not give it.
    http.header_read_timeout(None);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            // Shutdown first: polling it is what installs the signal handler, and a backlog of
            // connections must not keep it from its first poll.
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let ticket = match Admission::admit(&admission, peer.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                // Dropping the stream closes it: the client learns at once, and holds nothing.
                METRICS.observe_connection_refused(refusal);
                drop(stream);
                continue;
            }
        };
        let activity = Arc::new(Activity::new());
        let service = Served {
            router: router.clone(),
            peer: connect_info.then_some(peer),
            activity: Arc::clone(&activity),
        };
        let io = TokioIo::new(Watched {
            stream,
            activity: Arc::clone(&activity),
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            let _ticket = ticket;
            tokio::select! {
                // A failed connection (reset, malformed request) is the client's business.
                _ = connection => {}
                close = activity.watch(limits) => METRICS.observe_connection_closed(close),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accept that failed. Out of descriptors (or memory) the next accept would fail the same
/// way at once: pause, so the loop does not spin, and let closing connections free some.
async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Who is let in: open connections in total and per client address, under their caps.
///
/// The address is always the TCP peer's: `--trust-forwarded-for` names the client of a
/// request, which a connection does not have yet when it must be admitted or refused.
struct Admission {
    limits: ConnectionLimits,
    total: AtomicUsize,
    per_client: Mutex<HashMap<ClientKey, usize>>,
}

/// A client, as far as the per-address cap goes: an IPv4 address, or an IPv6 /64 (one
/// subscriber gets a whole /64, so counting single IPv6 addresses would cap nobody).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ClientKey(IpAddr);

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl Admission {
    fn new(limits: ConnectionLimits) -> Self {
        Admission {
            limits,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    fn admit(this: &Arc<Self>, ip: IpAddr) -> Result<Ticket, ConnectionRefusal> {
        if this.total.fetch_add(1, Relaxed) >= this.limits.max_connections.get() {
            this.total.fetch_sub(1, Relaxed);
            return Err(ConnectionRefusal::Total);
        }
        let client = ClientKey::of(ip);
        {
            let mut per_client = this.per_client.lock().unwrap_or_else(PoisonError::into_inner);
            let open = per_client.entry(client).or_insert(0);
            if *open >= this.limits.max_connections_per_ip.get() {
                drop(per_client);
                this.total.fetch_sub(1, Relaxed);
                return Err(ConnectionRefusal::PerIp);
            }
            *open += 1;
        }
        METRICS.connection_opened();
        Ok(Ticket {
            admission: Arc::clone(this),
            client,
        })
    }
}

/// One admitted connection's places under the caps, given back when it is dropped.
struct Ticket {
    admission: Arc<Admission>,
    client: ClientKey,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut per_client = self.admission.per_client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = per_client.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                per_client.remove(&self.client);
            }
        }
        drop(per_client);
        self.admission.total.fetch_sub(1, Relaxed);
        METRICS.connection_closed();
    }
}

/// What one connection is doing, for its clock: the socket records bytes ([`Watched`]), the
/// service records requests ([`Served`]). All of it happens on the connection's own task, so
/// relaxed atomics suffice; they are atomics only because the task may move between threads.
struct Activity {
    start: Instant,
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicU32,
    /// Milliseconds since `start` of the last byte either way, or of the last answer.
    last_active: AtomicU64,
    /// Milliseconds since `start` of the first byte of the head being read; [`NO_HEAD`] when
    /// none is (between requests, or while one is served).
    head_since: AtomicU64,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    /// A new connection is reading its first head: the header timeout runs from the accept.
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_active: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_active.store(now, Relaxed);
        // Bytes while nothing is served are the next request's head.
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == NO_HEAD {
            self.head_since.store(now, Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_active.store(self.now(), Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since.store(NO_HEAD, Relaxed);
    }

    fn request_answered(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.last_active.store(self.now(), Relaxed);
    }

    /// Resolves when the connection must be closed, and why. A request being served is never
    /// timed here: the handlers bound their own waits (body timeout, backend timeouts).
    async fn watch(&self, limits: ConnectionLimits) -> ConnectionClose {
        let header = millis(limits.header_timeout);
        let idle = millis(limits.keep_alive_timeout);
        loop {
            let now = self.now();
            let (deadline, close) = if self.in_flight.load(Relaxed) > 0 {
                (now.saturating_add(idle), None)
            } else {
                match self.head_since.load(Relaxed) {
                    NO_HEAD => (
                        self.last_active.load(Relaxed).saturating_add(idle),
                        Some(ConnectionClose::Idle),
                    ),
                    since => (since.saturating_add(header), Some(ConnectionClose::HeaderTimeout)),
                }
            };
            match close {
                Some(close) if now >= deadline => return close,
                _ => tokio::time::sleep_until(self.start + Duration::from_millis(deadline)).await,
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pin_project_lite::pin_project! {
    /// The client's socket, telling the connection's [`Activity`] when bytes move.
    struct Watched {
        #[pin]
        stream: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: adds the peer address when asked, and tells
/// the connection's [`Activity`] when a request starts and is answered.
struct Served {
    router: Router,
    peer: Option<SocketAddr>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Served {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: Request<Incoming>) -> Answer {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        self.activity.request_started();
        Answer {
            // A router is always ready: `call` without `poll_ready` is how axum serves too.
            inner: self.router.clone().call(request),
            _in_flight: InFlight(Arc::clone(&self.activity)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer to one request; the request counts as in flight until it is dropped
    /// (hyper drops it once answered, or with the connection).
    struct Answer {
        #[pin]
        inner: RouteFuture<Infallible>,
        _in_flight: InFlight,
    }
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: NonZeroUsize::new(total).expect("non-zero"),
            max_connections_per_ip: NonZeroUsize::new(per_ip).expect("non-zero"),
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn caps_refuse_beyond_and_a_dropped_ticket_frees_its_places() {
        let admission = Arc::new(Admission::new(limits(3, 2)));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = Admission::admit(&admission, a).expect("first");
        let _second = Admission::admit(&admission, a).expect("second");
        assert!(matches!(Admission::admit(&admission, a), Err(ConnectionRefusal::PerIp)));
        let _third = Admission::admit(&admission, b).expect("another client");
        assert!(matches!(Admission::admit(&admission, b), Err(ConnectionRefusal::Total)));
        drop(first);
        let _again = Admission::admit(&admission, a).expect("a freed place");
        assert_eq!(admission.total.load(Relaxed), 3);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_subscriber: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(ClientKey::of(one) == ClientKey::of(same_subscriber));
        assert!(ClientKey::of(one) != ClientKey::of(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert!(ClientKey::of(mapped) == ClientKey::of("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn the_default_total_keeps_a_reserve_of_descriptors() {
        assert_eq!(default_max_connections(1_048_576).get(), 943_719);
        assert_eq!(default_max_connections(1024).get(), 922);
        assert_eq!(default_max_connections(150).get(), 50);
        assert_eq!(default_max_connections(10).get(), 1);
    }
}
