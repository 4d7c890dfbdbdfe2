//! The controls every owned broker type shares.

/// Implements the shared controls of an owned broker type whose `instance` field is a
/// `crate::process::Instance`.
macro_rules! owned_broker_controls {
    ($ty:ident) => {
        impl $ty {
            /// The port the broker process listens on (behind a proxy: not the address clients
            /// should use).
            pub fn port(&self) -> u16 {
                self.instance.port()
            }

            /// The broker's own address, `127.0.0.1:port`, bypassing any proxy.
            pub fn direct_addr(&self) -> std::net::SocketAddr {
                self.instance.addr()
            }

            /// The process id, or `None` after [`kill`](Self::kill) or [`stop`](Self::stop).
            pub fn pid(&self) -> Option<u32> {
                self.instance.pid()
            }

            /// Whether the process is alive.
            pub fn is_running(&self) -> bool {
                self.instance.is_running()
            }

            /// Kills the process with SIGKILL (a crash: no clean shutdown) and reaps it. A no-op
            /// when it is not running.
            pub fn kill(&self) -> $crate::Result<()> {
                self.instance.kill()
            }

            /// Stops the process with SIGTERM, or SIGKILL after 10 s. A no-op when it is not
            /// running.
            pub fn stop(&self) -> $crate::Result<()> {
                self.instance.stop()
            }

            /// Stops the process if it runs, then starts it again on the same port with the
            /// same private directory, and returns once it answers (up to 30 s). Blocking: from
            /// a single-threaded async test whose client tasks must keep running meanwhile, call
            /// it through `tokio::task::spawn_blocking`.
            pub fn restart(&self) -> $crate::Result<()> {
                self.instance.restart()
            }

            /// The log file holding the process's stdout and stderr, across restarts.
            pub fn log_path(&self) -> &std::path::Path {
                self.instance.log_path()
            }

            /// The last lines of the log, for assertion messages.
            pub fn log_tail(&self) -> String {
                $crate::process::log_tail(self.instance.log_path())
            }

            /// The private directory of this broker (removed on drop).
            pub fn dir(&self) -> &std::path::Path {
                self.instance.dir()
            }

            /// The fault proxy in front of the broker, if any (see the type's docs).
            pub fn proxy(&self) -> Option<&$crate::FaultProxy> {
                self.instance.proxy()
            }

            /// The fault proxy in front of the broker, if any, as a shared handle: for a
            /// nemesis's [`Targets`](crate::nemesis::Targets), which outlive a borrow.
            pub fn proxy_handle(&self) -> Option<std::sync::Arc<$crate::FaultProxy>> {
                self.instance.proxy_handle()
            }

            /// The address clients should use: the proxy's when there is one, else the
            /// broker's own.
            fn client_addr(&self) -> std::net::SocketAddr {
                match self.instance.proxy() {
                    Some(proxy) => proxy.addr(),
                    None => self.instance.addr(),
                }
            }
        }
    };
}

pub(crate) use owned_broker_controls;
