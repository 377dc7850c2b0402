//! Raw reads and writes on file descriptors, and the image's argv files.
//!
//! The launch frame must be read without std's `Stdin`: it reads ahead into an 8 KiB buffer and
//! would swallow the first bytes of the program's stdin. Every read here asks for at most the
//! bytes still missing, so whatever follows the frame stays in the kernel for the program.
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{FromRawFd, RawFd};

/// Read until `buf` is full or the input ends; returns how many bytes were read.
pub fn read_full(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a live, writable buffer of exactly `rest.len()` bytes.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(filled)
}

/// Write all of `buf`. A pipe write of up to PIPE_BUF (4096) bytes happens in one write(2) and
/// is atomic, so the status trailer cannot interleave with output of left-over processes; the
/// loop only matters for EINTR and for longer writes.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live buffer of exactly `buf.len()` readable bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(_) => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// The argv in an image's argv file, one argument a line: the file named by the environment
/// variable `env` (the launcher's tests on the host), else `default`. `Ok(None)` when the file
/// is not there or is empty.
pub fn argv_file(env: &str, default: &str) -> io::Result<Option<Vec<String>>> {
    let path = std::env::var_os(env)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(default));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let argv: Vec<String> = text.lines().map(str::to_string).collect();
    Ok((!argv.is_empty()).then_some(argv))
}

/// The test's input as an anonymous file at offset 0.
pub fn input_file(input: &[u8]) -> io::Result<File> {
    // SAFETY: the name is a NUL-terminated literal; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"test-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(input)?;
    file.rewind()?;
    Ok(file)
}

/// Wait until `fd` can be read (data or its end) or `deadline` passes; `false` at the deadline.
pub fn wait_readable(fd: RawFd, deadline: std::time::Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms =
            libc::c_int::try_from(left.as_millis().saturating_add(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, ms) };
        if n > 0 {
            return Ok(true);
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        } else if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A pipe as (read end, write end).
    pub fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) succeeded, so both descriptors are open and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn read_full_stops_at_the_requested_length_and_leaves_the_rest() {
        let (r, w) = pipe();
        write_all(w.as_raw_fd(), b"0123456789").unwrap();
        let mut head = [0u8; 4];
        assert_eq!(read_full(r.as_raw_fd(), &mut head).unwrap(), 4);
        assert_eq!(&head, b"0123");
        drop(w);
        let mut rest = [0u8; 16];
        assert_eq!(read_full(r.as_raw_fd(), &mut rest).unwrap(), 6);
        assert_eq!(&rest[..6], b"456789");
    }

    #[test]
    fn read_full_reports_a_short_count_at_end_of_input() {
        let (r, w) = pipe();
        write_all(w.as_raw_fd(), b"abc").unwrap();
        drop(w);
        let mut buf = [0u8; 8];
        assert_eq!(read_full(r.as_raw_fd(), &mut buf).unwrap(), 3);
        assert_eq!(read_full(r.as_raw_fd(), &mut buf).unwrap(), 0);
    }

    #[test]
    fn read_full_of_an_empty_buffer_reads_nothing() {
        let (r, w) = pipe();
        write_all(w.as_raw_fd(), b"x").unwrap();
        assert_eq!(read_full(r.as_raw_fd(), &mut []).unwrap(), 0);
        let mut one = [0u8; 1];
        assert_eq!(read_full(r.as_raw_fd(), &mut one).unwrap(), 1);
    }

    #[test]
    fn write_all_to_a_closed_pipe_is_an_error_not_a_signal() {
        // The test harness, like the launcher, runs with SIGPIPE ignored.
        let (r, w) = pipe();
        drop(r);
        let err = write_all(w.as_raw_fd(), b"lost").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
