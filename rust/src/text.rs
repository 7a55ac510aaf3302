//! Zero-copy views of Arrow string/binary arrays and UTF-8 helpers.

use std::borrow::Cow;

use crate::unicode::is_space;

/// Arrow offsets: int32 for `string`/`binary`, int64 for the `large_` types.
#[derive(Clone, Copy)]
pub enum Offsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
}

/// A read-only view of one Arrow string or binary array (already sliced to its rows).
#[derive(Clone, Copy)]
pub struct TextColumn<'a> {
    offsets: Offsets<'a>,
    data: &'a [u8],
    validity: Option<&'a [u8]>,
    bit_offset: usize,
    len: usize,
}

impl<'a> TextColumn<'a> {
    /// Checks the offsets against the data so row access cannot go out of bounds.
    pub fn new(
        offsets: Offsets<'a>,
        data: &'a [u8],
        validity: Option<&'a [u8]>,
        bit_offset: usize,
        len: usize,
    ) -> Result<Self, String> {
        let n_off = match offsets {
            Offsets::Small(o) => o.len(),
            Offsets::Large(o) => o.len(),
        };
        if len > 0 && n_off < len + 1 {
            return Err(format!(
                "offsets hold {n_off} entries, {} rows need {}",
                len,
                len + 1
            ));
        }
        let at = |i: usize| -> i64 {
            match offsets {
                Offsets::Small(o) => o[i] as i64,
                Offsets::Large(o) => o[i],
            }
        };
        for i in 0..len {
            let (s, e) = (at(i), at(i + 1));
            if s < 0 || e < s || e as usize > data.len() {
                return Err(format!(
                    "row {i} spans bytes {s}..{e} outside the {}-byte data",
                    data.len()
                ));
            }
        }
        if let Some(v) = validity {
            if v.len() * 8 < bit_offset + len {
                return Err("validity bitmap is shorter than the array".to_string());
            }
        }
        Ok(TextColumn {
            offsets,
            data,
            validity,
            bit_offset,
            len,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of row `i`; a null row reads as empty.
    #[inline]
    pub fn bytes(&self, i: usize) -> &'a [u8] {
        if let Some(v) = self.validity {
            let bit = self.bit_offset + i;
            if v[bit >> 3] & (1 << (bit & 7)) == 0 {
                return &[];
            }
        }
        let (s, e) = match self.offsets {
            Offsets::Small(o) => (o[i] as usize, o[i + 1] as usize),
            Offsets::Large(o) => (o[i] as usize, o[i + 1] as usize),
        };
        &self.data[s..e]
    }

    /// Row `i` as text: invalid UTF-8 (possible in binary columns) becomes U+FFFD.
    #[inline]
    pub fn text(&self, i: usize) -> Cow<'a, str> {
        String::from_utf8_lossy(self.bytes(i))
    }
}

/// Owned Arrow-style buffers for building a `TextColumn` in Rust tests and benches.
pub struct OwnedColumn {
    pub offsets: Vec<i64>,
    pub data: Vec<u8>,
}

impl OwnedColumn {
    pub fn from_rows<S: AsRef<[u8]>>(rows: &[S]) -> Self {
        let mut offsets = vec![0i64];
        let mut data = Vec::new();
        for r in rows {
            data.extend_from_slice(r.as_ref());
            offsets.push(data.len() as i64);
        }
        OwnedColumn { offsets, data }
    }

    pub fn view(&self) -> TextColumn<'_> {
        TextColumn::new(
            Offsets::Large(&self.offsets),
            &self.data,
            None,
            0,
            self.offsets.len() - 1,
        )
        .expect("offsets built from rows are valid")
    }
}

/// The words of `s` split on whitespace, empty words dropped (Python's `str.split()`).
#[inline]
pub fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|w| !w.is_empty())
}

/// `s` with surrounding whitespace removed (Python's `str.strip()`).
#[inline]
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}
