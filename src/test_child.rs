//! Child processes for unit tests that need a process of their own: one that
//! moves into a cgroup, holds a socket, or is killed. The child is forked, not
//! exec'd, and runs a closure of the test.
//!
//! The test binary runs its tests on several threads, so after the fork the
//! child may only make async-signal-safe calls: no allocation, no locks, no
//! panics. A body therefore takes what it needs made beforehand (paths as
//! `CString`s, addresses, pipes), makes plain system calls, and tells how it
//! went by its exit code. Before the body runs, the child closes every fd it
//! inherited except stdin, stdout, stderr and those it is told to keep: it
//! would otherwise hold the fds of the tests running on other threads for as
//! long as it lives, and so keep alive, say, a BPF link that such a test has
//! just closed.

use std::os::fd::RawFd;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// A forked child, killed (`SIGKILL`) and reaped when dropped unless
/// [`Child::wait`] reaped it first.
pub(crate) struct Child {
    pid: Option<Pid>,
}

/// Closes every fd from 3 up but those in `keep` (sorted), with
/// `close_range(2)`, which neither allocates nor takes a lock.
fn close_all_but(keep: &[RawFd]) {
    let mut first: libc::c_uint = 3;
    for &fd in keep {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd >= first {
            if fd > first {
                // SAFETY: a plain system call on fds this process owns.
                unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0) };
            }
            first = fd + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
}

impl Child {
    /// Forks a child that closes its inherited fds but `keep` (see the module
    /// docs), runs `body` and exits with the code it returns. `body` must
    /// make only async-signal-safe calls.
    pub(crate) fn spawn(keep: &[RawFd], body: impl FnOnce() -> i32) -> Child {
        let mut keep = keep.to_vec();
        keep.sort_unstable();
        // SAFETY: the child makes only async-signal-safe calls: close_range,
        // then `body` (whose caller vouches for it), then _exit, which runs no
        // destructor and no exit handler.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                close_all_but(&keep);
                let code = body();
                // SAFETY: ends the child at once, as the fork above requires.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Child { pid: Some(child) },
        }
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> Pid {
        self.pid.expect("a child not yet reaped")
    }

    /// Waits for the child to exit, and gives its exit code; panics when a
    /// signal ended it.
    pub(crate) fn wait(mut self) -> i32 {
        let pid = self.pid.take().expect("a child not yet reaped");
        match waitpid(pid, None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child {pid} did not exit: {other:?}"),
        }
    }

    /// Kills the child with `SIGKILL` and reaps it (as dropping it does).
    pub(crate) fn kill(self) {
        drop(self);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}
