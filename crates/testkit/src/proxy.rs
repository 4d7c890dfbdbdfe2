//! A TCP proxy that injects faults between a client and a broker.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::pulsar_compat::FrameRewriter;

/// Bytes buffered per direction of one proxied connection.
const CHUNK: usize = 16 * 1024;
/// How long a proxied connection waits for the upstream's accept.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a control waits for the proxy's tasks to carry it out.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP proxy on a free loopback port that forwards every connection to an upstream address
/// and lets a test break the path on purpose.
///
/// | control | effect |
/// |---|---|
/// | [`cut`](Self::cut) | closes every open connection (both sides see EOF); new ones are accepted |
/// | [`refuse`](Self::refuse) | closes the listening socket: new connections fail with `ConnectionRefused`; open ones stay |
/// | [`down`](Self::down) | both: the broker looks dead |
/// | [`restore`](Self::restore) | listens again on the same port |
/// | [`set_latency`](Self::set_latency) | delays every chunk, in each direction, by a fixed time |
/// | [`set_direction_latency`](Self::set_direction_latency) | delays one direction only: with [`Direction::ToClient`] the broker gets each request at once and its answer arrives late |
/// | [`hold`](Self::hold) | stops forwarding in both directions *without* closing anything: a silent partition (no reset, no refusal; writers fill their socket buffers and wait) |
/// | [`hold_direction`](Self::hold_direction) | the same for one direction only |
/// | [`release`](Self::release) | forwards again; bytes held meanwhile are delivered, as TCP would after a partition heals |
///
/// The proxy runs on a runtime of its own (two worker threads shared by every proxy of the
/// process), so it works from any test, whatever its runtime, and outlives the test that created
/// it. Controls are synchronous and have taken effect when they return. Dropping the proxy
/// closes its listener and every connection.
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// use std::time::Duration;
/// let redis = wharf_testkit::RedisServer::start()?;
/// let proxy = wharf_testkit::FaultProxy::start(redis.direct_addr())?;
/// let url = format!("redis://{}/", proxy.addr()); // give this to the client under test
/// proxy.set_latency(Duration::from_millis(50));
/// proxy.cut()?; // the client's connections drop; reconnects succeed
/// proxy.down()?; // connections drop and reconnects are refused...
/// proxy.restore()?; // ...until now
/// assert!(proxy.connections_accepted() <= 10);
/// # let _ = url; Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    listen: SocketAddr,
    /// Rewrite pulsar-lite's frames for the `pulsar` crate (see `pulsar_compat`).
    pulsar_compat: bool,
    upstream: Mutex<SocketAddr>,
    /// Added delay per chunk, indexed by [`Direction::index`].
    latency_micros: [AtomicU64; 2],
    /// Directions currently held (bit [`Direction::bit`] set): nothing is forwarded that way.
    hold_tx: watch::Sender<u8>,
    accepted: AtomicU64,
    active: AtomicUsize,
    /// Current generation of connections: every connection holds a clone of the token of its
    /// generation and a receiver of `cut_tx`; `cut` swaps the token under this lock and bumps
    /// the epoch, then waits until the old token's last clone is gone.
    generation: Mutex<Arc<()>>,
    cut_tx: watch::Sender<u64>,
    accept_tx: watch::Sender<AcceptMode>,
    listener_state: Mutex<ListenerState>,
    listener_changed: Condvar,
}

/// One direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// Bytes the client sends: requests, on their way to the broker.
    ToUpstream,
    /// Bytes the broker sends: answers, on their way to the client.
    ToClient,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::ToUpstream, Direction::ToClient];

    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptMode {
    Open,
    Refusing,
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListenerState {
    Listening,
    Closed,
    BindFailed(String),
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        Self::start_with(upstream, false)
    }

    fn start_with(upstream: SocketAddr, pulsar_compat: bool) -> Result<Self> {
        let rt = runtime()?;
        // std's listener sets SO_REUSEADDR on Unix, so `restore` can bind this port again while
        // old connections linger in TIME_WAIT.
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::io("binding the fault proxy to a free loopback port", e))?;
        let listen = std_listener
            .local_addr()
            .map_err(|e| Error::io("reading the fault proxy's address", e))?;
        let (cut_tx, _) = watch::channel(0u64);
        let (accept_tx, accept_rx) = watch::channel(AcceptMode::Open);
        let (hold_tx, _) = watch::channel(0u8);
        let inner = Arc::new(Inner {
            listen,
            pulsar_compat,
            upstream: Mutex::new(upstream),
            latency_micros: [AtomicU64::new(0), AtomicU64::new(0)],
            hold_tx,
            accepted: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            generation: Mutex::new(Arc::new(())),
            cut_tx,
            accept_tx,
            listener_state: Mutex::new(ListenerState::Listening),
            listener_changed: Condvar::new(),
        });
        rt.spawn(accept_loop(Arc::clone(&inner), std_listener, accept_rx));
        Ok(FaultProxy { inner })
    }

    /// Starts a proxy whose upstream is set later with [`set_upstream`](Self::set_upstream);
    /// until then connections to it are closed at once. Used to learn the proxy's port before
    /// the broker starts (Kafka brokers must advertise the proxy's address).
    pub(crate) fn start_unconnected() -> Result<Self> {
        Self::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Like [`start_unconnected`](Self::start_unconnected), and rewrites what pulsar-lite sends
    /// into what the `pulsar` crate accepts.
    pub(crate) fn start_pulsar_compat() -> Result<Self> {
        Self::start_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), true)
    }

    /// The proxy's own address: point clients here.
    pub fn addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.inner.listen.port()
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.inner.upstream)
    }

    /// Forwards connections accepted from now on to `upstream` (open ones keep theirs).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.inner.upstream) = upstream;
    }

    /// Closes every connection open now; the clients and the upstream see their socket closed.
    /// New connections are still accepted. Returns once those connections are closed (or after
    /// two seconds, with an error).
    pub fn cut(&self) -> Result<()> {
        let old = {
            let mut generation = lock(&self.inner.generation);
            let old = std::mem::replace(&mut *generation, Arc::new(()));
            self.inner.cut_tx.send_modify(|epoch| *epoch += 1);
            old
        };
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        while Arc::strong_count(&old) > 1 {
            if Instant::now() >= deadline {
                return Err(self.error(format!(
                    "{} connection(s) still open {CONTROL_TIMEOUT:?} after cut()",
                    Arc::strong_count(&old) - 1
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Closes the listening socket: connecting to the proxy now fails at once with
    /// `ConnectionRefused`. Open connections are left alone (see [`down`](Self::down)).
    pub fn refuse(&self) -> Result<()> {
        self.inner.accept_tx.send_replace(AcceptMode::Refusing);
        self.wait_listener(|s| *s != ListenerState::Listening, "closing the listener")
    }

    /// [`refuse`](Self::refuse) then [`cut`](Self::cut): to clients the broker is gone.
    pub fn down(&self) -> Result<()> {
        self.refuse()?;
        self.cut()
    }

    /// Listens again on the same port after [`refuse`](Self::refuse) or [`down`](Self::down).
    /// Fails if another process took the port meanwhile. Latency is left as it is.
    pub fn restore(&self) -> Result<()> {
        {
            // Forget an earlier failed bind, so that we wait for this attempt's outcome.
            let mut state = lock(&self.inner.listener_state);
            if matches!(*state, ListenerState::BindFailed(_)) {
                *state = ListenerState::Closed;
            }
        }
        self.inner.accept_tx.send_replace(AcceptMode::Open);
        self.wait_listener(|s| *s != ListenerState::Closed, "listening again")?;
        match &*lock(&self.inner.listener_state) {
            ListenerState::BindFailed(why) => Err(self.error(format!(
                "could not listen on port {} again: {why}",
                self.port()
            ))),
            _ => Ok(()),
        }
    }

    /// Delays every chunk of bytes by `latency` before forwarding it, in each direction, on
    /// open and new connections. `Duration::ZERO` removes the delay. A very long latency
    /// (say an hour) makes the broker look hung: connections open, nothing answers. A chunk
    /// already waiting keeps the latency it started with.
    pub fn set_latency(&self, latency: Duration) {
        for direction in Direction::BOTH {
            self.set_direction_latency(direction, latency);
        }
    }

    /// Delays every chunk going `direction` by `latency` (the other direction keeps its own).
    /// With [`Direction::ToClient`] the broker receives and carries out each request at once
    /// while the client sees the answer only after `latency`: the "answered just after the
    /// client's timeout" fault, where a request took effect although the client gave up.
    pub fn set_direction_latency(&self, direction: Direction, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner.latency_micros[direction.index()].store(micros, Ordering::Relaxed);
    }

    /// Removes the added latency, in both directions.
    pub fn clear_latency(&self) {
        self.set_latency(Duration::ZERO);
    }

    /// Stops forwarding in both directions on open and new connections, closing nothing: the
    /// link holds bytes silently, as a network partition does. Clients see no reset and no
    /// refusal; their requests are simply never answered (until [`release`](Self::release)).
    /// New connections are still accepted (the handshake completes, as it would with a
    /// half-dead middlebox), and get nothing either.
    pub fn hold(&self) {
        for direction in Direction::BOTH {
            self.hold_direction(direction);
        }
    }

    /// Stops forwarding `direction` only (see [`hold`](Self::hold)): with
    /// [`Direction::ToClient`] requests still reach the broker and take effect, but no answer
    /// comes back.
    pub fn hold_direction(&self, direction: Direction) {
        self.inner
            .hold_tx
            .send_modify(|held| *held |= direction.bit());
    }

    /// Forwards again after [`hold`](Self::hold): the bytes held meanwhile are delivered in
    /// order, as TCP delivers them when a partition heals. [`cut`](Self::cut) first if the
    /// test wants them lost instead.
    pub fn release(&self) {
        self.inner.hold_tx.send_replace(0);
    }

    /// Whether any direction is held now.
    pub fn is_held(&self) -> bool {
        *self.inner.hold_tx.borrow() != 0
    }

    /// Connections accepted since the proxy started.
    pub fn connections_accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    fn wait_listener(&self, done: impl Fn(&ListenerState) -> bool, what: &str) -> Result<()> {
        let state = lock(&self.inner.listener_state);
        let (state, timeout) = self
            .inner
            .listener_changed
            .wait_timeout_while(state, CONTROL_TIMEOUT, |s| !done(s))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(state);
        if timeout.timed_out() {
            return Err(self.error(format!("timed out after {CONTROL_TIMEOUT:?} {what}")));
        }
        Ok(())
    }

    fn error(&self, reason: String) -> Error {
        Error::Proxy {
            listen: self.inner.listen.to_string(),
            upstream: self.upstream().to_string(),
            reason,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.accept_tx.send_replace(AcceptMode::Shutdown);
        self.inner.cut_tx.send_modify(|epoch| *epoch += 1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The runtime every proxy runs on, created on first use and never shut down.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wharf-fault-proxy")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|why| Error::Proxy {
        listen: "-".into(),
        upstream: "-".into(),
        reason: format!("could not build the proxy's tokio runtime: {why}"),
    })
}

impl Inner {
    fn set_listener_state(&self, state: ListenerState) {
        *lock(&self.listener_state) = state;
        self.listener_changed.notify_all();
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    first: std::net::TcpListener,
    mut mode: watch::Receiver<AcceptMode>,
) {
    let mut pending = Some(first);
    loop {
        // Listen (again), unless the test asked us not to.
        let std_listener = match pending.take() {
            Some(l) => Ok(l),
            None => std::net::TcpListener::bind(inner.listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l)),
        };
        match std_listener.and_then(TcpListener::from_std) {
            Ok(listener) => {
                inner.set_listener_state(ListenerState::Listening);
                serve_listener(&inner, listener, &mut mode).await;
                inner.set_listener_state(ListenerState::Closed);
            }
            Err(e) => {
                inner.set_listener_state(ListenerState::BindFailed(e.to_string()));
                // Retry only when told to (the next restore), not in a busy loop.
                if mode.changed().await.is_err() {
                    return;
                }
            }
        }
        // Closed or failed: wait until restored or shut down.
        loop {
            match *mode.borrow_and_update() {
                AcceptMode::Open => break,
                AcceptMode::Shutdown => return,
                AcceptMode::Refusing => {}
            }
            if mode.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Accepts connections until the mode leaves `Open`; the listener is dropped (closed) on return.
async fn serve_listener(
    inner: &Arc<Inner>,
    listener: TcpListener,
    mode: &mut watch::Receiver<AcceptMode>,
) {
    loop {
        if *mode.borrow_and_update() != AcceptMode::Open {
            return;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                inner.accepted.fetch_add(1, Ordering::Relaxed);
                let (token, cut_rx) = {
                    let generation = lock(&inner.generation);
                    (Arc::clone(&generation), inner.cut_tx.subscribe())
                };
                let upstream = *lock(&inner.upstream);
                tokio::spawn(connection(Arc::clone(inner), client, upstream, cut_rx, token));
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

async fn connection(
    inner: Arc<Inner>,
    client: TcpStream,
    upstream: SocketAddr,
    mut cut_rx: watch::Receiver<u64>,
    token: Arc<()>,
) {
    inner.active.fetch_add(1, Ordering::Relaxed);
    let forward = async {
        let upstream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        let rewriter = inner.pulsar_compat.then(FrameRewriter::default);
        tokio::try_join!(
            pump(
                client_read,
                upstream_write,
                &inner,
                Direction::ToUpstream,
                None
            ),
            pump(
                upstream_read,
                client_write,
                &inner,
                Direction::ToClient,
                rewriter
            ),
        )
        .map(|_| ())
    };
    tokio::select! {
        _ = forward => {}
        _ = cut_rx.changed() => {}
    }
    // Both sockets are dropped (closed) by now.
    inner.active.fetch_sub(1, Ordering::Relaxed);
    drop(token);
}

/// Copies one direction in bounded chunks, delaying each by the current latency and waiting
/// while the direction is held; on EOF passes the half-close on. With a rewriter, forwards
/// whole rewritten frames instead of raw chunks.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    inner: &Inner,
    direction: Direction,
    mut rewriter: Option<FrameRewriter>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut rewritten = Vec::new();
    let mut held = inner.hold_tx.subscribe();
    loop {
        // While held, stop reading too: the sender's socket buffers fill and its writes wait,
        // exactly what a silent partition does to it.
        wait_released(&mut held, direction).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            if let Some(rewriter) = &rewriter {
                to.write_all(rewriter.pending()).await?;
            }
            return to.shutdown().await;
        }
        let out = match rewriter.as_mut() {
            Some(rewriter) => {
                rewritten.clear();
                rewriter.push(&buf[..n], &mut rewritten);
                if rewritten.is_empty() {
                    continue;
                }
                &rewritten[..]
            }
            None => &buf[..n],
        };
        let micros = inner.latency_micros[direction.index()].load(Ordering::Relaxed);
        if micros > 0 {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        }
        // A chunk read just before a hold is held too, not slipped through.
        wait_released(&mut held, direction).await;
        to.write_all(out).await?;
    }
}

/// Returns once `direction` is not held (at once if it is not). The sender lives as long as the
/// proxy's `Inner`, which outlives every connection, so `wait_for` cannot fail while we wait;
/// if it ever did, forwarding goes on rather than hanging the connection.
async fn wait_released(held: &mut watch::Receiver<u8>, direction: Direction) {
    let _ = held.wait_for(|h| h & direction.bit() == 0).await;
}
