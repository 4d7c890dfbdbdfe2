//! Starts child processes that die with the test binary.
//!
//! `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the kernel kill a child when its parent *thread*
//! exits, not when the process does. `cargo test` runs every test on its own thread, so a broker
//! spawned from a test's thread would be killed as soon as that test returns. Every child is
//! therefore spawned from one dedicated thread that lives until the process exits; when the
//! process exits (normally, by panic, by abort or by a signal) that thread dies with it and the
//! kernel kills every child.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender, SyncSender};

type Request = (Command, SyncSender<io::Result<Child>>);

static SPAWNER: OnceLock<io::Result<Sender<Request>>> = OnceLock::new();

/// Spawns `command` from the spawner thread, with SIGKILL as its parent-death signal.
pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec; it only calls
    // async-signal-safe functions (prctl, getppid, _exit) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let sender = match SPAWNER.get_or_init(start_thread) {
        Ok(sender) => sender,
        Err(e) => return Err(io::Error::new(e.kind(), e.to_string())),
    };
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    sender
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("the wharf-testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the wharf-testkit spawner thread did not answer"))?
}

fn start_thread() -> io::Result<Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("wharf-testkit-spawner".into())
        .spawn(move || {
            // The sender lives in a static and is never dropped, so this loop never ends and the
            // thread lives exactly as long as the process.
            while let Ok((mut command, reply)) = rx.recv() {
                let _ = reply.send(command.spawn());
            }
        })?;
    Ok(tx)
}
