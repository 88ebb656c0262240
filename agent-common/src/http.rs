//! The HTTP/1.x method rule the kernel counts request starts by and
//! userspace parses requests by: a segment starts a request when it begins
//! with one of [`METHOD_TOKENS`] (method and a space). A server segment
//! starts a response head when it begins with `HTTP/1.`
//! ([`word_starts_response`]); the kernel samples both kinds of head. A
//! client segment that merely looks like a request line of a method outside
//! the table ([`word_starts_like_request`]) is sampled too, never counted:
//! userspace decides from the bytes whether a lenient server would serve it.

/// Methods that start a request, each followed by a space.
pub const METHOD_TOKENS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// The kernel tests a segment (or TLS call) for a method only when it holds
/// at least this many bytes: "GET / HTTP/1.1\r\n", the shortest HTTP/1.x
/// request line.
pub const MIN_REQUEST_LEN: u32 = 16;

/// The longest token; every token fits in one little-endian `u64`.
pub const MAX_TOKEN_LEN: usize = 8;

/// [`METHOD_TOKENS`] packed as (little-endian word, mask) pairs: the first
/// eight payload bytes `w` start with token `i` when
/// `w & METHOD_WORDS[i].1 == METHOD_WORDS[i].0`. The kernel compares this
/// way (two 32-bit loads, nine masked compares, no byte loop).
pub const METHOD_WORDS: [(u64, u64); 9] = {
    let mut out = [(0, 0); 9];
    let mut i = 0;
    while i < METHOD_TOKENS.len() {
        out[i] = pack(METHOD_TOKENS[i]);
        i += 1;
    }
    out
};

/// A token as (little-endian word, mask).
const fn pack(token: &[u8]) -> (u64, u64) {
    assert!(token.len() <= MAX_TOKEN_LEN);
    let mut v = 0u64;
    let mut i = 0;
    while i < token.len() {
        v |= (token[i] as u64) << (8 * i);
        i += 1;
    }
    let mask = if token.len() >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * token.len())) - 1
    };
    (v, mask)
}

/// Does `buf` start with a method token (method and a space)?
#[inline]
pub fn starts_with_method(buf: &[u8]) -> bool {
    // The first byte rules most misses out with one comparison per token.
    let Some(first) = buf.first() else {
        return false;
    };
    METHOD_TOKENS
        .iter()
        .any(|t| t.first() == Some(first) && buf.starts_with(t))
}

/// Could `buf`, shorter than the token it begins, still become one?
pub fn could_start_with_method(buf: &[u8]) -> bool {
    METHOD_TOKENS
        .iter()
        .any(|m| buf.len() < m.len() && m.starts_with(buf))
}

/// The kernel's form of [`starts_with_method`] on the first eight payload
/// bytes as a little-endian word (callers guarantee eight bytes are there).
#[inline(always)]
pub fn word_starts_with_method(w: u64) -> bool {
    let mut i = 0;
    while i < METHOD_WORDS.len() {
        let (v, m) = METHOD_WORDS[i];
        if w & m == v {
            return true;
        }
        i += 1;
    }
    false
}

/// The longest method [`word_starts_like_request`] sees: seven token
/// characters and the space fill the eight bytes of one word.
pub const MAX_LENIENT_METHOD: usize = 7;

/// Is `b` an RFC 9110 token character (`tchar`)? Go's net/http and python's
/// http.server take any run of them as a method.
#[inline(always)]
pub const fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'!'
            | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    )
}

/// Do the first eight payload bytes `w` (little-endian) start like a
/// request line of any method: 1..=[`MAX_LENIENT_METHOD`] token characters,
/// then a space? The kernel *samples* such client segments on HTTP/1 flows
/// so userspace can find extension and lowercase methods (`PURGE`, `get`)
/// later in a connection; it never *counts* by this test, as body segments
/// can start with a word and a space too (userspace counts only a whole
/// head, see `protocol/http_lenient.rs`).
#[inline(always)]
pub const fn word_starts_like_request(w: u64) -> bool {
    let mut i = 0;
    while i <= MAX_LENIENT_METHOD {
        let b = (w >> (8 * i)) as u8;
        if b == b' ' {
            return i > 0;
        }
        if !is_tchar(b) {
            return false;
        }
        i += 1;
    }
    false
}

/// The byte form of [`word_starts_like_request`] (for userspace and tests):
/// fewer than eight bytes never pass, as the kernel reads eight.
pub fn starts_like_request(buf: &[u8]) -> bool {
    match buf.first_chunk::<8>() {
        Some(w) => word_starts_like_request(u64::from_le_bytes(*w)),
        None => false,
    }
}

/// "HTTP/1." packed as (little-endian word, mask): a server segment whose
/// first eight bytes `w` satisfy `w & mask == word` starts a response head
/// (any HTTP/1.x version), and the kernel samples it like a request head.
pub const RESPONSE_WORD: (u64, u64) = pack(b"HTTP/1.");

/// Does `buf` start a response head ("HTTP/1.")? The byte form of
/// [`word_starts_response`].
pub fn starts_with_response(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.")
}

/// The kernel's form of [`starts_with_response`] on the first eight payload
/// bytes as a little-endian word.
#[inline(always)]
pub fn word_starts_response(w: u64) -> bool {
    w & RESPONSE_WORD.1 == RESPONSE_WORD.0
}

/// The first eight bytes of the HTTP/2 connection preface ("PRI * HT"),
/// little-endian: a client segment starting with them opens an h2c flow.
pub const H2_PREFACE_WORD: u64 = pack(b"PRI * HT").0;

/// "HTTP/1.1" and " 101" little-endian: a server segment starting with
/// both switches the connection to another protocol (h2c after an
/// `Upgrade: h2c`).
pub const SWITCHING_WORDS: (u64, u32) = (pack(b"HTTP/1.1").0, pack(b" 101").0 as u32);

/// Whether a segment's first words (little-endian; `w2` = bytes 8..12)
/// make its flow HTTP/2 from there on: the preface to the server, or a
/// `101` from it. The kernel samples every segment of such a flow.
#[inline(always)]
pub fn words_start_http2(to_server: bool, w: u64, w2: u32) -> bool {
    if to_server {
        w == H2_PREFACE_WORD
    } else {
        w == SWITCHING_WORDS.0 && w2 == SWITCHING_WORDS.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        for (slot, b) in w.iter_mut().zip(bytes) {
            *slot = *b;
        }
        u64::from_le_bytes(w)
    }

    /// The kernel's packed compare and the byte compare agree.
    #[test]
    fn packed_words_agree_with_the_tokens() {
        let samples: [&[u8]; 12] = [
            b"GET /x HTTP/1.1",
            b"POST /x HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"CONNECT h:443 HTTP/1.1",
            b"TRACE / HTTP/1.1",
            b"GETX / HTTP/1.1x",
            b"get / HTTP/1.1xx",
            b"PRI * HTTP/2.0\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01",
            b"OPTIONS/ HTTP/1.1",
            b"PATCH/x HTTP/1.1",
            b"DELETE /x HTTP/1",
        ];
        for s in samples {
            assert_eq!(word_starts_with_method(word(s)), starts_with_method(s));
        }
        for t in METHOD_TOKENS {
            assert!(word_starts_with_method(word(t)));
            assert!(starts_with_method(t));
            assert!(!starts_with_method(&t[..t.len() - 1]));
            assert!(could_start_with_method(&t[..t.len() - 1]));
        }
        assert!(!could_start_with_method(b"X"));
    }

    #[test]
    fn request_like_words_sample_any_token_method() {
        for s in [
            &b"PURGE /x HTTP/1.1"[..],
            b"get / HTTP/1.1\r\n",
            b"X_SYNC / HTTP/1.1",
            b"GET / HTTP/1.1\r\n",
            b"M-POST * HTTP/1.1",
            b"ABCDEFG /",
            b"a bcdefgh",
        ] {
            assert!(word_starts_like_request(word(s)), "{s:?}");
            assert!(starts_like_request(s), "{s:?}");
        }
        for s in [
            // Eight token characters leave no room for the space.
            &b"ABCDEFGH /x HTTP/1.1"[..],
            b"M-SEARCH * HTTP/1.1",
            b" GET / HTTP/1.1",
            b"G(T / HTTP/1.1",
            b"{\"a\": 1}\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01",
            b"\x17\x03\x03\x00\x20abcdefgh",
            b"GET\t/ HTTP/1.1",
            b"PRI\x00 * H",
            b"\0\0\0\0\0\0\0\0",
        ] {
            assert!(!word_starts_like_request(word(s)), "{s:?}");
            assert!(!starts_like_request(s), "{s:?}");
        }
        // Every token of the table is request-like, so the sampling test
        // is a superset of the counting one; short buffers never pass.
        for t in METHOD_TOKENS {
            assert!(word_starts_like_request(word(t)));
        }
        assert!(!starts_like_request(b"GET /"));
        // The byte test is RFC 9110's tchar.
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b}");
        }
    }

    #[test]
    fn response_heads_are_recognised_by_words() {
        let samples: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 401 Unauthorized",
            b"HTTP/1.1 429 Too Many Requests",
            b"HTTP/2.0 200 OK\r\n",
            b"http/1.1 200 OK\r\n",
            b"GET / HTTP/1.1\r\n",
            b"\x17\x03\x03\x00\x20abcdefgh",
        ];
        for s in samples {
            assert_eq!(word_starts_response(word(s)), starts_with_response(s));
        }
        assert!(word_starts_response(word(b"HTTP/1.1 200")));
        assert!(!word_starts_response(word(b"HTTP/2.0 200")));
        // A request never passes for a response, nor the reverse.
        for t in METHOD_TOKENS {
            assert!(!word_starts_response(word(t)));
        }
        assert!(!word_starts_with_method(word(b"HTTP/1.1 200 OK")));
    }

    #[test]
    fn http2_starts_are_recognised_by_words() {
        let w2 = |s: &[u8]| u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert!(words_start_http2(true, word(preface), w2(preface)));
        let switching = b"HTTP/1.1 101 Switching Protocols\r\n";
        assert!(words_start_http2(false, word(switching), w2(switching)));
        let ok = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(!words_start_http2(false, word(ok), w2(ok)));
        let get = b"GET / HTTP/1.1\r\n\r\n";
        assert!(!words_start_http2(true, word(get), w2(get)));
        // Only the direction each belongs to.
        assert!(!words_start_http2(false, word(preface), w2(preface)));
        assert!(!words_start_http2(true, word(switching), w2(switching)));
    }
}
