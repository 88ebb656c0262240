//! HPACK (RFC 7541) for one direction, over `loona-hpack`.
//!
//! Why this crate: `hpack` 0.3 (2015) panics on malformed input (a
//! truncated dynamic-table size update hits `.ok().unwrap()`), has no limit
//! on table size updates and accepts a size update at the end of a block;
//! `loona-hpack` is its maintained fork with those fixed (0.4.3: "do not
//! panic when decode_integer fails", `set_max_allowed_table_size`,
//! `SizeUpdateAtEnd`). `httlib-hpack` 0.1 indexes past the end of its input
//! on a truncated integer (a panic), `h2` keeps its decoder private even
//! with its `unstable` feature, and `ntex-h2` exposes h2's decoder but
//! brings a whole server framework with it. loona's cost: its decoder
//! builds a new Huffman decoder (257 hash-map inserts, about 20 µs) for
//! every Huffman-coded string, 90% of the time of a typical block, and
//! then walks each string bit by bit through hash maps. So before a block
//! reaches it, [`plain_literals`] rewrites Huffman-coded strings as plain
//! ones with the table-driven decoder of [`super::huffman`] (which accepts
//! exactly what loona's does): same fields, same table updates.
//!
//! The decoder is wrapped so that nothing in it can panic on peer input:
//! the allowed table size is fixed at construction (so its size-update
//! assertion cannot fire) and every error becomes "this block could not be
//! decoded". After a block fails, or bytes of the direction were lost, the
//! shared table state is unknown (*broken*): blocks are then decoded with a
//! table that starts empty at the loss and holds what the blocks since then
//! inserted, which yields exact fields for a block that refers only to the
//! static table, literals and entries inserted after the loss (a server's
//! `server` or `date` field, indexed by its first response after the loss
//! and referred to by the next), and fails on any reference to an entry
//! from before (see [`HeaderDecoder::decode`]). Another loss or failed
//! block empties that table again. A block that empties the table with a
//! size update to 0 makes the state known again.

use loona_hpack::{Decoder, encoder::encode_integer_into};

use super::huffman;

/// The SETTINGS_HEADER_TABLE_SIZE every connection starts with.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// HPACK state of one direction.
pub struct HeaderDecoder {
    decoder: Decoder<'static>,
    /// Largest dynamic table a size update may ask for.
    max_table: usize,
    broken: bool,
    /// While broken: the entries inserted since the last loss, newest
    /// first like the peer's (`None` until a block needs it).
    since_loss: Option<Decoder<'static>>,
}

/// The block could not be decoded (malformed, or it refers to table
/// entries whose values are unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Undecodable;

impl HeaderDecoder {
    pub fn new(max_table: usize) -> Self {
        Self {
            decoder: Self::fresh(max_table, DEFAULT_TABLE_SIZE.min(max_table)),
            max_table,
            broken: false,
            since_loss: None,
        }
    }

    fn fresh(max_table: usize, size: usize) -> Decoder<'static> {
        let mut d = Decoder::new();
        // Order matters: the allowed size first, so `set_max_table_size`
        // (which asserts `size <= allowed`) is always in bounds.
        d.set_max_allowed_table_size(max_table);
        d.set_max_table_size(size.min(max_table));
        d
    }

    /// The table state is unknown from now on (bytes were lost: entries
    /// may have been inserted unseen, so what was learnt since an earlier
    /// loss is unknown too). Returns whether it was known until now.
    pub fn break_state(&mut self) -> bool {
        let was = !self.broken;
        self.broken = true;
        self.since_loss = None;
        if was {
            // Not used again until a block makes the state known, when it
            // is replaced: free its table (one table per direction).
            self.decoder = Self::fresh(self.max_table, 0);
        }
        was
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Decodes one complete header block, calling `field` with each name
    /// and value in order. On `Err` the fields already passed are not to be
    /// trusted as a whole (the block stopped part way) and the state is
    /// broken. While broken, a block decodes with the table of the entries
    /// inserted since the loss (empty at first, as large as allowed):
    /// every entry it can find there is one the peer's encoder also has at
    /// the same index (entries are indexed newest first; the peer's table
    /// holds the same ones, then older unknown ones, and evicts those
    /// first), so what decodes is exact and what cannot fails. A block that
    /// fails leaves that table unknown too: it starts empty again. Returns
    /// whether this block made a broken state known again.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<bool, Undecodable> {
        let mut plain = Vec::new();
        let block = if plain_literals(block, &mut plain) {
            &plain[..]
        } else {
            block
        };
        if !self.broken {
            return match self.decoder.decode_with_cb(block, |n, v| field(&n, &v)) {
                Ok(()) => Ok(false),
                Err(_) => {
                    self.break_state();
                    Err(Undecodable)
                }
            };
        }
        let max = self.max_table;
        let probe = self.since_loss.get_or_insert_with(|| Self::fresh(max, max));
        if probe.decode_with_cb(block, |n, v| field(&n, &v)).is_err() {
            // Part of the block may have gone into the table.
            self.since_loss = None;
            return Err(Undecodable);
        }
        if clears_table(block)
            && let Some(probe) = self.since_loss.take()
        {
            // Everything before the update to 0 is gone on both sides: the
            // probe's table is now the peer's.
            self.decoder = probe;
            self.broken = false;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Copies `block` into `out` with every Huffman-coded string literal
/// (RFC 7541 5.2) replaced by the same string sent plain. Returns `false`
/// when there was nothing to rewrite or the block does not parse (a bad
/// integer, a string past the end, invalid Huffman code): the decoder then
/// gets the original and reports the error itself.
fn plain_literals(block: &[u8], out: &mut Vec<u8>) -> bool {
    let mut rest = block;
    let mut rewrote = false;
    // One buffer for every decoded string of the block.
    let mut decoded = Vec::new();
    out.clear();
    out.reserve(block.len() + block.len() / 2);
    while let Some(&first) = rest.first() {
        // Indexed field (1xxxxxxx, 7-bit index) and size update (001xxxxx,
        // 5-bit size) are integers only; literals (01xxxxxx with a 6-bit
        // name index, 0000xxxx and 0001xxxx with 4 bits) are followed by
        // a name string if the index is 0, then a value string.
        let (prefix, strings) = match first {
            f if f & 0x80 != 0 => (7, 0),
            f if f & 0xc0 == 0x40 => (6, 1),
            f if f & 0xe0 == 0x20 => (5, 0),
            _ => (4, 1),
        };
        let Some((index, used)) = decode_integer(rest, prefix) else {
            return false;
        };
        let (head, after) = rest.split_at(used);
        out.extend_from_slice(head);
        rest = after;
        let strings = if strings == 1 && index == 0 {
            2
        } else {
            strings
        };
        for _ in 0..strings {
            let Some(after) = plain_string(rest, out, &mut decoded, &mut rewrote) else {
                return false;
            };
            rest = after;
        }
    }
    rewrote
}

/// Copies one string literal at the start of `buf` to `out`, plain
/// (`decoded` is scratch); returns what follows it.
fn plain_string<'a>(
    buf: &'a [u8],
    out: &mut Vec<u8>,
    decoded: &mut Vec<u8>,
    rewrote: &mut bool,
) -> Option<&'a [u8]> {
    let huffman = buf.first()? & 0x80 != 0;
    let (len, used) = decode_integer(buf, 7)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    let (literal, rest) = (buf.get(..end)?, buf.get(end..)?);
    if !huffman {
        out.extend_from_slice(literal);
        return Some(rest);
    }
    decoded.clear();
    huffman::decode(literal.get(used..)?, decoded).ok()?;
    // H bit 0, then the length: writing to a Vec cannot fail.
    encode_integer_into(decoded.len(), 7, 0, out).ok()?;
    out.extend_from_slice(decoded);
    *rewrote = true;
    Some(rest)
}

/// Does the block start with dynamic-table size updates (RFC 7541 6.3),
/// one of them to size 0?
fn clears_table(block: &[u8]) -> bool {
    let mut rest = block;
    while let Some(&first) = rest.first() {
        if first & 0xe0 != 0x20 {
            return false;
        }
        let Some((size, used)) = decode_integer(rest, 5) else {
            return false;
        };
        if size == 0 {
            return true;
        }
        rest = rest.get(used..).unwrap_or_default();
    }
    false
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1), at most 5
/// bytes long like the decoder's own limit. `None` if truncated or longer.
fn decode_integer(buf: &[u8], n: u8) -> Option<(u64, usize)> {
    let mask = (1u8 << n) - 1;
    let first = buf.first()? & mask;
    if first < mask {
        return Some((u64::from(first), 1));
    }
    let mut value = u64::from(mask);
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += u64::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_examples_from_rfc7541() {
        assert_eq!(decode_integer(&[10], 5), Some((10, 1)));
        assert_eq!(decode_integer(&[31, 154, 10], 5), Some((1337, 3)));
        assert_eq!(decode_integer(&[31], 5), None);
        assert_eq!(decode_integer(&[31, 0xff, 0xff, 0xff, 0xff, 1], 5), None);
    }

    #[test]
    fn size_update_to_zero_is_recognised_among_leading_updates() {
        assert!(clears_table(&[0x20, 0x82]));
        assert!(clears_table(&[0x3f, 0xe1, 0x1f, 0x20, 0x82]));
        assert!(!clears_table(&[0x3f, 0xe1, 0x1f, 0x82]));
        assert!(!clears_table(&[0x82, 0x20]));
        assert!(!clears_table(&[0x3f]));
        assert!(!clears_table(&[]));
    }

    #[test]
    fn huffman_literals_are_rewritten_plain_with_the_same_fields() {
        // RFC 7541 C.4.1: :method GET, :scheme http, :path /, :authority
        // www.example.com (Huffman), then C.4.2's second request.
        let first = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let second = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
        ];
        let mut plain = Vec::new();
        assert!(plain_literals(&first, &mut plain));
        let mut want = vec![0x82, 0x86, 0x84, 0x41, 0x0f];
        want.extend_from_slice(b"www.example.com");
        assert_eq!(plain, want);
        let mut d = HeaderDecoder::new(4096);
        let mut fields = Vec::new();
        for block in [&first[..], &second[..]] {
            d.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))
                .unwrap();
        }
        let text: Vec<String> = fields
            .iter()
            .map(|(n, v)| {
                format!(
                    "{}: {}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        assert_eq!(text[3], ":authority: www.example.com");
        assert_eq!(text[7], ":authority: www.example.com");
        assert_eq!(text[8], "cache-control: no-cache");
        // Nothing Huffman-coded, or not parseable: the original is used.
        assert!(!plain_literals(&[0x82, 0x86], &mut plain));
        assert!(!plain_literals(&[0x41, 0x8c, 0xf1], &mut plain));
        assert!(!plain_literals(&[0x41, 0x81, 0xff], &mut plain));
    }

    /// `:status 200` (static index 8) then `server: nghttpd` with
    /// incremental indexing (static name 54), as a server's first response
    /// writes it.
    const INSERTS_SERVER: [u8; 10] = [0x88, 0x76, 0x07, b'n', b'g', b'h', b't', b't', b'p', b'd'];
    /// `:status 404` and dynamic index 62: the newest entry.
    const REFERS_TO_NEWEST: [u8; 2] = [0x8d, 0xbe];

    fn fields(d: &mut HeaderDecoder, block: &[u8]) -> Result<Vec<String>, Undecodable> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            out.push(format!(
                "{}: {}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            ));
        })?;
        Ok(out)
    }

    #[test]
    fn while_broken_entries_inserted_since_the_loss_are_known() {
        let mut d = HeaderDecoder::new(4096);
        d.break_state();
        assert_eq!(
            fields(&mut d, &INSERTS_SERVER),
            Ok(vec![":status: 200".into(), "server: nghttpd".into()])
        );
        // The next block refers to the entry the previous one inserted.
        assert_eq!(
            fields(&mut d, &REFERS_TO_NEWEST),
            Ok(vec![":status: 404".into(), "server: nghttpd".into()])
        );
        // Index 63 is from before the loss: unknown, the block fails.
        assert_eq!(fields(&mut d, &[0x8d, 0xbf]), Err(Undecodable));
        assert!(d.is_broken());
        // A failed block may have inserted part of itself: what was learnt
        // since the loss is gone as well.
        assert_eq!(fields(&mut d, &REFERS_TO_NEWEST), Err(Undecodable));
    }

    #[test]
    fn another_loss_forgets_what_was_learnt_since_the_first() {
        let mut d = HeaderDecoder::new(4096);
        d.break_state();
        assert!(fields(&mut d, &INSERTS_SERVER).is_ok());
        // Lost bytes may hold blocks that inserted entries: index 62 may
        // be one of those now.
        assert!(!d.break_state(), "was broken already");
        assert_eq!(fields(&mut d, &REFERS_TO_NEWEST), Err(Undecodable));
    }

    #[test]
    fn size_update_beyond_the_cap_fails_instead_of_growing_the_table() {
        let mut d = HeaderDecoder::new(4096);
        // Size update to 4097 (31 + 4066: 0x3f, 0xe2, 0x1f), then :method GET.
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f, 0x82], |_, _| {}),
            Err(Undecodable)
        );
        assert!(d.is_broken());
    }
}
