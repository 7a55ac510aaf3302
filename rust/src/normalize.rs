//! The audit's text normalization for ASCII rows, byte for byte what pyarrow produces.
//!
//! `audit.dedup.normalize_texts` is NFKC, then `utf8_lower`, then runs of `\p{P}` to one
//! space, then runs of RE2 `\s` to one space, then `utf8_trim_whitespace`. On ASCII text
//! NFKC is the identity, lowercasing is `A-Z` to `a-z`, and since punctuation and `\s` are
//! disjoint the two replacements together turn every maximal run of either into one space.
//! Other rows stay with pyarrow (the caller normalizes them there).

/// ASCII characters of Unicode category P (RE2 `\p{P}`): `$+<=>^`|~` are symbols (S).
const fn punct_table() -> [bool; 128] {
    let mut t = [false; 128];
    let chars = b"!\"#%&'()*,-./:;?@[\\]_{}";
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] = true;
        i += 1;
    }
    t
}

const PUNCT: [bool; 128] = punct_table();

/// The ASCII part of the whitespace `utf8_trim_whitespace` and `str.split()` use.
#[inline(always)]
pub fn is_ascii_space(b: u8) -> bool {
    (0x09..=0x0D).contains(&b) || (0x1C..=0x20).contains(&b)
}

/// Marks bytes that start or extend a run replaced by one space.
const BLANK: u8 = 0xFF;

/// Each ASCII byte's normalized form: `BLANK` for punctuation and RE2 spaces, else the
/// byte lowercased.
const fn normal_table() -> [u8; 128] {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if PUNCT[b] || matches!(c, b'\t' | b'\n' | 0x0C | b'\r' | b' ') {
            BLANK
        } else {
            c.to_ascii_lowercase()
        };
        b += 1;
    }
    t
}

const NORMAL: [u8; 128] = normal_table();

/// Normalize `text` into `out` when it is ASCII and return true; otherwise return false.
pub fn normalize_ascii(text: &[u8], out: &mut Vec<u8>) -> bool {
    if !text.is_ascii() {
        return false;
    }
    out.clear();
    out.reserve(text.len());
    let mut blank = false;
    for &b in text {
        let c = NORMAL[(b & 0x7F) as usize];
        if c == BLANK {
            blank = true;
            continue;
        }
        // A run before the first kept byte would be trimmed anyway: emit no space for it.
        if blank && !out.is_empty() {
            out.push(b' ');
        }
        blank = false;
        out.push(c);
    }
    let end = out
        .iter()
        .rposition(|&b| !is_ascii_space(b))
        .map_or(0, |i| i + 1);
    out.truncate(end);
    // Only VT and U+001C..U+001F can still lead (they are kept, yet trimmed).
    let start = out
        .iter()
        .position(|&b| !is_ascii_space(b))
        .unwrap_or(out.len());
    if start > 0 {
        out.drain(..start);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Option<String> {
        let mut out = Vec::new();
        normalize_ascii(s.as_bytes(), &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn punctuation_and_spaces_collapse_to_one_space() {
        assert_eq!(norm("  Hello,   World!! "), Some("hello world".into()));
        assert_eq!(norm("a.-b\t\n c"), Some("a b c".into()));
        assert_eq!(norm("$5 + x<y"), Some("$5 + x<y".into()));
        assert_eq!(norm("...").as_deref(), Some(""));
        assert_eq!(norm("\x0b a \x1f"), Some("a".into()));
        assert_eq!(norm("a\x0bb"), Some("a\x0bb".into()));
    }

    #[test]
    fn non_ascii_rows_are_left_to_the_caller() {
        assert_eq!(norm("café"), None);
    }
}
