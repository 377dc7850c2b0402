//! The framing that carries one run to the in-container launcher over the container's stdin.
//!
//! The supervisor writes `encode()` output to the attach stream, then the user's stdin. The
//! launcher reads exactly `PREFIX_LEN` bytes, calls `body_len()`, reads exactly that many more
//! bytes, calls `decode_body()`, and leaves the rest of stdin to the program.
//!
//! Layout: magic b"ONPYRUN1" (8 bytes), body length u32 big-endian (4 bytes), then the body:
//!   nonce: u16 len + bytes (1..=64 bytes, ASCII alphanumeric)
//!   files: u16 count (1..=MAX_FILES), each: name (u16 len + UTF-8), content (u32 len + bytes)
//!   compile argv: u16 count (0 = no compile stage), each arg u16 len + UTF-8 (no NUL)
//!   run argv: u16 count (>= 1), each arg as above
//!   only in a judged run: the tests section
//!     test wall ms: u32 (1..), each test's own wall clock, which the launcher keeps
//!     tests: u16 count (1..=MAX_TESTS), each input: u32 len + bytes
//! Trailing bytes after that are an error. Every length is checked against the bytes left
//! before anything is allocated.
//!
//! File names: 1..=64 bytes of [A-Za-z0-9._-], not starting with '.', so a name can never leave
//! the work directory, nor with '-', so a name expanded into a compile command (`{files}`) can
//! never be taken for an option. Two files may not share a name. `validate_file_name` is public so the
//! supervisor rejects bad names before starting anything.
//!
//! The encoding is canonical: a body that decodes re-encodes to the same bytes.

/// Magic that opens every launch frame.
pub const MAGIC: &[u8; 8] = b"ONPYRUN1";
/// Magic plus the u32 body length.
pub const PREFIX_LEN: usize = 12;
/// Largest body the launcher accepts.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;
pub const MAX_FILES: usize = 64;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_ARGS: usize = 256;
pub const MAX_NONCE_LEN: usize = 64;
/// Longest single argument: its length is a u16.
pub const MAX_ARG_LEN: usize = u16::MAX as usize;
/// Most tests in one judged run.
pub const MAX_TESTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// Per-run secret that authenticates the launcher's status trailer.
    pub nonce: String,
    pub files: Vec<SourceFile>,
    /// Empty when the language has no compile stage.
    pub compile: Vec<String>,
    pub run: Vec<String>,
    /// `Some` for a judged run: the program runs once per test instead of once on stdin.
    pub judge: Option<Judge>,
}

/// The tests of a judged run, as the launcher needs them: each input, and the wall clock each
/// test gets. Expected outputs stay outside (the supervisor compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judge {
    pub wall_ms: u32,
    pub inputs: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    #[error("bad magic: not a launch frame")]
    BadMagic,
    #[error("launch frame body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("launch frame truncated while reading {field}")]
    Truncated { field: &'static str },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} trailing bytes after the launch frame body")]
    TrailingBytes(usize),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> FramingError {
    FramingError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Field names used in errors for each argv.
struct ArgvFields {
    count: &'static str,
    arg_len: &'static str,
    arg: &'static str,
    min: usize,
}

const COMPILE: ArgvFields = ArgvFields {
    count: "compile argv count",
    arg_len: "compile arg length",
    arg: "compile arg",
    min: 0,
};

const RUN: ArgvFields = ArgvFields {
    count: "run argv count",
    arg_len: "run arg length",
    arg: "run arg",
    min: 1,
};

impl RunRequest {
    /// Encode the whole frame (prefix and body). Validates like `decode_body` does.
    pub fn encode(&self) -> Result<Vec<u8>, FramingError> {
        self.validate()?;
        let len = self.encoded_body_len();
        let mut out = Vec::with_capacity(PREFIX_LEN + len);
        out.extend_from_slice(MAGIC);
        // `validate` bounded every count and length, and the whole body by MAX_BODY_LEN, so the
        // casts below are exact.
        out.extend_from_slice(&(len as u32).to_be_bytes());
        put_u16_bytes(&mut out, self.nonce.as_bytes());
        out.extend_from_slice(&(self.files.len() as u16).to_be_bytes());
        for file in &self.files {
            put_u16_bytes(&mut out, file.name.as_bytes());
            out.extend_from_slice(&(file.content.len() as u32).to_be_bytes());
            out.extend_from_slice(&file.content);
        }
        for argv in [&self.compile, &self.run] {
            out.extend_from_slice(&(argv.len() as u16).to_be_bytes());
            for arg in argv {
                put_u16_bytes(&mut out, arg.as_bytes());
            }
        }
        if let Some(judge) = &self.judge {
            out.extend_from_slice(&judge.wall_ms.to_be_bytes());
            out.extend_from_slice(&(judge.inputs.len() as u16).to_be_bytes());
            for input in &judge.inputs {
                out.extend_from_slice(&(input.len() as u32).to_be_bytes());
                out.extend_from_slice(input);
            }
        }
        debug_assert_eq!(out.len(), PREFIX_LEN + len);
        Ok(out)
    }

    /// The same checks `decode_body` makes, on a request built in memory.
    pub fn validate(&self) -> Result<(), FramingError> {
        validate_nonce(&self.nonce)?;
        check_count(self.files.len(), 1, MAX_FILES, "file count")?;
        for (i, file) in self.files.iter().enumerate() {
            validate_file_name(&file.name)?;
            check_unique_name(&self.files[..i], &file.name)?;
        }
        validate_argv(&self.compile, &COMPILE)?;
        validate_argv(&self.run, &RUN)?;
        if let Some(judge) = &self.judge {
            check_judge(judge.wall_ms as usize, judge.inputs.len())?;
        }
        let len = self.encoded_body_len();
        if len > MAX_BODY_LEN {
            return Err(FramingError::TooLarge {
                len,
                limit: MAX_BODY_LEN,
            });
        }
        Ok(())
    }

    fn encoded_body_len(&self) -> usize {
        let strings = |argv: &[String]| argv.iter().map(|a| 2 + a.len()).sum::<usize>();
        2 + self.nonce.len()
            + 2
            + self
                .files
                .iter()
                .map(|f| 2 + f.name.len() + 4 + f.content.len())
                .sum::<usize>()
            + 2
            + strings(&self.compile)
            + 2
            + strings(&self.run)
            + self.judge.as_ref().map_or(0, |j| {
                4 + 2 + j.inputs.iter().map(|i| 4 + i.len()).sum::<usize>()
            })
    }
}

fn check_judge(wall_ms: usize, tests: usize) -> Result<(), FramingError> {
    check_count(wall_ms, 1, u32::MAX as usize, "test wall ms")?;
    check_count(tests, 1, MAX_TESTS, "test count")
}

fn put_u16_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn check_count(
    count: usize,
    min: usize,
    max: usize,
    field: &'static str,
) -> Result<(), FramingError> {
    if count < min || count > max {
        return Err(invalid(
            field,
            format!("{count} is outside the allowed range {min}..={max}"),
        ));
    }
    Ok(())
}

fn check_unique_name(earlier: &[SourceFile], name: &str) -> Result<(), FramingError> {
    // At most MAX_FILES files, so a linear scan is cheap.
    if earlier.iter().any(|f| f.name == name) {
        return Err(invalid("file name", format!("{name:?} appears twice")));
    }
    Ok(())
}

fn validate_argv(argv: &[String], fields: &ArgvFields) -> Result<(), FramingError> {
    check_count(argv.len(), fields.min, MAX_ARGS, fields.count)?;
    for arg in argv {
        validate_arg(arg, fields.arg)?;
    }
    Ok(())
}

fn validate_arg(arg: &str, field: &'static str) -> Result<(), FramingError> {
    if arg.len() > MAX_ARG_LEN {
        return Err(invalid(
            field,
            format!(
                "{} bytes exceeds the limit of {MAX_ARG_LEN} bytes",
                arg.len()
            ),
        ));
    }
    if arg.contains('\0') {
        return Err(invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

/// Check a nonce: 1..=64 ASCII alphanumeric bytes, so it can never contain the status marker's
/// separators.
pub fn validate_nonce(nonce: &str) -> Result<(), FramingError> {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(invalid(
            "nonce",
            format!("length {} is outside 1..={MAX_NONCE_LEN}", nonce.len()),
        ));
    }
    if !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("nonce", "must be ASCII letters and digits"));
    }
    Ok(())
}

/// Check the prefix and return the body length.
pub fn body_len(prefix: &[u8; PREFIX_LEN]) -> Result<usize, FramingError> {
    if &prefix[..MAGIC.len()] != MAGIC {
        return Err(FramingError::BadMagic);
    }
    let len = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
    if len > MAX_BODY_LEN {
        return Err(FramingError::TooLarge {
            len,
            limit: MAX_BODY_LEN,
        });
    }
    Ok(len)
}

/// Reads the body front to back; every read checks the bytes left first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FramingError> {
        if n > self.rest.len() {
            return Err(FramingError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u16(&mut self, field: &'static str) -> Result<usize, FramingError> {
        let b = self.take(2, field)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self, field: &'static str) -> Result<usize, FramingError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn utf8(&mut self, n: usize, field: &'static str) -> Result<String, FramingError> {
        let bytes = self.take(n, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| invalid(field, format!("not UTF-8: {e}")))
    }

    fn argv(&mut self, fields: &ArgvFields) -> Result<Vec<String>, FramingError> {
        let count = self.u16(fields.count)?;
        check_count(count, fields.min, MAX_ARGS, fields.count)?;
        let mut argv = Vec::with_capacity(count);
        for _ in 0..count {
            let len = self.u16(fields.arg_len)?;
            let arg = self.utf8(len, fields.arg)?;
            validate_arg(&arg, fields.arg)?;
            argv.push(arg);
        }
        Ok(argv)
    }
}

/// Decode a body (the bytes after the prefix).
pub fn decode_body(body: &[u8]) -> Result<RunRequest, FramingError> {
    if body.len() > MAX_BODY_LEN {
        return Err(FramingError::TooLarge {
            len: body.len(),
            limit: MAX_BODY_LEN,
        });
    }
    let mut r = Reader { rest: body };

    let nonce_len = r.u16("nonce length")?;
    let nonce = r.take(nonce_len, "nonce")?;
    let nonce = std::str::from_utf8(nonce)
        .map_err(|_| invalid("nonce", "must be ASCII letters and digits"))?;
    validate_nonce(nonce)?;
    let nonce = nonce.to_owned();

    let file_count = r.u16("file count")?;
    check_count(file_count, 1, MAX_FILES, "file count")?;
    let mut files: Vec<SourceFile> = Vec::with_capacity(file_count);
    for _ in 0..file_count {
        let name_len = r.u16("file name length")?;
        let name = r.utf8(name_len, "file name")?;
        validate_file_name(&name)?;
        check_unique_name(&files, &name)?;
        let content_len = r.u32("file content length")?;
        let content = r.take(content_len, "file content")?.to_vec();
        files.push(SourceFile { name, content });
    }

    let compile = r.argv(&COMPILE)?;
    let run = r.argv(&RUN)?;
    let judge = if r.rest.is_empty() {
        None
    } else {
        let wall_ms = r.u32("test wall ms")?;
        let count = r.u16("test count")?;
        check_judge(wall_ms, count)?;
        let mut inputs = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u32("test input length")?;
            inputs.push(r.take(len, "test input")?.to_vec());
        }
        Some(Judge {
            wall_ms: wall_ms as u32,
            inputs,
        })
    };
    if !r.rest.is_empty() {
        return Err(FramingError::TrailingBytes(r.rest.len()));
    }
    Ok(RunRequest {
        nonce,
        files,
        compile,
        run,
        judge,
    })
}

/// Check one file name against the rules above.
pub fn validate_file_name(name: &str) -> Result<(), FramingError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(
            "file name",
            format!(
                "{name:?} is {} bytes, allowed 1..={MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if name.starts_with('.') {
        return Err(invalid("file name", format!("{name:?} starts with '.'")));
    }
    // `{files}` puts the names on a compiler's command line: `javac ... Main.java -d x` would
    // take "-d" as an option.
    if name.starts_with('-') {
        return Err(invalid("file name", format!("{name:?} starts with '-'")));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            "file name",
            format!("{name:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> RunRequest {
        RunRequest {
            nonce: "n0nce".into(),
            files: vec![
                SourceFile {
                    name: "main.py".into(),
                    content: b"print('hi')\n".to_vec(),
                },
                SourceFile {
                    name: "data_1-x.txt".into(),
                    content: vec![0, 1, 2, 255],
                },
            ],
            compile: vec![],
            run: vec!["python3".into(), "-u".into(), "main.py".into()],
            judge: None,
        }
    }

    fn body(req: &RunRequest) -> Vec<u8> {
        req.encode().unwrap()[PREFIX_LEN..].to_vec()
    }

    fn field_of(err: FramingError) -> &'static str {
        match err {
            FramingError::Invalid { field, .. } | FramingError::Truncated { field } => field,
            other => panic!("no field in {other:?}"),
        }
    }

    #[test]
    fn encode_then_decode_gives_the_same_request() {
        let mut req = request();
        req.compile = vec!["gcc".into(), "".into(), "-o".into(), "main".into()];
        let frame = req.encode().unwrap();
        assert_eq!(&frame[..8], MAGIC);
        let len = body_len(frame[..PREFIX_LEN].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - PREFIX_LEN);
        assert_eq!(decode_body(&frame[PREFIX_LEN..]), Ok(req));
    }

    #[test]
    fn encode_matches_the_documented_layout() {
        let req = RunRequest {
            nonce: "ab".into(),
            files: vec![SourceFile {
                name: "f".into(),
                content: b"xy".to_vec(),
            }],
            compile: vec![],
            run: vec!["r".into()],
            judge: None,
        };
        let mut expected = b"ONPYRUN1\x00\x00\x00\x16".to_vec();
        expected.extend_from_slice(b"\x00\x02ab");
        expected.extend_from_slice(b"\x00\x01\x00\x01f\x00\x00\x00\x02xy");
        expected.extend_from_slice(b"\x00\x00");
        expected.extend_from_slice(b"\x00\x01\x00\x01r");
        assert_eq!(req.encode().unwrap(), expected);
    }

    #[test]
    fn body_len_rejects_bad_magic() {
        let mut prefix = *b"ONPYRUN2\x00\x00\x00\x01";
        assert_eq!(body_len(&prefix), Err(FramingError::BadMagic));
        prefix[7] = b'1';
        assert_eq!(body_len(&prefix), Ok(1));
    }

    #[test]
    fn body_len_rejects_bodies_over_the_limit() {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..8].copy_from_slice(MAGIC);
        prefix[8..].copy_from_slice(&(MAX_BODY_LEN as u32).to_be_bytes());
        assert_eq!(body_len(&prefix), Ok(MAX_BODY_LEN));
        prefix[8..].copy_from_slice(&(MAX_BODY_LEN as u32 + 1).to_be_bytes());
        assert_eq!(
            body_len(&prefix),
            Err(FramingError::TooLarge {
                len: MAX_BODY_LEN + 1,
                limit: MAX_BODY_LEN
            })
        );
        prefix[8..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            body_len(&prefix),
            Err(FramingError::TooLarge { .. })
        ));
    }

    #[test]
    fn every_truncation_of_a_body_names_a_field() {
        let full = body(&request());
        for cut in 0..full.len() {
            match decode_body(&full[..cut]) {
                Err(FramingError::Truncated { field }) => assert!(!field.is_empty()),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncation_names_the_field_being_read() {
        let full = body(&request());
        // 2 + 5 nonce, 2 file count, 2 name length, then 3 of "main.py".
        assert_eq!(
            decode_body(&full[..1]),
            Err(FramingError::Truncated {
                field: "nonce length"
            })
        );
        assert_eq!(
            decode_body(&full[..4]),
            Err(FramingError::Truncated { field: "nonce" })
        );
        assert_eq!(
            decode_body(&full[..8]),
            Err(FramingError::Truncated {
                field: "file count"
            })
        );
        assert_eq!(
            decode_body(&full[..14]),
            Err(FramingError::Truncated { field: "file name" })
        );
        assert_eq!(
            decode_body(&full[..full.len() - 1]),
            Err(FramingError::Truncated { field: "run arg" })
        );
    }

    #[test]
    fn huge_declared_lengths_fail_before_allocating() {
        // A content length of 4 GiB with nothing behind it.
        let mut b = b"\x00\x01n\x00\x01\x00\x01f".to_vec();
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_body(&b),
            Err(FramingError::Truncated {
                field: "file content"
            })
        );
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        // After the run argv, bytes are the tests section; three are too few for one.
        let mut b = body(&request());
        b.extend_from_slice(b"xyz");
        assert_eq!(
            decode_body(&b),
            Err(FramingError::Truncated {
                field: "test wall ms"
            })
        );
        let mut req = request();
        req.judge = Some(Judge {
            wall_ms: 1,
            inputs: vec![vec![]],
        });
        let mut b = body(&req);
        b.extend_from_slice(b"xyz");
        assert_eq!(decode_body(&b), Err(FramingError::TrailingBytes(3)));
    }

    #[test]
    fn empty_body_is_truncated() {
        assert_eq!(
            decode_body(&[]),
            Err(FramingError::Truncated {
                field: "nonce length"
            })
        );
    }

    #[test]
    fn nonce_must_be_short_and_alphanumeric() {
        for nonce in ["", "has space", "dash-ed", "nul\0", "é", &"a".repeat(65)] {
            let mut req = request();
            req.nonce = nonce.into();
            assert_eq!(field_of(req.encode().unwrap_err()), "nonce", "{nonce:?}");
        }
        assert!(validate_nonce(&"Z9".repeat(32)).is_ok());
    }

    #[test]
    fn decoded_nonce_is_validated() {
        let b = b"\x00\x02a \x00\x01\x00\x01f\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01r";
        assert_eq!(field_of(decode_body(b).unwrap_err()), "nonce");
        let b = b"\x00\x00\x00\x01\x00\x01f\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01r";
        assert_eq!(field_of(decode_body(b).unwrap_err()), "nonce");
    }

    #[test]
    fn file_names_that_could_escape_are_rejected() {
        for name in [
            "",
            ".",
            "..",
            ".hidden",
            "../etc",
            "a/b",
            "a\\b",
            "/abs",
            "sp ace",
            "nul\0",
            "é.py",
            "-rf",
            "-d",
            "--class-path",
            &"x".repeat(65),
        ] {
            assert_eq!(
                field_of(validate_file_name(name).unwrap_err()),
                "file name",
                "{name:?}"
            );
        }
        for name in [
            "main.py",
            "a",
            "Main.java",
            "x..y",
            "a-b_c.d",
            "_x",
            "x-",
            &"x".repeat(64),
        ] {
            assert_eq!(validate_file_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn decoded_file_names_are_validated() {
        let b = b"\x00\x01n\x00\x01\x00\x05../..\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01r";
        assert_eq!(field_of(decode_body(b).unwrap_err()), "file name");
    }

    #[test]
    fn duplicate_file_names_are_rejected() {
        let mut req = request();
        req.files[1].name = req.files[0].name.clone();
        assert_eq!(field_of(req.encode().unwrap_err()), "file name");
        let mut b = b"\x00\x01n\x00\x02".to_vec();
        b.extend_from_slice(b"\x00\x01f\x00\x00\x00\x00\x00\x01f\x00\x00\x00\x00");
        b.extend_from_slice(b"\x00\x00\x00\x01\x00\x01r");
        assert_eq!(field_of(decode_body(&b).unwrap_err()), "file name");
    }

    #[test]
    fn file_count_limits_are_enforced() {
        let mut req = request();
        req.files.clear();
        assert_eq!(field_of(req.encode().unwrap_err()), "file count");
        req.files = (0..=MAX_FILES)
            .map(|i| SourceFile {
                name: format!("f{i}"),
                content: vec![],
            })
            .collect();
        assert_eq!(field_of(req.clone().encode().unwrap_err()), "file count");
        req.files.pop();
        assert!(req.encode().is_ok());
        // A declared count over the limit is rejected before reading any file.
        let b = b"\x00\x01n\xff\xff";
        assert_eq!(field_of(decode_body(b).unwrap_err()), "file count");
    }

    #[test]
    fn argv_limits_are_enforced() {
        let mut req = request();
        req.run.clear();
        assert_eq!(field_of(req.encode().unwrap_err()), "run argv count");
        req.run = vec!["x".into(); MAX_ARGS + 1];
        assert_eq!(field_of(req.encode().unwrap_err()), "run argv count");
        req.run = vec!["x".into(); MAX_ARGS];
        req.compile = vec!["y".into(); MAX_ARGS + 1];
        assert_eq!(
            field_of(req.clone().encode().unwrap_err()),
            "compile argv count"
        );
        req.compile = vec!["a\0b".into()];
        assert_eq!(field_of(req.clone().encode().unwrap_err()), "compile arg");
        req.compile = vec!["z".repeat(MAX_ARG_LEN + 1)];
        assert_eq!(field_of(req.clone().encode().unwrap_err()), "compile arg");
        req.compile = vec!["z".repeat(MAX_ARG_LEN)];
        let frame = req.encode().unwrap();
        assert_eq!(decode_body(&frame[PREFIX_LEN..]), Ok(req));
    }

    #[test]
    fn decoded_args_must_be_utf8_without_nul() {
        let head = b"\x00\x01n\x00\x01\x00\x01f\x00\x00\x00\x00\x00\x00\x00\x01".to_vec();
        let mut b = head.clone();
        b.extend_from_slice(b"\x00\x02\xff\xfe");
        assert_eq!(field_of(decode_body(&b).unwrap_err()), "run arg");
        let mut b = head;
        b.extend_from_slice(b"\x00\x02a\0");
        assert_eq!(field_of(decode_body(&b).unwrap_err()), "run arg");
    }

    #[test]
    fn a_judged_frame_ends_with_the_tests_section() {
        let mut req = request();
        let plain = body(&req);
        req.judge = Some(Judge {
            wall_ms: 2000,
            inputs: vec![b"1 2\n".to_vec(), vec![]],
        });
        let judged = body(&req);
        let mut section = 2000u32.to_be_bytes().to_vec();
        section.extend_from_slice(b"\x00\x02\x00\x00\x00\x041 2\n\x00\x00\x00\x00");
        assert_eq!(judged, [plain, section].concat());
        assert_eq!(decode_body(&judged), Ok(req.clone()));
        req.judge.as_mut().unwrap().inputs = vec![];
        assert_eq!(field_of(req.encode().unwrap_err()), "test count");
        req.judge = Some(Judge {
            wall_ms: 0,
            inputs: vec![vec![]],
        });
        assert_eq!(field_of(req.encode().unwrap_err()), "test wall ms");
    }

    #[test]
    fn bodies_over_the_limit_are_not_encoded() {
        let mut req = request();
        req.files[0].content = vec![b'x'; MAX_BODY_LEN];
        assert!(matches!(req.encode(), Err(FramingError::TooLarge { .. })));
    }

    #[test]
    fn errors_name_field_and_limit() {
        let mut req = request();
        req.files[0].name = "../x".into();
        let msg = req.encode().unwrap_err().to_string();
        assert!(msg.contains("file name") && msg.contains("../x"), "{msg}");
        req = request();
        req.run = vec![];
        let msg = req.encode().unwrap_err().to_string();
        assert!(
            msg.contains("run argv count") && msg.contains("1..=256"),
            "{msg}"
        );
    }

    fn run_request() -> impl Strategy<Value = RunRequest> {
        let files = proptest::collection::btree_map(
            "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}",
            proptest::collection::vec(any::<u8>(), 0..300),
            1..8,
        );
        let arg = "[^\u{0}]{0,24}";
        (
            "[A-Za-z0-9]{1,64}",
            files,
            proptest::collection::vec(arg, 0..5),
            proptest::collection::vec(arg, 1..5),
            proptest::option::of((
                1..=u32::MAX,
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..5),
            )),
        )
            .prop_map(|(nonce, files, compile, run, judge)| RunRequest {
                nonce,
                files: files
                    .into_iter()
                    .map(|(name, content)| SourceFile { name, content })
                    .collect(),
                compile,
                run,
                judge: judge.map(|(wall_ms, inputs)| Judge { wall_ms, inputs }),
            })
    }

    proptest! {
        #[test]
        fn valid_requests_round_trip(req in run_request()) {
            let frame = req.encode().unwrap();
            let len = body_len(frame[..PREFIX_LEN].try_into().unwrap()).unwrap();
            prop_assert_eq!(len, frame.len() - PREFIX_LEN);
            prop_assert_eq!(decode_body(&frame[PREFIX_LEN..]).unwrap(), req);
        }

        #[test]
        fn garbage_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(req) = decode_body(&body) {
                prop_assert_eq!(&req.encode().unwrap()[PREFIX_LEN..], &body[..]);
            }
        }

        #[test]
        fn garbage_prefixes_never_panic(prefix in any::<[u8; PREFIX_LEN]>()) {
            if let Ok(len) = body_len(&prefix) {
                prop_assert!(len <= MAX_BODY_LEN);
            }
        }

        #[test]
        fn mutated_frames_fail_cleanly_or_re_encode_identically(
            req in run_request(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut body = body(&req);
            for (at, byte) in flips {
                let i = at % body.len();
                body[i] = byte;
            }
            if let Ok(decoded) = decode_body(&body) {
                prop_assert_eq!(&decoded.encode().unwrap()[PREFIX_LEN..], &body[..]);
            }
        }
    }
}
