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

/// RE2's `\s` (tab, LF, FF, CR, space; not VT).
#[inline(always)]
fn is_re2_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}

/// The ASCII part of the whitespace `utf8_trim_whitespace` and `str.split()` use.
#[inline(always)]
pub fn is_ascii_space(b: u8) -> bool {
    (0x09..=0x0D).contains(&b) || (0x1C..=0x20).contains(&b)
}

/// Normalize `text` into `out` when it is ASCII and return true; otherwise return false.
pub fn normalize_ascii(text: &[u8], out: &mut Vec<u8>) -> bool {
    if !text.is_ascii() {
        return false;
    }
    out.clear();
    let mut blank = false;
    for &b in text {
        if PUNCT[b as usize] || is_re2_space(b) {
            blank = true;
            continue;
        }
        if blank {
            out.push(b' ');
            blank = false;
        }
        out.push(b.to_ascii_lowercase());
    }
    let end = out
        .iter()
        .rposition(|&b| !is_ascii_space(b))
        .map_or(0, |i| i + 1);
    out.truncate(end);
    let start = out
        .iter()
        .position(|&b| !is_ascii_space(b))
        .unwrap_or(out.len());
    out.drain(..start);
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
