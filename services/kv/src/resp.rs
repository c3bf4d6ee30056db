//! RESP2 request parsing and reply encoding.
//!
//! Requests are arrays of bulk strings (what `redis-cli` and
//! `redis-benchmark` send). Each parsed request owns its arguments (one
//! allocation per argument), so the allocator sees per-request buffers.

/// Largest bulk string accepted (as Redis: 512 MiB).
pub const MAX_BULK: usize = 512 << 20;
/// Most elements accepted in one request array.
pub const MAX_ARGS: usize = 1 << 20;
/// Longest header line (`*N` or `$N`) before the frame is refused.
pub const MAX_LINE: usize = 64;

/// The outcome of trying to parse one request from the front of a buffer.
pub enum Parse {
    /// A whole request, and the bytes it used.
    Request(Vec<Vec<u8>>, usize),
    /// More bytes are needed.
    Incomplete,
    /// The input is not valid RESP; reply with this error and close.
    Error(&'static str),
}

/// Finds `\r\n` in `buf[from..]` within `MAX_LINE` bytes; returns the index
/// of `\r`. `Err` when the line is too long or malformed.
fn line_end(buf: &[u8], from: usize) -> Result<Option<usize>, &'static str> {
    let end = buf.len().min(from + MAX_LINE);
    for i in from..end {
        if buf[i] == b'\r' {
            if i + 1 >= buf.len() {
                return Ok(None);
            }
            return if buf[i + 1] == b'\n' { Ok(Some(i)) } else { Err("Protocol error: expected CRLF") };
        }
    }
    if buf.len() >= from + MAX_LINE {
        Err("Protocol error: header line too long")
    } else {
        Ok(None)
    }
}

fn parse_len(digits: &[u8], what: &'static str) -> Result<i64, &'static str> {
    if digits.is_empty() || digits.len() > 19 {
        return Err(what);
    }
    let (neg, d) = if digits[0] == b'-' { (true, &digits[1..]) } else { (false, digits) };
    if d.is_empty() {
        return Err(what);
    }
    let mut v: i64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return Err(what);
        }
        v = v.checked_mul(10).and_then(|v| v.checked_add((c - b'0') as i64)).ok_or(what)?;
    }
    Ok(if neg { -v } else { v })
}

/// Parses one request from the front of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    match parse_inner(buf) {
        Ok(Some((args, used))) => Parse::Request(args, used),
        Ok(None) => Parse::Incomplete,
        Err(e) => Parse::Error(e),
    }
}

type Parsed = Option<(Vec<Vec<u8>>, usize)>;

fn parse_inner(buf: &[u8]) -> Result<Parsed, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    // An empty line (redis-cli --pipe sends one before its closing ECHO) is
    // an empty inline request, as in Redis.
    if buf.starts_with(b"\r\n") {
        return Ok(Some((Vec::new(), 2)));
    }
    if buf == b"\r" {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return Err("Protocol error: expected '*'");
    }
    let Some(e) = line_end(buf, 1)? else { return Ok(None) };
    let n = parse_len(&buf[1..e], "Protocol error: invalid multibulk length")?;
    if n < 0 || n as usize > MAX_ARGS {
        return Err("Protocol error: invalid multibulk length");
    }
    let n = n as usize;
    let mut pos = e + 2;
    // Check the whole frame is present before allocating anything for it,
    // so a slow or hostile client costs only its buffered bytes.
    let mut spans = Vec::new();
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err("Protocol error: expected '$'");
        }
        let Some(e) = line_end(buf, pos + 1)? else { return Ok(None) };
        let len = parse_len(&buf[pos + 1..e], "Protocol error: invalid bulk length")?;
        if len < 0 || len as usize > MAX_BULK {
            return Err("Protocol error: invalid bulk length");
        }
        let start = e + 2;
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("Protocol error: expected CRLF after bulk");
        }
        spans.push((start, end));
        pos = end + 2;
    }
    if n == 0 {
        return Ok(Some((Vec::new(), pos)));
    }
    let args = spans.into_iter().map(|(s, e)| buf[s..e].to_vec()).collect();
    Ok(Some((args, pos)))
}

/// Reply encoders, appending to an output buffer.
pub mod reply {
    pub fn ok(out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK\r\n");
    }
    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.push(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    pub fn error(out: &mut Vec<u8>, s: &str) {
        out.push(b'-');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    pub fn int(out: &mut Vec<u8>, v: i64) {
        out.push(b':');
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    pub fn bulk(out: &mut Vec<u8>, v: &[u8]) {
        out.push(b'$');
        out.extend_from_slice(v.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    pub fn nil(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }
    pub fn array(out: &mut Vec<u8>, n: usize) {
        out.push(b'*');
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}
