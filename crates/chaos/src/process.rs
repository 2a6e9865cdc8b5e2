//! Server processes the harness started: spawning, signals, and nothing
//! else. Only processes started here are ever signalled, by their PID.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::HarnessError;

/// Which server program a cluster runs.
#[derive(Clone, Debug)]
pub enum ServerKind {
    /// raftkv (the harness's `raftkv-chaos-node` build of it).
    Raftkv {
        /// The program.
        binary: PathBuf,
    },
    /// etcd, for calibrating the harness against a known-good server.
    Etcd {
        /// The program (Debian's `etcd-server` installs /usr/bin/etcd).
        binary: PathBuf,
    },
}

impl ServerKind {
    /// The program's path.
    pub fn binary(&self) -> &Path {
        match self {
            Self::Raftkv { binary } | Self::Etcd { binary } => binary,
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Raftkv { .. } => "raftkv",
            Self::Etcd { .. } => "etcd",
        }
    }
}

/// A running server process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    paused: bool,
}

impl ServerProcess {
    /// Starts `binary` with `args` and `env`, appending its output to `log`.
    pub fn spawn(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self, HarnessError> {
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| HarnessError::io(log, e))
        };
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .spawn()
            .map_err(|e| HarnessError::io(binary, e))?;
        Ok(Self {
            child,
            paused: false,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it was stopped with SIGSTOP and not resumed.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether it has exited (and its exit status, if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let pid = i32::try_from(self.child.id())
            .map_err(|_| HarnessError::Setup(format!("pid {} out of range", self.child.id())))?;
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| HarnessError::Setup(format!("{signal} to pid {pid}: {e}")))
    }

    /// SIGKILL, then reaps it: nothing of it runs afterwards.
    pub fn kill(mut self) {
        if self.exited().is_none() {
            let _ = self.signal(Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for it to exit, then SIGKILL.
    pub fn terminate(mut self, grace: std::time::Duration) -> Option<std::process::ExitStatus> {
        if self.paused {
            let _ = self.signal(Signal::SIGCONT);
        }
        let _ = self.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A test that panics must not leave servers behind.
        if self.exited().is_none() {
            let _ = self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
