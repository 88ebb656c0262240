//! HPACK's Huffman code (RFC 7541 5.2 and Appendix B), decoding only.
//!
//! loona-hpack's own decoder walks the input bit by bit and looks each
//! prefix up in a SipHash map of maps: on the replay bench that was 4% of
//! all CPU for a few bytes per header. This one reads the next 8 bits from
//! a table and decodes longer codes canonically (the code is canonical:
//! codes of one length are consecutive, in symbol order). It accepts and
//! rejects exactly what loona's does (a unit test compares the two): EOS
//! inside the string, padding over 7 bits, or padding that is not all ones
//! (the start of EOS) is an error.

/// (code, length in bits) of the octets 0..=255, then EOS (256).
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    (0x3fffffff, 30),
];

const EOS: u16 = 256;
/// The longest code (EOS and a few control octets).
const MAX_LEN: usize = 30;
/// Codes up to this length decode with one look at [`Tables::fast`].
const FAST_BITS: u32 = 8;

/// The decoding tables, built at compile time from [`CODES`].
struct Tables {
    /// By the next 8 bits: (symbol, length) of the code they start with,
    /// or length 0 when that code is longer than 8 bits.
    fast: [(u16, u8); 1 << FAST_BITS],
    /// Canonical decoding, by length: the first code of that length, how
    /// many codes have it, and where their symbols start in `symbols`.
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    start: [u16; MAX_LEN + 1],
    /// Symbols ordered by (code length, code).
    symbols: [u16; 257],
}

static TABLES: Tables = build();

const fn build() -> Tables {
    let mut t = Tables {
        fast: [(0, 0); 1 << FAST_BITS],
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        start: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut next = 0usize;
    let mut len = 1;
    while len <= MAX_LEN {
        t.start[len] = next as u16;
        let mut sym = 0;
        while sym < CODES.len() {
            let (code, bits) = CODES[sym];
            if bits as usize == len {
                if t.count[len] == 0 {
                    t.first[len] = code;
                }
                t.count[len] += 1;
                t.symbols[next] = sym as u16;
                next += 1;
                if (bits as u32) <= FAST_BITS {
                    let spread = FAST_BITS - bits as u32;
                    let mut low = 0;
                    while low < 1 << spread {
                        t.fast[((code << spread) | low) as usize] = (sym as u16, bits);
                        low += 1;
                    }
                }
            }
            sym += 1;
        }
        len += 1;
    }
    t
}

/// The string is not valid Huffman code (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// Appends the octets `code` decodes to to `out`. On `Err`, what was
/// appended is to be discarded.
pub fn decode(code: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    let t = &TABLES;
    // Unread bits, most significant first, `held` of them.
    let mut bits: u64 = 0;
    let mut held: u32 = 0;
    let mut input = code.iter();
    loop {
        while held <= 56 {
            let Some(&b) = input.next() else { break };
            bits |= u64::from(b) << (56 - held);
            held += 8;
        }
        if held == 0 {
            return Ok(());
        }
        // Past the end the window reads ones: a code that needs more bits
        // than are left is not in the string, and what is left is padding.
        let window = bits | u64::MAX.checked_shr(held).unwrap_or(0);
        let (sym, len) = match t.fast[(window >> (64 - FAST_BITS)) as usize] {
            (sym, len) if len != 0 => (sym, u32::from(len)),
            _ => long_code(t, window),
        };
        if len > held {
            break;
        }
        if sym == EOS {
            return Err(Invalid);
        }
        // Symbols other than EOS are octets.
        out.push(sym as u8);
        bits = bits.checked_shl(len).unwrap_or(0);
        held -= len;
    }
    // Padding: at most 7 bits, all ones (the most significant bits of EOS).
    let ones = (1u64 << held) - 1;
    if held > 7 || bits >> (64 - held) != ones {
        return Err(Invalid);
    }
    Ok(())
}

/// (symbol, length) of the code longer than [`FAST_BITS`] that `window`
/// starts with. The code is complete (EOS takes the last 30-bit code), so
/// every window starts with one.
fn long_code(t: &Tables, window: u64) -> (u16, u32) {
    let mut len = FAST_BITS as usize + 1;
    while len <= MAX_LEN {
        let code = (window >> (64 - len)) as u32;
        let i = code.wrapping_sub(t.first[len]);
        if i < t.count[len] {
            return (
                t.symbols[usize::from(t.start[len]) + i as usize],
                len as u32,
            );
        }
        len += 1;
    }
    (EOS, MAX_LEN as u32)
}

#[cfg(test)]
mod tests {
    use loona_hpack::huffman::HuffmanDecoder;

    use super::*;

    fn ours(code: &[u8]) -> Result<Vec<u8>, Invalid> {
        let mut out = Vec::new();
        decode(code, &mut out).map(|()| out)
    }

    /// Huffman-codes `text`, padded with `pad` (a run of ones, the start
    /// of EOS, is the valid padding).
    fn encode(text: &[u8], pad: u8) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        for &b in text {
            let (code, len) = CODES[usize::from(b)];
            bits.extend((0..len).rev().map(|i| code >> i & 1 == 1));
        }
        while !bits.len().is_multiple_of(8) {
            bits.push(pad >> (7 - bits.len() % 8) & 1 == 1);
        }
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
            .collect()
    }

    #[test]
    fn rfc7541_examples_decode() {
        // C.4.1 and C.6.1.
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(ours(&www).as_deref(), Ok(&b"www.example.com"[..]));
        let date = [
            0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b,
            0x81, 0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff,
        ];
        assert_eq!(
            ours(&date).as_deref(),
            Ok(&b"Mon, 21 Oct 2013 20:13:21 GMT"[..])
        );
        assert_eq!(ours(&[]), Ok(Vec::new()));
    }

    #[test]
    fn every_octet_round_trips_and_bad_padding_or_eos_fails() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(ours(&encode(&all, 0xff)), Ok(all.clone()));
        for b in 0..=255u8 {
            assert_eq!(ours(&encode(&[b, b'a', b], 0xff)), Ok(vec![b, b'a', b]));
        }
        // "a" is 5 bits (00011): three bits of padding, which must be ones.
        assert_eq!(ours(&[0b0001_1111]), Ok(b"a".to_vec()));
        assert_eq!(ours(&[0b0001_1101]), Err(Invalid));
        // A whole byte of ones is padding over 7 bits.
        assert_eq!(ours(&[0b0001_1111, 0xff]), Err(Invalid));
        // EOS (30 ones) inside the string.
        assert_eq!(ours(&[0xff, 0xff, 0xff, 0xfc, 0x1f]), Err(Invalid));
    }

    /// Same answer as loona-hpack's decoder, the one it replaces, on
    /// valid strings and on arbitrary bytes (mostly invalid).
    #[test]
    fn agrees_with_loona_on_valid_and_random_input() {
        let mut loona = HuffmanDecoder::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let input = if round % 2 == 0 {
                // Mostly printable text, as in headers, some padding wrong.
                let text: Vec<u8> = bytes.iter().map(|b| b % 96 + 32).collect();
                let pad = if round % 10 == 0 { next() as u8 } else { 0xff };
                encode(&text, pad)
            } else {
                bytes
            };
            assert_eq!(
                ours(&input).ok(),
                loona.decode(&input).ok(),
                "input {input:02x?}"
            );
        }
    }
}
