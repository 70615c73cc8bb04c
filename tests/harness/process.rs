//! Child-process plumbing: kill-on-drop guards, signals and bounded runs of short-lived commands.
//!
//! The standard library can only send SIGKILL, so SIGTERM goes through the `kill(1)` command
//! (procps/coreutils, present everywhere these tests run) instead of a libc dependency.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Owns a child process and kills (SIGKILL) and reaps it when dropped, so no test leaves a
/// daemon behind, even when it panics.
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Takes ownership of a freshly spawned child.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// `Some(status)` if the child has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("try_wait on a child")
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends SIGKILL (if still running) and reaps the child.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        // An error here means it exited in the meantime; wait() below still reaps it.
        let _ = self.0.kill();
        self.0.wait().expect("wait after SIGKILL")
    }

    /// Sends `signal` (a name such as `TERM` or `INT`) if the child is still running.
    ///
    /// Safe against pid reuse: an unreaped child keeps its pid, and we only signal after
    /// `try_wait` said it has not been reaped.
    pub fn signal(&mut self, signal: &str) {
        if !self.is_running() {
            return;
        }
        let status = Command::new("kill")
            .args(["-s", signal, &self.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run kill(1)");
        // kill(1) fails only if the process vanished between try_wait and now; then the wait
        // that follows sees its exit status, which is fine.
        let _ = status;
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to `timeout`; returns `Err` (after a SIGKILL) if it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        self.signal("TERM");
        match self.wait_timeout(timeout) {
            Some(status) => Ok(status),
            None => {
                let status = self.kill9();
                Err(format!(
                    "pid {} ignored SIGTERM for {timeout:?}; SIGKILLed ({status})",
                    self.id()
                ))
            }
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `cmd` to completion with `input` on stdin (or /dev/null) and captures stdout and
/// stderr. Panics, after killing the process, if it runs longer than `timeout`.
///
/// Pipes are drained by helper threads, so large outputs (a 64 MiB `dog vdi read`) and large
/// inputs cannot deadlock.
pub fn run_with_timeout(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let desc = describe_command(&cmd);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    let mut child = KillOnDrop::new(child);
    let stdin = child.0.stdin.take();
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    thread::scope(|s| {
        let writer = s.spawn(move || {
            if let (Some(mut pipe), Some(data)) = (stdin, input) {
                // EPIPE just means the child stopped reading; its exit status tells the story.
                let _ = pipe.write_all(data);
            }
        });
        let out_reader = s.spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err_reader = s.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let status = child.wait_timeout(timeout);
        if status.is_none() {
            child.kill9();
        }
        let _ = writer.join();
        let out = out_reader.join().expect("stdout reader");
        let err = err_reader.join().expect("stderr reader");
        match status {
            Some(status) => Output {
                status,
                stdout: out,
                stderr: err,
            },
            None => panic!(
                "timed out after {timeout:?}: {desc}\nstdout: {}\nstderr: {}",
                lossy_prefix(&out, 2000),
                lossy_prefix(&err, 4000)
            ),
        }
    })
}

/// A short, readable rendering of a command line for failure messages.
pub fn describe_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            s.push_str(&format!("{arg:?}"));
        } else if arg.len() > 80 {
            let head: String = arg.chars().take(40).collect();
            s.push_str(&format!("{head}...({} bytes)", arg.len()));
        } else {
            s.push_str(&arg);
        }
    }
    s
}

/// At most `max` bytes of `bytes` as lossy UTF-8, with a note when truncated.
pub fn lossy_prefix(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!(
            "{}... ({} bytes in total)",
            String::from_utf8_lossy(&bytes[..max]),
            bytes.len()
        )
    }
}
