//! How Judge0 (Ruby on Rails) writes and reads values: base64 as Ruby's `encode64` and
//! `decode64`, decimals as `BigDecimal#to_s`, times as ActiveSupport's JSON, numbers as
//! `String#to_i`, and query strings.

/// Ruby's `Base64.encode64`: standard alphabet, padded, a line break after every 60
/// characters and after the last line.
pub fn encode64(bytes: &[u8]) -> String {
    let flat = data_encoding::BASE64.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for line in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

/// Ruby's `Base64.decode64`: never fails; characters outside the alphabet are skipped, the
/// first `=` ends the input, and a last lone character is dropped.
pub fn decode64(text: &str) -> Vec<u8> {
    let mut kept: Vec<u8> = text
        .bytes()
        .take_while(|&b| b != b'=')
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    if kept.len() % 4 == 1 {
        kept.pop();
    }
    data_encoding::BASE64_NOPAD
        .decode(&kept)
        .expect("only the alphabet is kept, in a decodable length")
}

/// A duration in milliseconds as Judge0's decimal columns serialize: seconds, `0.002`,
/// `1.5`, `2.0`.
pub fn seconds(ms: u64) -> String {
    decimal(ms as f64 / 1000.0)
}

/// A number as Ruby writes a Float or a BigDecimal: `5.0`, `2.5`, `0.002`.
pub fn decimal(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        // Rust's shortest round-trip form, as Ruby's.
        format!("{value}")
    }
}

/// Unix milliseconds as ActiveSupport writes a time: `2024-04-03T05:40:51.306Z`.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Ruby's `String#to_i`: leading whitespace, an optional sign, the digits that follow; 0
/// when there are none.
pub fn ruby_to_i(text: &str) -> i64 {
    // Ruby skips ASCII whitespace only (`ISSPACE`), not Unicode's.
    let t = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (sign, digits) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    sign * digits[..end].parse::<i64>().unwrap_or(0)
}

/// The pairs of a query string, percent- and `+`-decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rubys_encode64_and_decode64() {
        assert_eq!(encode64(b""), "");
        assert_eq!(encode64(b"hi\n"), "aGkK\n");
        let long = encode64(&[b'a'; 100]);
        let lines: Vec<&str> = long.split_terminator('\n').collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), 60);
        assert_eq!(lines[1].len(), 60);
        assert!(long.ends_with("==\n"));
        assert_eq!(decode64(&long), vec![b'a'; 100]);
        assert_eq!(decode64("aGkK"), b"hi\n");
        assert_eq!(decode64("aG\nkK"), b"hi\n");
        assert_eq!(decode64("aGk"), b"hi");
        assert_eq!(decode64("aGk=garbage"), b"hi");
        assert_eq!(decode64("a!G*k"), b"hi");
        assert_eq!(decode64("aGkKx"), b"hi\n");
    }

    #[test]
    fn numbers_and_times_are_written_as_rails_writes_them() {
        assert_eq!(seconds(2), "0.002");
        assert_eq!(seconds(0), "0.0");
        assert_eq!(seconds(1500), "1.5");
        assert_eq!(seconds(2000), "2.0");
        assert_eq!(decimal(15.0), "15.0");
        assert_eq!(timestamp(1_712_122_851_306), "2024-04-03T05:40:51.306Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ruby_to_i("3x"), 3);
        assert_eq!(ruby_to_i("-2"), -2);
        assert_eq!(ruby_to_i("abc"), 0);
        assert_eq!(ruby_to_i(" \t+7"), 7);
        assert_eq!(ruby_to_i("\u{a0}7"), 0, "Ruby skips ASCII whitespace only");
        assert_eq!(
            query_pairs("fields=a%2Cb&wait=true&x+y=1%"),
            vec![
                ("fields".into(), "a,b".into()),
                ("wait".into(), "true".into()),
                ("x y".into(), "1%".into())
            ]
        );
    }
}
