//! Reading the launch frame from stdin, and not one byte more.
use std::os::fd::RawFd;

use onpyrunner_protocol::launch::{self, RunRequest, MAX_BODY_LEN, PREFIX_LEN};
use onpyrunner_protocol::FramingError;

use crate::error::LaunchError;
use crate::fdio;

/// Read exactly one launch frame from `fd`. Whatever follows it stays unread: it is the
/// program's stdin.
pub fn read_request(fd: RawFd) -> Result<RunRequest, LaunchError> {
    let mut prefix = [0u8; PREFIX_LEN];
    read_exactly(fd, &mut prefix, "prefix")?;
    let len = launch::body_len(&prefix).map_err(LaunchError::Frame)?;
    // body_len enforces the limit too; checked again because this is what sizes the allocation.
    if len > MAX_BODY_LEN {
        return Err(LaunchError::Frame(FramingError::TooLarge {
            len,
            limit: MAX_BODY_LEN,
        }));
    }
    let mut body = vec![0u8; len];
    read_exactly(fd, &mut body, "body")?;
    launch::decode_body(&body).map_err(LaunchError::Frame)
}

fn read_exactly(fd: RawFd, buf: &mut [u8], part: &'static str) -> Result<(), LaunchError> {
    let got = fdio::read_full(fd, buf).map_err(LaunchError::ReadStdin)?;
    if got < buf.len() {
        return Err(LaunchError::StdinEnded {
            part,
            got,
            wanted: buf.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdio::tests::pipe;
    use onpyrunner_protocol::SourceFile;
    use std::os::fd::AsRawFd;

    fn request() -> RunRequest {
        RunRequest {
            nonce: "n0nce".into(),
            files: vec![SourceFile {
                name: "main.py".into(),
                content: b"print(input())\n".to_vec(),
            }],
            compile: vec![],
            judge: None,
            run: vec!["python3".into(), "main.py".into()],
        }
    }

    #[test]
    fn frame_is_read_and_the_bytes_after_it_stay_for_the_program() {
        let (r, w) = pipe();
        let mut input = request().encode().unwrap();
        input.extend_from_slice(b"program stdin");
        fdio::write_all(w.as_raw_fd(), &input).unwrap();
        drop(w);
        assert_eq!(read_request(r.as_raw_fd()).unwrap(), request());
        let mut rest = [0u8; 64];
        let n = fdio::read_full(r.as_raw_fd(), &mut rest).unwrap();
        assert_eq!(&rest[..n], b"program stdin");
    }

    #[test]
    fn empty_stdin_is_reported_as_missing_prefix() {
        let (r, w) = pipe();
        drop(w);
        let err = read_request(r.as_raw_fd()).unwrap_err();
        assert!(
            matches!(
                err,
                LaunchError::StdinEnded {
                    part: "prefix",
                    got: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn stdin_ending_inside_the_body_is_reported_as_truncated_body() {
        let (r, w) = pipe();
        let frame = request().encode().unwrap();
        fdio::write_all(w.as_raw_fd(), &frame[..frame.len() - 1]).unwrap();
        drop(w);
        let err = read_request(r.as_raw_fd()).unwrap_err();
        assert!(
            matches!(err, LaunchError::StdinEnded { part: "body", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_magic_is_a_frame_error() {
        let (r, w) = pipe();
        fdio::write_all(w.as_raw_fd(), b"GET / HTTP/1.1\r\n").unwrap();
        drop(w);
        let err = read_request(r.as_raw_fd()).unwrap_err();
        assert!(
            matches!(err, LaunchError::Frame(FramingError::BadMagic)),
            "{err:?}"
        );
    }

    #[test]
    fn oversized_body_length_is_refused_before_reading_the_body() {
        let (r, w) = pipe();
        let mut prefix = launch::MAGIC.to_vec();
        let too_big = u32::try_from(MAX_BODY_LEN + 1).unwrap();
        prefix.extend_from_slice(&too_big.to_be_bytes());
        // The write end stays open: a launcher that tried to read the body would block here.
        fdio::write_all(w.as_raw_fd(), &prefix).unwrap();
        let err = read_request(r.as_raw_fd()).unwrap_err();
        assert!(
            matches!(err, LaunchError::Frame(FramingError::TooLarge { .. })),
            "{err:?}"
        );
    }
}
